"""``google.api.http`` path templates compiled to aiohttp paths, with the field each variable sets."""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf.descriptor import Descriptor

from ._values import Target, quoted, resolve

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*=]+")


def _split(path: str) -> list[str]:
    """Split at the ``/`` outside braces (``{name=a/*}`` stays one segment)."""
    segments, current, depth = [], "", 0
    for char in path:
        if char == "{":
            depth += 1
            if depth > 1:
                raise ValueError("nested braces")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced braces")
        if char == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ValueError("unbalanced braces")
    segments.append(current)
    return segments


def _pattern(segments: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append("[^/]+")
        elif segment == "**":
            parts.append(".*")
        elif _LITERAL.fullmatch(segment):
            parts.append(re.escape(segment))
        else:
            raise ValueError(f"bad segment {quoted(segment)}")
    return "/".join(parts)


def compile_template(
    template: str, message: Descriptor
) -> tuple[list[str], str, tuple[tuple[str, Target], ...]]:
    """A google.api.http template's aiohttp path pieces, its verb, and (variable, field) per ``{field}``."""
    if not template.startswith("/"):
        raise ValueError("the path must start with /")
    last = _split(template)[-1]
    verb = ""
    if ":" in last and not (last.startswith("{") and last.endswith("}")):
        verb = last[last.rindex(":") :]
        template = template[: len(template) - len(verb)]
        if not _LITERAL.fullmatch(verb[1:]):
            raise ValueError(f"bad verb {quoted(verb)}")
    out: list[str] = []
    params: list[tuple[str, Target]] = []
    seen: set[tuple[str, ...]] = set()
    for index, segment in enumerate(_split(template)[1:]):
        if segment.startswith("{") and segment.endswith("}"):
            label, _, segments = segment[1:-1].partition("=")
            if not all(_IDENT.fullmatch(part) for part in label.split(".")):
                raise ValueError(f"bad field path {quoted(label)}")
            target = resolve(message, label, path=True)
            if target.key in seen:
                raise ValueError(f"{label} is bound twice")
            seen.add(target.key)
            name = f"p{len(params)}"
            out.append(f"{{{name}:{_pattern(segments or '*')}}}")
            params.append((name, target))
        elif segment in ("*", "**"):
            out.append(f"{{_w{index}:{_pattern(segment)}}}")
        elif _LITERAL.fullmatch(segment):
            out.append(segment)
        else:
            raise ValueError(f"bad segment {quoted(segment)}")
    return out, verb, tuple(params)


def aiohttp_path(pieces: Sequence[str], verb: str, verbs: Sequence[str] = ()) -> str:
    """The aiohttp path; ``verbs``: the ``:verb`` suffixes a verbless last variable must not end with."""
    if verbs and not verb and pieces[-1].startswith("{"):
        guard = "".join(f"(?<!{re.escape(other)})" for other in verbs)
        pieces = [*pieces[:-1], pieces[-1][:-1] + guard + "}"]
    return "/" + "/".join(pieces) + verb
