"""Environment interpolation in manifest values.

Error messages name the variable but never repeat the text around it, which
may be part of a secret.

``${VAR}`` is the variable's value and an error when it is unset;
``${VAR:-default}`` uses ``default`` when ``VAR`` is unset or empty;
``${VAR:?message}`` is an error carrying ``message`` when ``VAR`` is unset or
empty. ``$${`` writes a literal ``${``. A ``$`` not followed by ``{`` is
kept as it is. Defaults are plain text (no nesting).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from msuite import MsuiteError

__all__ = ["InterpolationError", "UnsetVariable", "interpolate"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(MsuiteError, ValueError):
    """A ``${...}`` reference could not be resolved; the message names the variable."""


class UnsetVariable(InterpolationError):
    """A variable a value needs (``${NAME}``, ``${NAME:?message}``) is not set."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace every ``${...}`` in ``text`` from ``env``."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("$", i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        if text.startswith("$${", start):
            out.append("${")
            i = start + 3
            continue
        if not text.startswith("${", start):
            out.append("$")
            i = start + 1
            continue
        end = text.find("}", start + 2)
        if end < 0:
            raise InterpolationError("unclosed '${': add the closing '}' (write '$${' for a literal '${')")
        out.append(_resolve(text[start + 2 : end], env))
        i = end + 1
    return "".join(out)


def _resolve(body: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError(
            "'${' must be followed by a variable name (letters, digits, '_'), e.g. ${PORT} or ${PORT:-8080}"
        )
    name = match.group(0)
    rest = body[match.end() :]
    value = env.get(name)
    if rest == "":
        if value is None:
            raise UnsetVariable(
                f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)", name
            )
        return value
    if rest.startswith(":-"):
        return value if value else rest[2:]
    if rest.startswith(":?"):
        if value:
            return value
        message = rest[2:].strip() or "is required"
        raise UnsetVariable(f"environment variable {name}: {message}", name)
    # the text around the name is not repeated: the value may be a secret
    raise InterpolationError(
        "not a valid reference: use ${NAME}, ${NAME:-default} or ${NAME:?message} "
        "(write $${ for a literal ${)"
    )
