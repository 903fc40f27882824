"""Safe, position-keeping YAML reading for manifests.

The manifest is built straight from ruamel.yaml's parser events, never by its
constructor, so:

- every key and value gets its ``line:column`` in a :class:`SourceMap`;
- anchors and aliases are refused before anything expands (an alias bomb
  costs one event), and so are tags other than YAML's core ones;
- duplicate keys are all reported, not just the first;
- nesting deeper than :data:`MAX_DEPTH` stops the read at once, and so does
  a file of more than :data:`MAX_LINES` lines or :data:`MAX_NODES` keys and
  values, which bounds the work of the (pure-Python) scanner: any file under
  the size cap reads in a fraction of a second;
- plain scalars resolve by the YAML 1.2 core schema (``yes`` is a string);
- ``${VAR}`` references in values are interpolated from the environment.

Problems that leave the rest of the file readable are collected and the read
goes on, so one run reports them all; syntax errors end the read.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
)
from ruamel.yaml.reader import ReaderError

from msuite import MsuiteError

from .interpolate import InterpolationError, UnsetVariable, interpolate
from .source import Path, Position, SourceMap, printable

__all__ = [
    "MAX_DEPTH",
    "MAX_LINES",
    "MAX_NODES",
    "UNSET_PLACEHOLDER",
    "Problem",
    "YamlDocument",
    "YamlSyntaxError",
    "read_yaml",
]

UNSET_PLACEHOLDER = "x" * 64
"""What a value needing an unset variable reads as with ``allow_unset``: a string long enough
for any secret; checks of that value are skipped."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a manifest may have."""

MAX_LINES = 10_000
"""Most lines a manifest may have (checked before parsing)."""

MAX_NODES = 5_000
"""Most YAML nodes a manifest may have: every key, value, mapping, list and list item counts.
Five thousand is far beyond any real manifest (``config:`` holds settings, not data)."""

MAX_PROBLEMS = 100
"""Reading stops after this many problems: a file that wrong needs a look, not a list."""

_MAX_INT_DIGITS = 64

_CORE = "tag:yaml.org,2002:"
_CORE_SCALAR_TAGS = {_CORE + t for t in ("str", "null", "bool", "int", "float")}
_ANCHORS = "YAML anchors and aliases are not supported: write the value out in full"
_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^([-+]?)\.(inf|Inf|INF)$")
_NAN = re.compile(r"^\.(nan|NaN|NAN)$")


@dataclass(frozen=True)
class Problem:
    """A located problem found while reading (the read went on)."""

    path: Path
    position: Position
    message: str


class YamlSyntaxError(MsuiteError):
    """The file could not be read to the end; ``problems`` says where and why.

    ``stopped`` is set when reading gave up after :data:`MAX_PROBLEMS` problems.
    """

    def __init__(self, problems: list[Problem], *, stopped: bool = False) -> None:
        self.problems = problems
        self.stopped = stopped
        super().__init__("; ".join(p.message for p in problems))


@dataclass
class YamlDocument:
    """A parsed manifest: plain data, positions, and the problems found."""

    data: Any
    source: SourceMap
    problems: list[Problem] = field(default_factory=list)
    bad_paths: set[Path] = field(default_factory=set)
    """Paths whose value could not be read (an alias, a bad ``${...}``): later
    checks skip them instead of reporting the same spot twice."""
    flags: dict[Path, int] = field(default_factory=dict)
    unset: dict[Path, str] = field(default_factory=dict)
    """Paths whose value needs an unset variable (with ``allow_unset``), and the variable."""
    """Paths set by ``--set`` flags (laid over the file), with the flag's number."""


@dataclass
class _Frame:
    container: dict[str, Any] | list[Any]
    path: Path
    key: str | None = None
    key_pos: Position | None = None
    first_seen: dict[str, Position] = field(default_factory=dict)
    dropped: bool = False
    """The whole container is the value of a duplicate key: read, then thrown away."""
    duplicate: bool = False
    """The current key repeats an earlier one: its value is thrown away."""


def _pos(event: Any) -> Position:
    mark = event.start_mark
    return Position(mark.line + 1, mark.column + 1)


def resolve_plain(text: str) -> Any:
    """Type of a plain (unquoted) scalar under the YAML 1.2 core schema.

    Raises ValueError for integers too long to be any setting.
    """
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.match(text) or _INT8.match(text) or _INT16.match(text):
        if len(text) > _MAX_INT_DIGITS:
            raise ValueError(f"number has more than {_MAX_INT_DIGITS} digits")
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)
    if _FLOAT.match(text):
        return float(text)  # huge exponents give inf, never an error
    inf = _INF.match(text)
    if inf:
        return -math.inf if inf.group(1) == "-" else math.inf
    if _NAN.match(text):
        return math.nan
    return text


