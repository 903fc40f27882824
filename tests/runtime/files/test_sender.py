"""The Bitswap sender on its own (a fake stream, no network): how a message leaves, and what a
write that fails halfway does to the stream."""

from __future__ import annotations

from typing import Any

import trio

from msuite.runtime.files.bitswap import Bitswap
from msuite.runtime.files.blockstore import MemoryBlockstore
from msuite.runtime.files.cids import RAW, make_cid, multihash_of
from msuite.runtime.files.wire import decode
from msuite.runtime.p2p.compat.streams import FRAME_PAYLOAD
from msuite.runtime.p2p.framing import FrameReader

PEER = "12D3KooWMBAX9jnp1Pkzb89fRiMafXqCx7jc4yX72abBJpk1PN6s"
BLOCK = bytes(range(256)) * 4096  # 1 MiB: one message of 17 yamux frames


class Stream:
    """Records writes; the ``fail_at``-th write (1-based) raises, as a stream the peer reset."""

    def __init__(self, fail_at: int = 0) -> None:
        self.fail_at = fail_at
        self.written: list[bytes] = []
        self.reset_calls = 0
        self.close_calls = 0

    async def write(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if len(self.written) + 1 == self.fail_at:
            raise OSError("the connection went away")
        self.written.append(bytes(data))

    async def reset(self) -> None:
        self.reset_calls += 1

    async def close(self) -> None:
        self.close_calls += 1


def send_one_block(stream: Stream) -> Bitswap:
    """Queue BLOCK for PEER and run its sender on ``stream`` until the queue is empty."""
    bitswap = Bitswap(MemoryBlockstore)
    bitswap.store = MemoryBlockstore()
    cid = make_cid(RAW, BLOCK)
    bitswap.store.put(cid, BLOCK)
    peer = bitswap._peer(PEER)  # not running: the test runs the sender itself
    peer.stream, peer.protocol = stream, "/ipfs/bitswap/1.2.0"
    peer.blocks[multihash_of(cid)] = cid

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bitswap._send_loop, peer)
            while peer.blocks or (peer.stream is not None and not stream.written):
                await trio.sleep(0.01)
            await trio.sleep(0.05)
            peer.gone = True
            peer.wake.set()

    trio.run(main)
    return bitswap


def test_a_message_leaves_as_one_frame_in_yamux_sized_writes() -> None:
    stream = Stream()
    bitswap = send_one_block(stream)
    assert len(stream.written) == 17
    assert {len(w) for w in stream.written[:-1]} == {FRAME_PAYLOAD}

    async def read() -> bytes | None:
        wire = b"".join(stream.written)
        return await FrameReader(_reader(wire)).read_frame(4 << 20)

    frame = trio.run(read)
    assert frame is not None
    assert decode(frame).blocks == [(b"\x01\x55\x12\x20", BLOCK)]
    assert bitswap.stats[PEER].blocks_sent == 1
    assert (stream.reset_calls, stream.close_calls) == (0, 1)


def test_a_write_that_fails_halfway_resets_the_stream_never_closes_it() -> None:
    """A close after half a frame would let the peer read a cut message as the stream's end."""
    stream = Stream(fail_at=5)
    bitswap = send_one_block(stream)
    assert len(stream.written) == 4
    assert (stream.reset_calls, stream.close_calls) == (1, 0)
    assert bitswap.stats[PEER].blocks_sent == 0


def _reader(wire: bytes) -> Any:
    pieces = [wire]

    async def read(limit: int) -> bytes:
        if not pieces:
            return b""
        data = pieces.pop()
        if len(data) > limit:
            pieces.append(data[limit:])
            data = data[:limit]
        return data

    return read
