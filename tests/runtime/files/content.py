"""The test files' content, as the JS vector generator writes it: byte i is ``(i * 7 + i // 251) % 256``."""

from __future__ import annotations

from collections.abc import Iterator

_PERIOD = 251 * 256
"""The pattern repeats every 251 * 256 bytes (``i * 7`` mod 256 has period 256, ``i // 251`` steps every 251)."""


def _pattern() -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(_PERIOD))


_BLOCK = _pattern()


def content(n: int, start: int = 0) -> bytes:
    """Bytes ``start`` to ``start + n`` of the content."""
    out = bytearray()
    position = start % _PERIOD
    while len(out) < n:
        take = min(n - len(out), _PERIOD - position)
        out += _BLOCK[position : position + take]
        position = 0
    return bytes(out)


def chunks(n: int, size: int = 1 << 20) -> Iterator[bytes]:
    """The first ``n`` bytes of the content, in pieces of ``size`` bytes (the last one shorter)."""
    for start in range(0, n, size):
        yield content(min(size, n - start), start)
