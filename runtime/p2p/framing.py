"""Length-prefixed messages on a byte stream: an unsigned varint length, then the bytes.

The prefix is the unsigned LEB128 varint libp2p uses everywhere (multistream,
identify, the ``msgio`` varint framing), so a peer written in any libp2p
implementation can speak msuite's protocols. A message longer than the
reader's limit is refused from its prefix alone: the reader never buffers
more than the limit, and never truncates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from msuite import MsuiteError
from msuite.runtime.varint import encode_uvarint

__all__ = ["MAX_VARINT_BYTES", "FrameError", "FrameReader", "TooLarge", "encode_frame", "encode_uvarint"]

MAX_VARINT_BYTES = 9
"""Longest length prefix accepted (lengths below 2**63)."""


class FrameError(MsuiteError):
    """The stream does not carry a well-formed frame (bad prefix, or it ended inside one)."""


class TooLarge(FrameError):
    """A frame's announced length is over the reader's limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"a message of {length} bytes is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def encode_frame(payload: bytes, limit: int | None = None) -> bytes:
    """The varint length of ``payload``, then ``payload``; :class:`TooLarge` over ``limit``."""
    if limit is not None and len(payload) > limit:
        raise TooLarge(len(payload), limit)
    return encode_uvarint(len(payload)) + payload


class FrameReader:
    """Reads frames from ``read(n)``, an async function returning up to ``n`` bytes (``b""`` at the end)."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], *, chunk: int = 65536) -> None:
        self._read = read
        self._chunk = chunk
        self._buffer = bytearray()
        self._ended = False

    async def _fill(self) -> bool:
        if self._ended:
            return False
        data = await self._read(self._chunk)
        if not data:
            self._ended = True
            return False
        self._buffer += data
        return True

    async def read_frame(self, limit: int) -> bytes | None:
        """The next frame's payload; None when the stream ended cleanly between frames."""
        length = 0
        shift = 0
        index = 0
        while True:
            if index >= len(self._buffer) and not await self._fill():
                if index == 0:
                    return None
                raise FrameError("the stream ended inside a length prefix")
            byte = self._buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if index >= MAX_VARINT_BYTES:
                raise FrameError("a length prefix longer than 9 bytes")
        if index > 1 and byte == 0:
            raise FrameError("a length prefix that is not minimal")
        if length > limit:
            raise TooLarge(length, limit)
        del self._buffer[:index]
        while len(self._buffer) < length:
            if not await self._fill():
                raise FrameError(f"the stream ended inside a {length}-byte message")
        payload = bytes(self._buffer[:length])
        del self._buffer[:length]
        return payload
