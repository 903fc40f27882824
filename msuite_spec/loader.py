"""Loading a manifest file: read, parse, validate, check, and locate every error.

Every problem becomes a :class:`Diagnostic` at the file, line and column of
the key or value at fault, with its dotted path; all of them are collected
and raised together in one :class:`ManifestError`.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from ._yaml import MAX_PROBLEMS, Problem, YamlDocument, YamlSyntaxError, read_yaml, resolve_plain
from .checks import Issue, check_files, check_manifest
from .diagnostics import Diagnostic, ManifestError
from .models import DEFER_CHECKS, Manifest
from .source import Path, Position, format_path, parse_path, printable

__all__ = ["MAX_MANIFEST_BYTES", "load_manifest", "loads_manifest"]

MAX_MANIFEST_BYTES = 128 * 1024
"""Largest manifest accepted, checked before parsing (128 KiB).

With the line and node caps of the YAML reader it bounds the work of validating
any file: the worst accepted file reads in about half a second on a 2-core
machine, where a 1 MiB cap allowed files that took seconds in the scanner."""

DEFAULT_MANIFEST = "msuite.yaml"

# Friendlier words for the patterns the models use.
_PATTERN_HINTS = {
    r"\.proto$": "must be a path ending in .proto",
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$": "must be 1-63 letters, digits, '.', '_' or '-', "
    "starting with a letter or digit",
    r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$": "must be a folder inside the manifest's "
    "folder whose parts are Python identifiers, e.g. gen (no '.', '..' or absolute paths)",
    r"^[a-z][a-z0-9_]{0,63}$": "must be a role name: up to 64 lowercase letters, digits or '_', "
    "starting with a letter",
    r"^https?://[^\s/?#]+(/[^\s?#]*)?$": "must be an http:// or https:// URL with a host, "
    "e.g. http://127.0.0.1:4318",
}
_PATTERN_HINTS_BY_SHAPE = (
    (":[A-Za-z_]", "must be an import path `module:Class`, e.g. notes.service:Notes"),
    (r"(\.[A-Za-z_]", "must be a full proto service name, e.g. notes.v1.Notes"),
    (r"[A-Za-z_][A-Za-z0-9_]*$", "must be a Python identifier (letters, digits, '_')"),
    (r"):\d{1,5}$", "must be host:port, e.g. 127.0.0.1:6831"),
)
_QUOTED = re.compile(r"'([^']*)'")


def load_manifest(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    allow_unset_env: bool = False,
) -> Manifest:
    """Load and validate the manifest at ``path``.

    Raises :class:`ManifestError` listing every problem, each located in the
    file. ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation.
    ``overrides`` are ``dotted.path=value`` settings laid over the file (``msuite
    up --set``), validated like it; a problem with one is located at the flag,
    ``--set:N`` for the N-th.

    ``allow_unset_env`` (``msuite validate --allow-unset-env``, for CI without secrets):
    a value needing an unset variable is not checked; everything else is. The
    manifest returned holds a placeholder there. When it cannot be built only
    because of such values, :class:`UncheckedValues` is raised, naming them.
    """
    file = os.fspath(path)
    text = _read_text(file)
    return _load_text(
        text,
        file,
        FilePath(file).resolve().parent,
        os.environ if env is None else env,
        overrides,
        allow_unset=allow_unset_env,
    )


def loads_manifest(
    text: str,
    *,
    file: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Manifest:
    """Load a manifest from a string; ``file`` names it in errors, ``base_dir``
    anchors its relative paths (default: the current folder)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MANIFEST_BYTES:
        raise ManifestError([_too_big(file, len(text.encode("utf-8", "surrogatepass")))])
    base = FilePath(base_dir).resolve() if base_dir is not None else FilePath.cwd()
    return _load_text(text, file, base, os.environ if env is None else env)


# --------------------------------------------------------------------------- reading


def _fail(file: str, message: str, line: int = 1, column: int = 1) -> ManifestError:
    return ManifestError([Diagnostic(file, line, column, "<root>", message)])


def _too_big(file: str, size: int) -> Diagnostic:
    return Diagnostic(
        file, 1, 1, "<root>", f"manifest is {size} bytes; the limit is {MAX_MANIFEST_BYTES} (128 KiB)"
    )


