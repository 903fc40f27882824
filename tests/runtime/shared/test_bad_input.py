"""Bad input from peers on the shared store's channel: counted, ignored, the store stays usable."""

from __future__ import annotations

import os
from pathlib import Path

from msuite.runtime.files.cids import DAG_CBOR, make_cid, multihash_of
from msuite.runtime.shared.delta import Delta, Op, encode_delta, encode_heads

from .nodes import Note, nodes, state, until

TOPIC = "msuite/test/shared"


async def offer(node, cid: bytes, block: bytes) -> None:  # type: ignore[no-untyped-def]
    """Put ``block`` in ``node``'s blockstore (so its Bitswap serves it) and announce it as a head."""
    shared = node.component("shared")
    shared._blocks.put(cid, block)
    node.p2p.bridge.run_sync_soon(shared.bitswap.blocks_added, [multihash_of(cid)])
    await node.p2p.pubsub.publish(TOPIC, encode_heads([(cid, 1)]))


async def test_garbage_on_the_topic_is_counted_and_the_store_keeps_working(tmp_path: Path) -> None:
    async with nodes(2, tmp_path) as (a, b):
        for garbage in (b"", b"\xff" * 10, os.urandom(100), encode_heads([]) + b"x", b"\xa1\x61v\x02"):
            await a.p2p.pubsub.publish(TOPIC, garbage)
        shared_b = b.component("shared")
        await until(lambda: _value(shared_b.counters.bad_messages), 5, timeout=3)
        await a.shared("app").create(Note(id="ok", text="after"))
        await until(lambda: state(b), {"ok": "after"}, timeout=3)


async def test_a_delta_that_does_not_decode_or_lies_about_its_height_is_refused(tmp_path: Path) -> None:
    async with nodes(2, tmp_path, walk_timeout="2s") as (a, b):
        await a.shared("app").create(Note(id="x", text="good"))
        await until(lambda: state(b), {"x": "good"}, timeout=3)
        shared_b = b.component("shared")
        # bytes that are not DAG-CBOR, under a DAG-CBOR CID
        junk = b"\xff\x00 not cbor"
        await offer(a, make_cid(DAG_CBOR, junk), junk)
        await until(lambda: _value(shared_b.counters.bad_deltas), 1, timeout=3)
        # a delta claiming height 1000 on top of a height-1 head, to win every merge
        head = next(iter(a.component("shared").replica.heads))
        record = b"\x01" + bytes(16) + b'{"id":"x","text":"forged"}'
        key = b"\x03app" + b"r" + b"\x05notes" + b"x"
        cid, block = encode_delta(Delta(1000, (head,), (Op(key, record, ()),), "liar"))
        await offer(a, cid, block)
        await until(lambda: _value(shared_b.counters.bad_deltas), 2, timeout=3)
        # and a delta built on the forged one is refused with it
        child, child_block = encode_delta(Delta(1001, (cid,), (Op(key, record, ()),), "liar"))
        await offer(a, child, child_block)
        await until(lambda: _value(shared_b.counters.bad_deltas), 3, timeout=3)
        assert await state(b) == {"x": "good"}
        assert shared_b.replica.height_of(cid) is None and shared_b.replica.height_of(child) is None
        # a later valid write still applies
        await a.shared("app").update(Note(id="x", text="better"))
        await until(lambda: state(b), {"x": "better"}, timeout=3)
        assert await b.shared("app").verify() == []


async def test_a_head_nobody_serves_fails_its_round_and_nothing_hangs(tmp_path: Path) -> None:
    async with nodes(2, tmp_path, walk_timeout="1s") as (a, b):
        ghost = make_cid(DAG_CBOR, b"nobody has this block")
        await a.p2p.pubsub.publish(TOPIC, encode_heads([(ghost, 5)]))
        shared_b = b.component("shared")
        await until(lambda: _value(shared_b.counters.walk_failures), 1, timeout=5)
        await a.shared("app").create(Note(id="y", text="fine"))
        await until(lambda: state(b), {"y": "fine"}, timeout=3)
        assert shared_b.status()["walks"] in (0, 1)


async def _value(number: int) -> int:
    return number