def _tagged(tag: str, text: str) -> Any:
    """Value of a scalar with an explicit core tag; raises ValueError otherwise."""
    if tag in ("!", _CORE + "str"):
        return text
    resolved = resolve_plain(text)
    if tag == _CORE + "null" and resolved is None:
        return None
    if tag == _CORE + "bool" and isinstance(resolved, bool):
        return resolved
    if tag == _CORE + "int" and isinstance(resolved, int) and not isinstance(resolved, bool):
        return resolved
    if tag == _CORE + "float" and isinstance(resolved, int | float) and not isinstance(resolved, bool):
        try:
            return float(resolved)
        except OverflowError:
            raise ValueError("number is too large for a float") from None
    raise ValueError(f"value does not match its tag {tag.replace(_CORE, '!!')}")


class _Reader:
    def __init__(self, file: str, env: Mapping[str, str], allow_unset: bool = False) -> None:
        self.source = SourceMap(file)
        self.env = env
        self.allow_unset = allow_unset
        self.unset: dict[Path, str] = {}
        self.problems: list[Problem] = []
        self.bad_paths: set[Path] = set()
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.documents = 0
        self.nodes = 0
        self.anchor_reported = False
        self.last_position = Position(1, 1)

    def problem(self, path: Path, position: Position, message: str, *, bad: bool = True) -> None:
        self.problems.append(Problem(path, position, message))
        if bad:
            self.bad_paths.add(path)
        if len(self.problems) >= MAX_PROBLEMS:
            raise YamlSyntaxError(self.problems, stopped=True)

    def anchor_problem(self, path: Path, position: Position, *, bad: bool = True) -> None:
        """Anchors and aliases are reported once per file (an alias bomb has thousands)."""
        if bad:
            self.bad_paths.add(path)
        if not self.anchor_reported:
            self.anchor_reported = True
            self.problems.append(Problem(path, position, _ANCHORS))

    # -- events

    def feed(self, event: Any) -> None:
        if event.start_mark is not None:
            self.last_position = _pos(event)
        if isinstance(event, DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlSyntaxError(
                    [Problem((), _pos(event), "a manifest is one YAML document, but another one starts here")]
                )
            return
        if isinstance(event, MappingEndEvent | SequenceEndEvent):
            self.stack.pop()
            return
        if not isinstance(event, NodeEvent):
            return  # stream start/end, document end
        top = self.stack[-1] if self.stack else None
        self.nodes += 1
        if self.nodes > MAX_NODES:
            where = top.path if top is not None else ()
            raise YamlSyntaxError(
                [
                    Problem(
                        where,
                        _pos(event),
                        f"more than {MAX_NODES} YAML nodes (keys, values, list items):"
                        " a manifest holds settings, not data",
                    )
                ]
            )
        if isinstance(top, _Frame) and isinstance(top.container, dict) and top.key is None:
            self.take_key(top, event)
            return
        self.take_value(top, event)

    def take_key(self, frame: _Frame, event: Any) -> None:
        pos = _pos(event)
        if not isinstance(event, ScalarEvent):
            kind = "an alias" if isinstance(event, AliasEvent) else "a mapping or list"
            raise YamlSyntaxError([Problem(frame.path, pos, f"a key must be plain text, not {kind}")])
        if event.anchor is not None:
            self.anchor_problem(frame.path, pos, bad=False)
        key = str(event.value)
        if event.tag is not None and event.tag not in ("!", _CORE + "str"):
            tag = event.tag.replace(_CORE, "!!")
            self.problem(frame.path + (key,), pos, f"YAML tag {tag:.60} is not supported on a key", bad=False)
        first = frame.first_seen.get(key)
        if first is not None:
            self.problem(
                frame.path + (key,),
                pos,
                f"duplicate key '{printable(key[:60])}' (first defined at line {first.line})",
                bad=False,
            )
            frame.duplicate = True
        else:
            frame.first_seen[key] = pos
            frame.duplicate = False
        frame.key = key
        frame.key_pos = pos

    def take_value(self, parent: _Frame | None, event: Any) -> None:
        pos = _pos(event)
        key_pos: Position | None = None
        discard = False
        if parent is None:
            path: Path = ()
        elif isinstance(parent.container, dict):
            assert parent.key is not None
            path = parent.path + (parent.key,)
            key_pos = parent.key_pos
            discard = parent.dropped or parent.duplicate
            parent.key = None
        else:
            path = parent.path + (len(parent.container),)
            discard = parent.dropped
        if isinstance(event, ScalarEvent) and event.value == "" and event.style is None and key_pos:
            # an empty value's event starts at the next token, maybe lines below: use the key
            pos = key_pos
        if not discard:
            self.source._record(path, key=key_pos, value=pos)

        value: Any
        if isinstance(event, AliasEvent):
            self.anchor_problem(path, pos, bad=not discard)
            value = None
        else:
            if event.anchor is not None:
                self.anchor_problem(path, pos, bad=not discard)
            if isinstance(event, ScalarEvent):
                value = self.scalar(path, pos, event, discard)
            else:
                value = self.open(path, pos, event, discard)
        if parent is None:
            self.root = value
        elif not discard:
            if isinstance(parent.container, dict):
                parent.container[path[-1]] = value  # type: ignore[index]
            else:
                parent.container.append(value)

    def open(self, path: Path, pos: Position, event: Any, discard: bool) -> Any:
        expected = "map" if isinstance(event, MappingStartEvent) else "seq"
        if event.tag is not None and event.tag not in ("!", _CORE + expected):
            tag = event.tag.replace(_CORE, "!!")
            self.problem(path, pos, f"YAML tag {tag:.60} is not supported here", bad=not discard)
        if len(self.stack) >= MAX_DEPTH:
            raise YamlSyntaxError(
                [Problem(path, pos, f"nesting deeper than {MAX_DEPTH} levels is not allowed")]
            )
        container: dict[str, Any] | list[Any] = {} if expected == "map" else []
        frame = _Frame(container, path, dropped=discard)
        self.stack.append(frame)
        return container

    def scalar(self, path: Path, pos: Position, event: Any, discard: bool) -> Any:
        text: str = event.value
        plain = event.style is None
        if "$" in text:
            try:
                text = interpolate(text, self.env)
            except UnsetVariable as exc:
                if not self.allow_unset:
                    self.problem(path, pos, str(exc), bad=not discard)
                    return None
                self.unset[path] = exc.name
                return UNSET_PLACEHOLDER
            except InterpolationError as exc:
                self.problem(path, pos, str(exc), bad=not discard)
                return None
        try:
            if event.tag is not None and event.tag != "!":
                if event.tag not in _CORE_SCALAR_TAGS:
                    tag = event.tag.replace(_CORE, "!!")
                    raise ValueError(f"YAML tag {tag:.60} is not supported")
                return _tagged(event.tag, text)
            return resolve_plain(text) if plain and event.tag is None else text
        except ValueError as exc:
            self.problem(path, pos, str(exc), bad=not discard)
            return None


def _position_of_index(text: str, index: int) -> Position:
    before = text[: max(0, min(index, len(text)))]
    return Position(before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def _syntax_problem(exc: YAMLError, text: str) -> Problem:
    if isinstance(exc, ReaderError):
        char = exc.character
        code = ord(char) if isinstance(char, str | bytes) and len(char) == 1 else char
        what = f"U+{code:04X}" if isinstance(code, int) else "a character"
        return Problem((), _position_of_index(text, exc.position), f"{what} is not allowed in YAML text")
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "YAML syntax error"
        if mark is not None:
            if "\\t" in message or "'\\t'" in message or "\t" in message:
                message = "tab character: YAML indents with spaces only"
            return Problem((), Position(mark.line + 1, mark.column + 1), f"YAML syntax error: {message}")
    return Problem((), Position(1, 1), "YAML syntax error: " + str(exc).split("\n", 1)[0])


def _parser_position(parser: YAML) -> Position | None:
    reader = getattr(parser, "_reader", None) or getattr(parser, "reader", None)
    line, column = getattr(reader, "line", None), getattr(reader, "column", None)
    if isinstance(line, int) and isinstance(column, int):
        return Position(line + 1, column + 1)
    return None


def read_yaml(text: str, file: str, env: Mapping[str, str], *, allow_unset: bool = False) -> YamlDocument:
    """Parse ``text`` (already decoded) into plain data and positions.

    Raises :class:`YamlSyntaxError` when the text cannot be read at all. With
    ``allow_unset`` a value needing an unset variable reads as :data:`UNSET_PLACEHOLDER`
    and its path is listed in ``unset`` instead of being a problem.
    """
    lines = text.count("\n", 0, len(text) - 1) + 1
    if lines > MAX_LINES:
        raise YamlSyntaxError(
            [
                Problem(
                    (),
                    Position(MAX_LINES + 1, 1),
                    f"more than {MAX_LINES} lines: a manifest holds settings, not data",
                )
            ]
        )
    reader = _Reader(file, env, allow_unset)
    parser = YAML(typ="safe", pure=True)
    try:
        for event in parser.parse(io.StringIO(text)):
            reader.feed(event)
    except YAMLError as exc:
        raise YamlSyntaxError([_syntax_problem(exc, text)]) from None
    except (ValueError, OverflowError, AssertionError, RecursionError) as exc:
        # ruamel raises these for bad escapes ("\\U00110000") and directives ("%YAML 1.3")
        where = _parser_position(parser) or reader.last_position
        message = "bad escape sequence" if isinstance(exc, ValueError | OverflowError) else "unsupported"
        raise YamlSyntaxError([Problem((), where, f"YAML syntax error: {message} near here")]) from None
    return YamlDocument(reader.root, reader.source, reader.problems, reader.bad_paths, unset=reader.unset)