def _read_text(file: str) -> str:
    try:
        info = os.stat(file)
    except FileNotFoundError:
        raise _fail(file, "no such file") from None
    except OSError as exc:
        raise _fail(file, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        hint = (
            f" (did you mean {os.path.join(file, DEFAULT_MANIFEST)}?)"
            if os.path.isfile(os.path.join(file, DEFAULT_MANIFEST))
            else ""
        )
        raise _fail(file, f"is a directory, not a manifest file{hint}")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(file, "not a regular file")
    if info.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError([_too_big(file, info.st_size)])
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise _fail(file, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError([_too_big(file, len(data))])
    return _decode(data, file)


def _decode(data: bytes, file: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        column = len(before[line_start:].decode("utf-8", "replace")) + 1
        raise _fail(
            file, f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded", line, column
        ) from None


# --------------------------------------------------------------------------- validating


def _load_text(
    text: str,
    file: str,
    base_dir: FilePath,
    env: Mapping[str, str],
    overrides: Sequence[str] = (),
    *,
    allow_unset: bool = False,
) -> Manifest:
    try:
        doc = read_yaml(text, file, env, allow_unset=allow_unset)
    except YamlSyntaxError as exc:
        raise _finish([_diag(file, p) for p in exc.problems], stopped=exc.stopped) from None
    diagnostics = [_diag(file, p) for p in doc.problems]
    if overrides:
        flags, problems = _apply_overrides(doc, overrides)
        if problems:
            raise _finish(diagnostics + problems)
        doc.flags = flags

    if doc.data is None and not any(p.path == () for p in doc.problems):
        empty = Diagnostic(file, 1, 1, "<root>", "the manifest is empty; it needs at least `name:`")
        raise _finish([*diagnostics, empty])
    if not isinstance(doc.data, dict):
        pos = doc.source.locate(())
        kind = "a list" if isinstance(doc.data, list) else "a single value"
        message = f"the top level must be a mapping of keys (name:, grpc:, ...), not {kind}"
        raise _finish([*diagnostics, Diagnostic(file, pos.line, pos.column, "<root>", message)])

    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(doc.data, context={DEFER_CHECKS: True})
    except ValidationError as exc:
        diagnostics += _schema_diagnostics(exc, doc)
    # raised outside the except block, so the ValidationError (which holds the raw
    # input, secrets included) is not kept as the error's __context__
    if manifest is None and not diagnostics and doc.unset:
        raise UncheckedValues(file, sorted(set(doc.unset.values())))
    if manifest is None or diagnostics:
        raise _finish(diagnostics)

    # cross-field rules run on a schema-valid manifest only: on a partial one they
    # would report consequences of the errors above as problems of their own
    issues = [
        issue
        for issue in check_manifest(manifest) + check_files(manifest, base_dir)
        if not _needs_unset(issue.path, doc)
    ]
    if issues:
        raise _finish([_issue_diag(doc, issue) for issue in issues])
    manifest._attach(doc.source, base_dir)
    return manifest


def _finish(diagnostics: list[Diagnostic], *, stopped: bool = False) -> ManifestError:
    """One error with the problems in file order, at most MAX_PROBLEMS of them."""
    ordered = sorted(dict.fromkeys(diagnostics), key=lambda d: (d.line, d.column, d.path))
    if len(ordered) > MAX_PROBLEMS:
        ordered, stopped = ordered[:MAX_PROBLEMS], True
    if stopped and ordered:
        last = ordered[-1]
        note = f"stopped after {len(ordered)} problems"
        ordered.append(Diagnostic(last.file, last.line, last.column, "<root>", note))
    return ManifestError(ordered)


def _diag(file: str, problem: Problem) -> Diagnostic:
    p = problem.position
    return Diagnostic(file, p.line, p.column, format_path(problem.path), problem.message)


def _issue_diag(doc: YamlDocument, issue: Issue) -> Diagnostic:
    flag = _flag_of(issue.path, doc)
    if flag is not None:
        return Diagnostic("--set", flag, 1, issue.path_text, issue.message)
    pos = doc.source.locate(issue.path, prefer_key=issue.at_key)
    return Diagnostic(doc.source.file, pos.line, pos.column, issue.path_text, issue.message)


def _is_bad(path: Path, doc: YamlDocument) -> bool:
    return any(path[: len(bad)] == bad for bad in doc.bad_paths)


def _override_value(text: str) -> Any:
    """A ``--set`` value: a plain scalar, or a list written ``[a, b]`` (items without commas)."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [resolve_plain(item.strip()) for item in inner.split(",")] if inner else []
    return resolve_plain(text)


def _apply_overrides(doc: YamlDocument, overrides: Sequence[str]) -> tuple[dict[Path, int], list[Diagnostic]]:
    """Lay ``path=value`` settings over ``doc.data``: the paths set, with their flag's number."""
    flags: dict[Path, int] = {}
    problems: list[Diagnostic] = []
    if not isinstance(doc.data, dict):
        doc.data = {}
    for number, text in enumerate(overrides, 1):
        key, sep, raw = text.partition("=")
        try:
            path = parse_path(key.strip()) if sep else ()
        except ValueError:
            path = ()
        if not path or not all(isinstance(part, str) for part in path):
            problems.append(
                Diagnostic(
                    "--set", number, 1, "<root>", "write --set dotted.path=value, e.g. --set http.port=0"
                )
            )
            continue
        try:
            value = _override_value(raw.strip())
        except ValueError as exc:
            problems.append(Diagnostic("--set", number, len(key) + 2, format_path(path), str(exc)))
            continue
        current = doc.data
        for part in path[:-1]:
            if not isinstance(current.get(part), dict):
                current[part] = {}  # `p2p: true` (the defaults) becomes a mapping to set a key in
            current = current[part]
        current[path[-1]] = value
        flags[path] = number
    return flags, problems


class UncheckedValues(ManifestError):
    """``allow_unset_env``: nothing found wrong, but the manifest cannot be built without
    the values of ``variables`` (a port or URL from the environment, say)."""

    def __init__(self, file: str, variables: list[str]) -> None:
        super().__init__([])
        self.file = file
        self.variables = variables

    def __str__(self) -> str:
        return f"{self.file}: not checked: values from unset variables {', '.join(self.variables)}"


def _needs_unset(path: Path, doc: YamlDocument) -> bool:
    """Whether ``path`` is, or lies under, a value that needs an unset variable."""
    return any(path[: len(unset)] == unset for unset in doc.unset)


def _flag_of(path: Path, doc: YamlDocument) -> int | None:
    """The number of the ``--set`` flag that set ``path`` or a parent of it (None: the file did)."""
    for length in range(len(path), 0, -1):
        number = doc.flags.get(path[:length])
        if number is not None:
            return number
    return None


def _schema_diagnostics(exc: ValidationError, doc: YamlDocument) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for error in exc.errors(include_input=True, include_url=False):
        if len(out) > MAX_PROBLEMS:
            break  # enough: _finish cuts the list and says it stopped
        path, at_key, missing = _data_path(error["loc"], doc.data)
        at_key = at_key or error["type"] == "extra_forbidden"
        if _is_bad(path, doc) or _needs_unset(path, doc):
            continue
        message = _message(error, path, missing)
        flag = _flag_of(path, doc)
        if flag is not None:
            out.append(Diagnostic("--set", flag, 1, format_path(path), message))
            continue
        if missing:
            pos = doc.source.locate(path[:-1])
        elif at_key:
            pos = doc.source.key(path) or doc.source.locate(path)
        else:
            pos = doc.source.locate(path)
        out.append(Diagnostic(doc.source.file, pos.line, pos.column, format_path(path), message))
    return out


def _data_path(loc: tuple[int | str, ...], data: Any) -> tuple[Path, bool, bool]:
    """Map a pydantic ``loc`` onto the data: (path, error is on the key, key is missing).

    pydantic adds entries of its own to ``loc`` (union members, validator
    names); entries that don't exist in the data are skipped.
    """
    path: list[str | int] = []
    current = data
    at_key = False
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            path.append(part)
            current = current[part]
        elif part == "[key]":
            at_key = True
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and isinstance(part, str) and last:
            path.append(part)
            return tuple(path), False, True
    return tuple(path), at_key, False


def _message(error: Any, path: Path, missing: bool) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if missing or kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        message = f"unknown key '{printable(key[:60])}'"
        suggestion = _closest(key, _allowed_keys(path[:-1]))
        return message + (f"; did you mean '{suggestion}'?" if suggestion else "")
    if kind in ("literal_error", "enum"):
        options = _QUOTED.findall(str(ctx.get("expected", "")))
        if len(options) == 1:
            return f"must be {options[0]}"
        message = "must be one of " + ", ".join(options) if options else str(error["msg"])
        given = error.get("input")
        suggestion = _closest(given, options) if isinstance(given, str) else None
        return message + (f"; did you mean '{suggestion}'?" if suggestion else "")
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern in _PATTERN_HINTS:
            return _PATTERN_HINTS[pattern]
        for shape, hint in _PATTERN_HINTS_BY_SHAPE:
            if shape in pattern:
                return hint
        return f"must match the pattern {pattern}"
    simple = {
        "model_type": "must be a mapping of keys",
        "model_attributes_type": "must be a mapping of keys",
        "dict_type": "must be a mapping",
        "list_type": "must be a list",
        "tuple_type": "must be a list",
        "string_type": "must be text",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
    }
    if kind in simple:
        return simple[kind]
    bounds = {
        "greater_than_equal": ("ge", "at least"),
        "greater_than": ("gt", "more than"),
        "less_than_equal": ("le", "at most"),
        "less_than": ("lt", "less than"),
        "too_short": ("min_length", "at least {} item(s) long"),
        "string_too_short": ("min_length", "at least {} character(s) long"),
    }
    if kind in bounds and bounds[kind][0] in ctx:
        key, words = bounds[kind]
        return "must be " + (words.format(ctx[key]) if "{}" in words else f"{words} {ctx[key]}")
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg[:1].lower() + msg[1:] if msg[:2] != msg[:2].upper() else msg


def _closest(word: str, options: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not matches:
        lowered = {o.lower(): o for o in options}
        return lowered.get(word.lower())
    return matches[0]


def _allowed_keys(path: Path) -> list[str]:
    """Key names the models accept in the mapping at ``path``."""
    model: Any = Manifest
    for part in path:
        model = _step(model, part)
        if model is None:
            return []
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional and Annotated to the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _step(annotation: Any, part: str | int) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args and isinstance(part, int):
        return args[0]
    return None


def position_of(manifest: Manifest, path: str | Path) -> Position | None:
    """Where ``path`` stands in the file ``manifest`` was loaded from (None without a file)."""
    source = manifest.source
    return None if source is None else source.locate(path)
