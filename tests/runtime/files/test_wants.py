"""The fetching side on its own (no network, time given by the test): when a want a peer
refused (DONT_HAVE) is sent to it again, and that it never floods the peer."""

from __future__ import annotations

import time

import pytest

from msuite.runtime.files import bitswap as bitswap_module
from msuite.runtime.files.bitswap import NUDGE_BUDGET, NUDGE_FIRST, NUDGE_MAX, Bitswap, _Want
from msuite.runtime.files.blockstore import MemoryBlockstore
from msuite.runtime.files.cids import RAW, make_cid, multihash_of
from msuite.runtime.files.wire import Entry

PEERS = [
    "12D3KooWMBAX9jnp1Pkzb89fRiMafXqCx7jc4yX72abBJpk1PN6s",
    "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
]


def refused(bitswap: Bitswap, count: int, peers: list[str]) -> tuple[list[Entry], list[bytes]]:
    """``count`` wants every peer of ``peers`` answered DONT_HAVE; the entries sent from then on."""
    sent: list[Entry] = []
    bitswap._queue_entry = lambda peer, entry: sent.append(entry)  # type: ignore[method-assign]
    cids = [make_cid(RAW, i.to_bytes(4, "big")) for i in range(count)]
    for peer_id in peers:
        bitswap._peer(peer_id)
    for cid in cids:
        bitswap._wants[multihash_of(cid)] = _Want(cid, asked=set(peers))
    for peer_id in peers:
        for cid in cids:
            bitswap._on_presence(bitswap._peers[peer_id], cid, False)
    return sent, cids


def test_a_refused_want_goes_again_after_a_quarter_second_then_at_doubling_gaps_up_to_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bitswap = Bitswap(MemoryBlockstore)  # not running: the test calls the timer's work itself
    start = time.monotonic()
    monkeypatch.setattr(bitswap_module.time, "monotonic", lambda: start)
    sent, (cid,) = refused(bitswap, 1, PEERS[:1])
    assert sent == []
    times = []
    for step in range(1, 121):  # 6 s in steps of 50 ms
        now = start + step * 0.05
        before = len(sent)
        bitswap._nudge(now)
        times.extend([round(now - start, 2)] * (len(sent) - before))
    assert NUDGE_FIRST == 0.25 and NUDGE_MAX == 1.0
    assert times == [0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.75]
    # a want-have without send-dont-have: a peer that has the block now says HAVE, else nothing
    assert {(e.cid, e.want_have, e.send_dont_have, e.cancel) for e in sent} == {(cid, True, False, False)}


def test_a_want_that_is_fetched_or_assigned_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    bitswap = Bitswap(MemoryBlockstore)
    start = time.monotonic()
    monkeypatch.setattr(bitswap_module.time, "monotonic", lambda: start)
    sent, cids = refused(bitswap, 2, PEERS[:1])
    bitswap._wants[multihash_of(cids[0])].done.set()
    bitswap._wants[multihash_of(cids[1])].assigned = PEERS[1]
    for step in range(1, 40):
        bitswap._nudge(start + step * 0.05)
    assert sent == []


def test_re_sent_wants_are_capped_per_peer_and_round(monkeypatch: pytest.MonkeyPatch) -> None:
    bitswap = Bitswap(MemoryBlockstore)
    start = time.monotonic()
    monkeypatch.setattr(bitswap_module.time, "monotonic", lambda: start)
    count = 2 * NUDGE_BUDGET + 10
    sent, cids = refused(bitswap, count, PEERS)
    rounds = []
    for step in range(1, 5):
        before = len(sent)
        bitswap._nudge(start + step * NUDGE_FIRST)
        rounds.append(len(sent) - before)
    # every peer gets at most NUDGE_BUDGET per round; the wants left over go first next round
    assert rounds == [2 * NUDGE_BUDGET, 2 * NUDGE_BUDGET, 2 * NUDGE_BUDGET, 2 * NUDGE_BUDGET]
    each = {c: sum(1 for e in sent if e.cid == c) for c in cids}
    assert max(each.values()) - min(each.values()) <= 2
