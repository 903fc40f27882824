"""node.files between real nodes on 127.0.0.1 (in one process; each node its own libp2p host and
repository on disk). CIDs are checked against vectors computed by ipfs-unixfs-importer
(``js/vectors.json``), never by msuite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msuite.runtime.files import bitswap as bitswap_module
from msuite.runtime.files.bitswap import FetchError, FetchTimeout
from msuite.runtime.files.blockstore import BlockstoreError
from msuite.runtime.files.cids import cid_from_str, cid_to_str, make_cid
from msuite.runtime.files.files import FilesError, NotFound
from msuite.runtime.files.wire import Entry, Message, encode
from msuite.runtime.node import Node
from msuite.runtime.p2p.framing import encode_frame
from msuite.spec import Manifest
from tests.helpers import eventually

from .content import content

VECTORS = json.loads((Path(__file__).parent / "js" / "vectors.json").read_text())


def vector(size: int) -> dict[str, Any]:
    return next(v for v in VECTORS["files"] if v["size"] == size)


def manifest(name: str, folder: Path, bootstrap: tuple[str, ...] = (), **files: Any) -> Manifest:
    return Manifest.model_validate(
        {
            "name": name,
            "repo": str(folder / name),
            "p2p": {"port": 0, "bootstrap": list(bootstrap)},
            "files": files or True,
            "http": {"port": 0},
            "diagnostics": {"metrics": True},
        }
    )


@contextlib.asynccontextmanager
async def nodes(count: int, folder: Path, **files: Any) -> AsyncIterator[list[Node]]:
    """``count`` started nodes, each connected to every other."""
    started: list[Node] = []
    try:
        for index in range(count):
            bootstrap = tuple(n.p2p.addrs[0] for n in started)
            node = Node(manifest(f"n{index}", folder, bootstrap, **files))
            await node.start()
            started.append(node)
        for node in started:
            await eventually(lambda n=node: len(n.p2p.peers()) >= count - 1, timeout=15)
        yield started
    finally:
        for node in reversed(started):
            await node.stop()


async def read_all(node: Node, cid: Any, **options: Any) -> bytes:
    return b"".join([piece async for piece in node.files.get(cid, **options)])


@pytest.mark.parametrize("size", [0, 1, 262144, 262145, 174 * 262144, 174 * 262144 + 1])
async def test_added_on_one_node_got_on_another_with_the_cid_of_the_independent_importer(
    tmp_path: Path, size: int
) -> None:
    data = content(size)
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(data)
        assert str(cid) == vector(size)["cid"]
        assert not b.files.has(cid)
        assert await read_all(b, cid) == data
        info = await b.files.stat(cid)
        assert (info.size, info.blocks, info.local) == (size, vector(size)["blocks"], True)


async def test_both_ways_and_with_every_input_kind(tmp_path: Path) -> None:
    data = content(1_000_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 70_000):
            yield data[start : start + 70_000]

    async with nodes(2, tmp_path) as (a, b):
        from_path = await a.files.add(path)
        from_stream = await b.files.add(pieces())
        from_iterable = await a.files.add(iter([data[:5], data[5:]]))
        assert from_path == from_stream == from_iterable
        other = await b.files.add(content(3000)[::-1])
        assert await a.files.cat(other) == content(3000)[::-1]
        assert await b.files.cat(from_path) == data


async def test_a_range_fetches_only_what_it_needs(tmp_path: Path) -> None:
    data = content(40 * 262144 + 17)
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(data)
        offset, length = 10 * 262144 + 5, 262144
        assert await read_all(b, cid, offset=offset, length=length) == data[offset : offset + length]
        received = b.files.bitswap.stats[a.p2p.peer_id].blocks_received
        assert received <= 4  # the root and the two leaves the range spans (and no more than one extra)
        assert await read_all(b, cid, offset=len(data) - 3) == data[-3:]


async def test_fetch_from_two_providers_at_once(tmp_path: Path) -> None:
    data = content(12 * 1024 * 1024)
    async with nodes(3, tmp_path) as (a, b, c):
        cid = await a.files.add(data)
        assert await b.files.add(data) == cid
        assert await read_all(c, cid) == data
        stats = c.files.bitswap.stats
        from_a = stats[a.p2p.peer_id].blocks_received
        from_b = stats[b.p2p.peer_id].blocks_received
        assert from_a > 0 and from_b > 0, (from_a, from_b)
        assert from_a + from_b == 48 + 1  # 48 leaves and the root, each kept once


async def test_a_block_nobody_serves_times_out_naming_it(tmp_path: Path) -> None:
    missing = make_cid(0x55, b"nobody has this")
    async with nodes(2, tmp_path, timeout="1s") as (a, _b):
        started = time.monotonic()
        with pytest.raises(FetchTimeout, match=_text(missing)):
            await a.files.cat(_text(missing))
        assert time.monotonic() - started < 5
        assert a.files.bitswap.wanted() == []  # the want is dropped with its last waiter
        with pytest.raises(FetchTimeout, match=_text(missing)):
            await a.files.cat(_text(missing), timeout=0.3)


def _text(cid: bytes) -> str:
    return cid_to_str(cid)


async def test_a_peer_sending_bytes_that_do_not_match_is_counted_and_nothing_bad_is_stored(
    tmp_path: Path,
) -> None:
    data = content(300_000)
    async with nodes(2, tmp_path, timeout="3s") as (liar, b):
        cid = await liar.files.add(data)
        store = liar.files.store
        real_get = store.get

        def lying_get(cid: bytes) -> bytes | None:
            block = real_get(cid)
            return block[:-1] + b"!" if block else block

        store.get = lying_get  # type: ignore[method-assign]
        with pytest.raises(FetchTimeout):
            await b.files.cat(cid)
        assert b.files.bitswap.stats[liar.p2p.peer_id].rejected >= 1
        assert b.files.bitswap.stats[liar.p2p.peer_id].blocks_received == 0
        assert b.files.store.stats().blocks == 0
        store.get = real_get  # type: ignore[method-assign]
        assert await b.files.cat(cid) == data  # honest again: served, nothing was poisoned


async def _raw_stream(sender: Node, to: Node, payload: bytes) -> None:
    """Open a Bitswap stream from ``sender``'s host to ``to`` and write ``payload`` on it."""
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID

    async def write() -> None:
        host = sender.p2p.libp2p
        stream = await host.new_stream(ID.from_base58(to.p2p.peer_id), [TProtocol("/ipfs/bitswap/1.2.0")])
        with contextlib.suppress(Exception):
            await stream.write(payload)
            await stream.close()

    await sender.p2p.bridge.run(write)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode_frame(b"\x0b\x00garbage"), id="garbage"),
        pytest.param(b"\x80\x80\xc0\x02" + b"x" * 100, id="a 5 MiB frame"),
        pytest.param(
            encode_frame(
                encode(
                    Message(entries=[Entry(make_cid(0x55, bytes([i % 256, i // 256]))) for i in range(9000)])
                )
            ),
            id="9000 wants",
        ),
    ],
)
async def test_bad_messages_reset_that_stream_and_the_node_serves_on(tmp_path: Path, payload: bytes) -> None:
    data = content(600_000)
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(data)
        await _raw_stream(b, a, payload)
        await eventually(lambda: a.files.bitswap.stats[b.p2p.peer_id].bad_messages == 1)
        # the host resets the stream and counts it once the handler has raised
        await eventually(
            lambda: a.p2p.status()["stream_errors"]["by_protocol"].get("/ipfs/bitswap/1.2.0") == 1
        )
        assert await b.files.cat(cid) == data


async def test_pinned_files_survive_a_restart_and_gc_keeps_only_them(tmp_path: Path) -> None:
    kept, dropped = content(700_000), content(500_000)[::-1]
    node = Node(manifest("solo", tmp_path))
    async with node:
        kept_cid = await node.files.add(kept)
        dropped_cid = await node.files.add(dropped, pin=False)
        assert [str(c) for c in await node.files.pins()] == [str(kept_cid)]
    node = Node(manifest("solo", tmp_path))
    async with node:
        assert await node.files.cat(kept_cid) == kept
        assert node.files.has(dropped_cid)
        before = node.files.store.stats()
        result = await node.files.gc()
        assert result.blocks == 3  # the root and two leaves of the unpinned file
        assert node.files.store.stats().blocks == before.blocks - 3
        assert not node.files.has(dropped_cid)
        assert await node.files.cat(kept_cid) == kept
        assert await node.files.unpin(kept_cid) is True
        assert await node.files.unpin(kept_cid) is False
        await node.files.gc()
        assert node.files.store.stats().blocks == 0


async def test_a_block_damaged_on_disk_is_fetched_again(tmp_path: Path) -> None:
    data = content(600_000)
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(data)
        assert await b.files.cat(cid) == data
        leaf = next(p for p in (tmp_path / "n1" / "blocks").rglob("*.data") if p.stat().st_size == 262144)
        leaf.write_bytes(b"\0" * 262144)
        assert await b.files.cat(cid) == data
        assert b.files.store.stats().corrupt == 1


async def test_a_folder_is_a_directory_with_the_independent_cid(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(content(5))
    (folder / "b.bin").write_bytes(content(262145))
    (folder / "sub" / "c.txt").write_bytes(content(1000))
    expected = VECTORS["directory"]
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(folder)
        assert str(cid) == expected["cid"]
        assert await b.files.cat(f"{cid}/sub/c.txt") == content(1000)
        assert await b.files.cat(cid, path="b.bin") == content(262145)
        assert (await b.files.stat(f"/ipfs/{cid}/sub")).kind == "directory"
        with pytest.raises(NotFound, match="nope"):
            await b.files.cat(f"{cid}/sub/nope")
        with pytest.raises(FilesError, match="is a directory"):
            await b.files.cat(cid)
        names = [entry.name for entry in await b.files.ls(cid)]
        assert names == ["a.txt", "b.bin", "sub"]


async def test_status_and_metrics(tmp_path: Path) -> None:
    data = content(600_000)
    async with nodes(2, tmp_path) as (a, b):
        cid = await a.files.add(data)
        await b.files.cat(cid)
        status = b.files.status()
        assert (status["blocks"], status["pins"]) == (4, 0)
        assert status["bitswap"]["peers"][a.p2p.peer_id]["blocks_received"] == 4
        samples = {
            (s.name, s.labels.get("peer")): s.value
            for family in text_string_to_metric_families(a.metrics.render().decode())
            for s in family.samples
        }
        assert samples[("msuite_files_blocks", None)] == 4
        assert samples[("msuite_files_pins", None)] == 1
        assert samples[("msuite_files_blocks_sent_total", b.p2p.peer_id)] == 4
        root = a.files.store.get(cid_from_str(str(cid)))
        assert root is not None
        assert samples[("msuite_files_bytes_sent_total", b.p2p.peer_id)] == 600_000 + len(root)


async def test_providers_are_found_in_the_dht_when_no_connected_peer_has_the_file(tmp_path: Path) -> None:
    data = content(600_000)
    async with contextlib.AsyncExitStack() as stack:
        started: list[Node] = []
        for name in ("a", "b", "c"):
            spec = manifest(name, tmp_path, tuple(n.p2p.addrs[0] for n in started[:1]))
            node = Node(
                spec.model_copy(update={"discovery": spec.discovery.model_copy(update={"dht": True})})
            )
            await stack.enter_async_context(node)
            started.append(node)
        a, _b, c = started
        await eventually(lambda: all(len(n.p2p.peers()) == 2 for n in started), timeout=15)
        cid = await a.files.add(data)
        dht = a.p2p.status()
        await eventually(lambda: a.p2p.status()["dht"]["content_keys"] == 1, timeout=5)
        rounds = dht["dht"]["rounds"]
        await eventually(lambda: a.p2p.status()["dht"]["rounds"] > rounds, timeout=15)
        await c.p2p.disconnect(a.p2p.peer_id)
        await eventually(lambda: a.p2p.peer_id not in [p["id"] for p in c.p2p.peers()], timeout=5)
        assert await c.files.cat(cid, timeout=20) == data  # b says DONT_HAVE; the DHT names a
        assert c.files.bitswap.stats[a.p2p.peer_id].blocks_received == 4
        assert c.files.bitswap.lookups == 1


async def test_a_block_the_disk_refuses_fails_the_get_at_once(tmp_path: Path) -> None:
    data = content(300_000)
    async with nodes(2, tmp_path, timeout="30s") as (a, b):
        cid = await a.files.add(data)

        def full(cid: bytes, block: bytes) -> bool:
            raise BlockstoreError("no space left on device")

        b.files.store.put = full  # type: ignore[method-assign]
        began = time.monotonic()
        with pytest.raises(FetchError, match="no space left on device"):
            await b.files.cat(cid)
        assert time.monotonic() - began < 10  # not the 30 s timeout
        assert b.files.bitswap.wanted() == []


async def test_an_unexpected_error_storing_a_block_resets_the_stream_naming_that_error(
    tmp_path: Path,
) -> None:
    """A store failing with something other than BlockstoreError: the stream is reset and the
    fault names the error itself, not an exception group of the receiving tasks."""
    data = content(300_000)
    async with nodes(2, tmp_path, timeout="3s") as (a, b):
        cid = await a.files.add(data)

        def broken(cid: bytes, block: bytes) -> bool:
            raise OSError(5, "Input/output error")

        b.files.store.put = broken  # type: ignore[method-assign]
        with pytest.raises(FetchTimeout):  # every stream carrying the block was reset
            await b.files.cat(cid)
        faults = b.p2p.status()["stream_errors"]["recent"]
        assert faults, b.p2p.status()["stream_errors"]
        assert all(f["error"].startswith("OSError: [Errno 5] Input/output error") for f in faults), faults


async def test_a_peer_without_bitswap_is_told_apart_from_one_that_failed_for_a_while(tmp_path: Path) -> None:
    from libp2p.host.exceptions import StreamFailure
    from libp2p.protocol_muxer.exceptions import MultiselectClientError

    from msuite.runtime.p2p.compat.streams import protocols_refused

    data = content(600_000)
    async with nodes(2, tmp_path) as (a, b):
        plain = Node(
            Manifest.model_validate(
                {"name": "plain", "repo": ":memory:", "p2p": {"port": 0, "bootstrap": [a.p2p.addrs[0]]}}
            )
        )
        async with plain:  # p2p only: no Bitswap handler
            await eventually(lambda: plain.p2p.peer_id in {p["id"] for p in a.p2p.peers()}, timeout=10)
            cid = await b.files.add(data)
            assert await read_all(a, cid) == data  # asked of every peer, served by b
            peer = a.files.bitswap._peers[plain.p2p.peer_id]
            await eventually(lambda: not peer.speaks, timeout=10)
            assert peer.slow_until == 0.0  # refused, not slow: it is never asked again
    timed_out = StreamFailure("failed to open a stream")
    timed_out.__cause__ = MultiselectClientError("response timed out after 5s, protocols tried: [...]")
    assert not protocols_refused(timed_out)
    refused = StreamFailure("failed to open a stream")
    refused.__cause__ = MultiselectClientError("protocols not supported: tried ['/ipfs/bitswap/1.2.0']")
    assert protocols_refused(refused)


@pytest.mark.parametrize("how", ["quietly", "by an add"])
async def test_a_peer_that_said_dont_have_and_then_got_the_block_serves_it_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``quietly``: the block lands in a's blockstore without a's Bitswap hearing of it, as a
    block Helia adds (it tells no peer that asked before): b sends its want again to the
    peers that said DONT_HAVE. ``by an add``: a's Bitswap serves the want it kept at once.
    The periodic re-ask of every peer (every REASK ticks) is out of the way: TICK is a minute."""
    monkeypatch.setattr(bitswap_module, "TICK", 60.0)
    data = content(200_000)[::-1]  # one raw block
    cid = make_cid(0x55, data)
    async with nodes(2, tmp_path) as (a, b):
        fetch = asyncio.ensure_future(b.files.cat(_text(cid), timeout=20))

        def refused() -> bool:
            wants = b.files.bitswap._wants
            return any(a.p2p.peer_id in want.dont_have for want in wants.values())

        await eventually(refused, timeout=10)
        await asyncio.sleep(0.3)  # past the first re-send: the block is not there yet
        if how == "quietly":
            a.files.store.put(cid, data)
        else:
            assert str(await a.files.add(data)) == _text(cid)
        stored = time.monotonic()
        assert await fetch == data
        assert time.monotonic() - stored < 2.0  # the longest gap between re-sends (1 s) and a second
        assert b.files.bitswap.stats[a.p2p.peer_id].duplicates == 0


async def test_received_blocks_are_hashed_and_stored_off_the_trio_thread(tmp_path: Path) -> None:
    """The trio thread reads the network (every peer's streams) while a worker thread writes the
    blocks that came: a slow disk does not stop the node's other traffic."""
    data = content(1_500_000)
    async with nodes(2, tmp_path) as (a, b):
        store = b.files.bitswap.store
        writers: set[int] = set()
        real_put = store.put

        def put(cid: bytes, block: bytes) -> bool:
            writers.add(threading.get_ident())
            time.sleep(0.05)  # a slow disk
            return real_put(cid, block)

        store.put = put  # type: ignore[method-assign]

        async def trio_thread() -> int:
            return threading.get_ident()

        trio_ident = await b.p2p.bridge.run(trio_thread)
        cid = await a.files.add(data)
        fetch = asyncio.ensure_future(read_all(b, cid))
        while not writers:
            await asyncio.sleep(0.005)
        pings = []  # the trio thread answers while blocks are being written
        while not fetch.done():
            began = time.monotonic()
            await b.p2p.bridge.run(trio_thread)
            pings.append(time.monotonic() - began)
        assert await fetch == data
        assert writers and trio_ident not in writers
        assert len(pings) > 3 and sorted(pings)[len(pings) // 2] < 0.1  # a put alone takes 0.05 s
