"""The pages' query parameters, read and checked: a bad one is a 400 :class:`Refusal` naming it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from aiohttp import web

from msuite.runtime.http.errors import Refusal

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def finite(name: str, raw: str) -> float:
    """``raw``, the value of parameter ``name``, as a finite number."""
    try:
        value = float(raw)
    except ValueError:
        raise Refusal.invalid(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise Refusal.invalid(f"{name}: {raw!r} is not a finite number")
    return value


def number(request: web.Request, name: str, default: float, *, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = finite(name, raw)
    if not low <= value <= high:
        raise Refusal.invalid(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value


def integer(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refusal.invalid(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise Refusal.invalid(f"{name} must be between {low} and {high}, not {raw}")
    return value


def choice(request: web.Request, name: str, choices: Iterable[str], default: str) -> str:
    raw = request.query.get(name, default)
    allowed = tuple(choices)
    if raw not in allowed:
        raise Refusal.invalid(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
    return raw


def flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise Refusal.invalid(f"{name}: {raw!r} is not true or false")
