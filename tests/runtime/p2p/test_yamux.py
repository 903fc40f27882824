"""msuite's yamux adjustments (runtime/p2p/compat.py, the pipe's names in runtime/p2p/yamux.py),
on two real hosts over loopback TCP."""

from __future__ import annotations

import contextlib
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.exceptions import MuxedStreamEOF
from libp2p.stream_muxer.yamux import yamux

from msuite.runtime.p2p import compat
from msuite.runtime.p2p import yamux as msuite_yamux
from msuite.runtime.p2p.host import build_host

PROTOCOL = TProtocol("/msuite/test/window/1.0.0")
WINDOW_UPDATE = 1


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the yamux frames every secured connection in this process writes, by type.

    Counted where they leave (Noise's session, one write per frame), so the frames msuite
    writes itself (credit, one-frame writes) count too; "window_update" is a pure credit
    update, not a SYN, ACK or FIN (which travel in window-update frames too)."""
    seen: Counter[str] = Counter()
    write = SecureSession.write

    async def counting(self: SecureSession, data: bytes) -> None:
        if len(data) >= yamux.HEADER_SIZE:
            _, kind, flags, _, _ = struct.unpack(yamux.YAMUX_HEADER_FORMAT, data[: yamux.HEADER_SIZE])
            pure_update = kind == WINDOW_UPDATE and flags == 0
            seen["window_update" if pure_update else "data" if kind == 0 else "other"] += 1
        await write(self, data)

    monkeypatch.setattr(SecureSession, "write", counting)
    return seen


@asynccontextmanager
async def connected(handler: Callable[[Any], Awaitable[None]]) -> AsyncIterator[tuple[Any, Any]]:
    """Two hosts built as nodes build them; ``handler`` serves PROTOCOL on the second."""
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    client, server = build_host(create_new_key_pair()), build_host(create_new_key_pair())
    for host in (client, server):
        compat.batch_yamux_credit(host)  # what build_host does (a second call changes nothing)
    server.set_stream_handler(PROTOCOL, handler)
    async with client.run(listen), server.run(listen):
        await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
        yield client, server
        for host in (client, server):
            await host.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main)


def test_small_request_response_exchanges_carry_no_window_updates(frames: Counter[str]) -> None:
    exchanges = 500

    kinds: list[type] = []

    async def echo(stream: Any) -> None:
        kinds.append(type(stream.muxed_stream))
        while data := await stream.read(65536):
            await stream.write(data)

    async def main() -> None:
        async with connected(echo) as (client, server):
            stream = await client.new_stream(server.get_id(), [PROTOCOL])
            kinds.append(type(stream.muxed_stream))
            frames.clear()
            for i in range(exchanges):
                message = b"%05d" % i * 12
                await stream.write(message)
                assert await stream.read(65536) == message
            await stream.close()

    run(main)
    assert kinds == [compat.MsuiteStream] * 2  # credit in batches and whole writes
    assert frames["data"] >= 2 * exchanges
    # 60 KB each way is far below half the 256 KiB window: no credit needs returning
    # (py-libp2p's own rule sent one update per read: about 1,000 here)
    assert frames["window_update"] <= 4, frames


def test_a_slow_reader_still_receives_megabytes_credit_flowing_in_batches(frames: Counter[str]) -> None:
    total = 6 * 1024 * 1024
    received = bytearray()
    done = trio.Event()

    async def slow_reader(stream: Any) -> None:
        while len(received) < total:
            data = await stream.read(3000)  # small reads: the buffer fills, credit must come back
            if not data:
                break
            received.extend(data)
            if len(received) % 7 == 0:
                await trio.sleep(0)
        await stream.write(b"ok")
        done.set()

    async def main() -> None:
        async with connected(slow_reader) as (client, server):
            stream = await client.new_stream(server.get_id(), [PROTOCOL])
            frames.clear()
            payload = bytes(range(256)) * (total // 256)
            with trio.fail_after(30):
                await stream.write(payload)
                assert await stream.read(16) == b"ok"
                await done.wait()
            await stream.close()
            assert bytes(received) == payload

    run(main)
    # one update per half window at most (256 KiB window, auto-tuned upwards), never per read
    assert 1 <= frames["window_update"] <= total // (128 * 1024) + 4, frames


def test_one_frame_writes_respect_credit_and_fall_back_when_it_runs_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Streams on one connection written at once, through windows that run out."""
    chunk, pieces, streams = 20_000, 60, 3  # 1.2 MB a stream, the 256 KiB window runs out often
    received: dict[int, bytearray] = {}
    fallbacks = Counter[int]()
    own_write = yamux.YamuxStream.write

    async def counting_write(self: yamux.YamuxStream, data: bytes) -> None:
        if self.is_initiator:  # the writers' streams, not the readers' "ok"
            fallbacks[self.stream_id] += 1
        await own_write(self, data)

    monkeypatch.setattr(yamux.YamuxStream, "write", counting_write)

    async def slow_reader(stream: Any) -> None:
        mine = received.setdefault(stream.muxed_stream.stream_id, bytearray())
        while len(mine) < chunk * pieces:
            data = await stream.read(5000)
            if not data:
                break
            mine.extend(data)
            await trio.sleep(0.0005)  # slower than the writers: their credit runs out
        await stream.write(b"ok")

    def piece(index: int) -> bytes:
        return index.to_bytes(4, "big") * (chunk // 4)

    async def main() -> None:
        async with connected(slow_reader) as (client, server):
            opened = [await client.new_stream(server.get_id(), [PROTOCOL]) for _ in range(streams)]

            async def writer(stream: Any) -> None:
                for index in range(pieces):
                    await msuite_yamux.write(stream.muxed_stream, piece(index))
                assert await stream.read(16) == b"ok"
                assert stream.muxed_stream.send_window >= 0
                await stream.close()

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for stream in opened:
                        nursery.start_soon(writer, stream)

    with caplog.at_level("WARNING"):
        run(main)
    expected = b"".join(piece(index) for index in range(pieces))
    assert len(received) == streams
    assert all(bytes(data) == expected for data in received.values())
    # the receiver never saw more than the credit it granted
    assert not [r for r in caplog.records if "exceeded receive window" in r.getMessage()]
    # most pieces went out as one frame; where the window ran out, py-libp2p's write waited for credit
    assert 0 < sum(fallbacks.values()) < streams * pieces / 2, fallbacks


def test_the_pipe_reads_what_one_frame_carries() -> None:
    assert msuite_yamux.FRAME_PAYLOAD == yamux.MAX_MESSAGE_SIZE - yamux.HEADER_SIZE


def test_the_lean_read_returns_everything_in_order_then_eof_or_reset() -> None:
    from libp2p.stream_muxer.exceptions import MuxedStreamReset

    outcomes: dict[str, Any] = {}
    finished = trio.Event()

    async def reader(stream: Any) -> None:
        muxed = stream.muxed_stream
        got = bytearray()
        try:
            while True:
                got.extend(await msuite_yamux.read(muxed, 7))  # small reads: many wake-ups and leftovers
        except (MuxedStreamEOF, MuxedStreamReset) as end:
            outcomes.setdefault("ends", []).append((bytes(got), type(end).__name__))
        if len(outcomes["ends"]) == 2:
            finished.set()

    async def main() -> None:
        async with connected(reader) as (client, server):
            closing = await client.new_stream(server.get_id(), [PROTOCOL])
            for i in range(50):
                await closing.write(b"%03d," % i)
                if i % 10 == 0:
                    await trio.sleep(0.01)  # the reader waits for the next frame
            await closing.close()  # half-close: everything sent, then EOF
            resetting = await client.new_stream(server.get_id(), [PROTOCOL])
            await resetting.write(b"before the reset")
            await trio.sleep(0.1)
            await resetting.reset()
            with trio.fail_after(10):
                await finished.wait()

    run(main)
    (closed_data, closed_end), (reset_data, reset_end) = outcomes["ends"]
    assert closed_data == b"".join(b"%03d," % i for i in range(50))
    assert closed_end == "MuxedStreamEOF"
    assert reset_data == b"before the reset"
    assert reset_end == "MuxedStreamReset"


def test_credit_whose_update_never_left_is_granted_again() -> None:
    """A read cancelled while its window update waits for the write lock must not strand the sender."""
    total = 2 * 1024 * 1024
    received = [0]
    cancelled: list[bool] = []

    async def reader(stream: Any) -> None:
        muxed = stream.muxed_stream
        conn = muxed.conn
        received[0] += len(await msuite_yamux.read(muxed, 65536))
        while len(conn.stream_buffers.get(muxed.stream_id, b"")) < 65536:  # a batch is due next read
            await trio.sleep(0.01)
        release, holding = trio.Event(), trio.Event()

        async def hold_the_write_lock() -> None:
            async with conn._write_lock:
                holding.set()
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_the_write_lock)
            await holding.wait()
            with trio.move_on_after(0.2) as waited:
                await msuite_yamux.read(muxed, 65536)  # data taken; its update waits for the lock
            cancelled.append(waited.cancelled_caught)
            release.set()
        with contextlib.suppress(MuxedStreamEOF):
            while True:
                received[0] += len(await msuite_yamux.read(muxed, 65536))

    async def main() -> None:
        async with connected(reader) as (client, server):
            stream = await client.new_stream(server.get_id(), [PROTOCOL])
            with trio.fail_after(15):
                await stream.write(b"x" * total)  # py-libp2p gives up after 5 s without credit
                await stream.close()
                while received[0] < total - 65536:  # all but the cancelled read's bytes
                    await trio.sleep(0.01)

    run(main)
    assert cancelled == [True]
    assert received[0] == total - 65536


def test_the_lean_read_needs_a_positive_limit() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="at least 1 byte"):
            await msuite_yamux.read(object(), 0)

    run(main)
