"""The Bitswap service's per-peer ledger on its own (no network): what a peer's wantlist queues."""

from __future__ import annotations

from msuite.runtime.files.bitswap import Bitswap
from msuite.runtime.files.blockstore import MemoryBlockstore
from msuite.runtime.files.cids import RAW, make_cid
from msuite.runtime.files.wire import Entry, Message

PEER = "12D3KooWMBAX9jnp1Pkzb89fRiMafXqCx7jc4yX72abBJpk1PN6s"


def test_answers_a_peer_does_not_read_are_capped_and_counted() -> None:
    bitswap = Bitswap(MemoryBlockstore, max_entries=16)  # answers queued: at most 8 x 16
    bitswap.store = MemoryBlockstore()
    held = make_cid(RAW, b"held")
    bitswap.store.put(held, b"held")
    peer = bitswap._peer(PEER)  # not running: no sender drains the queue, as a peer that never reads
    asks = [
        Entry(make_cid(RAW, i.to_bytes(4, "big")), want_have=True, send_dont_have=True) for i in range(100)
    ]
    bitswap._on_wantlist(peer, Message(entries=asks))
    bitswap._on_wantlist(peer, Message(entries=[*asks, Entry(held, want_have=True)]))
    assert len(peer.presences) == 128
    assert bitswap.stats[PEER].presences_dropped == 201 - 128
    assert peer.presences[:2] == [(asks[0].cid, False), (asks[1].cid, False)]
    assert bitswap.stats[PEER].snapshot()["presences_dropped"] == 73
    assert len(peer.ledger) == 100  # the wants themselves stay (within max_ledger)
