"""node.events between real nodes on 127.0.0.1 (in one process), and a plain py-libp2p peer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msuite.runtime.events.bus import Events
from msuite.runtime.events.envelope import MAX_SIZE, EventError
from msuite.runtime.node import Node
from msuite.runtime.wiring import Event
from msuite.spec import Manifest
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]
EVENTS = {
    "NoteCreated": {"id": "str", "title": "str", "tags": "list[str] | None"},
    "NoteDeleted": {"id": "str"},
}


class NoteCreated(Event):
    id: str
    title: str
    tags: list[str] | None = None


class NoteDeleted(Event):
    id: str


def manifest(
    name: str, bootstrap: tuple[str, ...] = (), channel: str | None = "notes", **extra: Any
) -> Manifest:
    p2p: dict[str, Any] = {"port": 0, "bootstrap": list(bootstrap)}
    if channel is not None:
        p2p["channel"] = channel
    return Manifest.model_validate({"name": name, "repo": ":memory:", "p2p": p2p, "events": EVENTS, **extra})


@contextlib.asynccontextmanager
async def nodes(
    count: int, setup: Callable[[Node], None] | None = None, **extra: Any
) -> AsyncIterator[list[Node]]:
    """``count`` started nodes, bootstrapped to the first, each in every other's NoteCreated mesh."""
    started: list[Node] = []
    try:
        for index in range(count):
            bootstrap = (started[0].p2p.addrs[0],) if started else ()
            node = Node(manifest(f"n{index}", bootstrap, **extra))
            if setup is not None:
                setup(node)
            await node.start()
            started.append(node)
        topic = "msuite/notes/events/NoteCreated"
        for node in started:
            await eventually(lambda n=node: len(n.p2p.pubsub.mesh(topic)) >= count - 1, timeout=15)
        yield started
    finally:
        for node in reversed(started):
            await node.stop()


def recorder() -> tuple[list[Event], Callable[[Event], Any]]:
    seen: list[Event] = []

    async def handle(event: Event) -> None:
        seen.append(event)

    return seen, handle


# ---------------------------------------------------------------------- between msuite nodes


async def test_two_nodes_each_publish_once_and_both_handlers_fire_on_both() -> None:
    """go-msuite's case: two hosts, each publishes once; both handlers fire on both hosts."""
    seen: dict[int, list[Event]] = {0: [], 1: []}
    async with nodes(2) as (a, b):
        for index, node in enumerate((a, b)):
            node.events.on(NoteCreated, appender(seen[index]))
        meta_a = await a.events.publish(NoteCreated(id="from-a", title="A"))
        meta_b = await b.events.publish(NoteCreated(id="from-b", title="B", tags=["x"]))
        await eventually(lambda: len(seen[0]) == 2 and len(seen[1]) == 2, timeout=10)

    for index, node_id in ((0, "a"), (1, "b")):
        by_id = {e.id: e for e in seen[index]}  # type: ignore[attr-defined]
        assert set(by_id) == {"from-a", "from-b"}
        for event in seen[index]:
            meta = event.meta
            assert meta is not None
            assert meta.type == "NoteCreated"
            assert meta.topic == "msuite/notes/events/NoteCreated"
            assert meta.local is (event.id == f"from-{node_id}")  # type: ignore[attr-defined]
    assert by_id["from-b"] == NoteCreated(id="from-b", title="B", tags=["x"])  # meta is not compared
    assert {e.meta.publisher for e in seen[0]} == {meta_a.publisher, meta_b.publisher}  # type: ignore[union-attr]
    assert {e.meta.id for e in seen[1]} == {meta_a.id, meta_b.id}  # type: ignore[union-attr]
    assert meta_a.seq == 1 and meta_a.local and abs((datetime.now(UTC) - meta_a.time).total_seconds()) < 30


def appender(into: list[Event]) -> Callable[[Event], Any]:
    async def append(event: Event) -> None:
        into.append(event)

    return append


async def test_a_burst_arrives_whole_and_in_publish_order_at_each_handler() -> None:
    firsts, first = recorder()
    seconds, second = recorder()

    def setup(node: Node) -> None:
        if node.name == "n1":
            node.events.on(NoteCreated, first)
            node.events.on(NoteCreated, second)

    async with nodes(2, setup) as (a, b):
        for i in range(300):
            await a.events.publish(NoteCreated(id=str(i), title="burst"))
        await eventually(lambda: len(firsts) == 300 and len(seconds) == 300, timeout=20)
        counts = b.events.status()["types"]["NoteCreated"]
    expected = [str(i) for i in range(300)]
    assert [e.id for e in firsts] == expected  # type: ignore[attr-defined]
    assert [e.id for e in seconds] == expected  # type: ignore[attr-defined]
    assert [e.meta.seq for e in firsts] == list(range(1, 301))  # type: ignore[union-attr]
    assert counts["received"] == 300 and counts["dropped"] == {} and counts["missed"] == 0


async def test_handlers_registered_while_the_node_runs_and_as_a_decorator() -> None:
    async with nodes(2) as (a, b):
        seen: list[str] = []

        @b.events.on(NoteDeleted)
        async def deleted(event: NoteDeleted) -> None:
            seen.append(event.id)

        assert deleted.__name__ == "deleted"  # the decorator gives the function back
        await a.events.publish(NoteDeleted(id="gone"))
        await b.events.publish(NoteDeleted(id="mine"))
        await eventually(lambda: sorted(seen) == ["gone", "mine"], timeout=10)


async def test_two_channels_on_one_mesh_never_mix() -> None:
    heard, handle = recorder()
    async with nodes(1) as (a,):
        other = Node(manifest("other", (a.p2p.addrs[0],), channel="billing"))
        other.events.on(NoteCreated, handle)
        async with other:
            await eventually(lambda: any(p["id"] == other.p2p.peer_id for p in a.p2p.peers()))
            assert other.events.topics() == [
                "msuite/billing/events/NoteCreated",
                "msuite/billing/events/NoteDeleted",
            ]
            await asyncio.sleep(1.5)  # a heartbeat: a shared topic would have meshed by now
            await a.events.publish(NoteCreated(id="1", title="notes only"))
            await asyncio.sleep(1.0)
            assert heard == []
            assert other.events.status()["types"]["NoteCreated"]["received"] == 0


async def test_the_channel_defaults_to_the_node_name() -> None:
    node = Node(manifest("solo", channel=None))
    async with node:
        assert node.events.topics()[0] == "msuite/solo/events/NoteCreated"


# ---------------------------------------------------------------------- handlers


async def test_a_slow_handler_does_not_delay_a_fast_one() -> None:
    fast_latency: list[float] = []
    slow_calls: list[str] = []
    sent: dict[str, float] = {}

    async def slow(event: NoteCreated) -> None:
        slow_calls.append(event.id)
        await asyncio.sleep(1.0)

    async def fast(event: NoteCreated) -> None:
        fast_latency.append(time.perf_counter() - sent[event.id])

    def setup(node: Node) -> None:
        if node.name == "n1":
            node.events.on(NoteCreated, slow)
            node.events.on(NoteCreated, fast)

    async with nodes(2, setup) as (a, b):
        for i in range(100):
            sent[str(i)] = time.perf_counter()
            await a.events.publish(NoteCreated(id=str(i), title="t"))
            await asyncio.sleep(0.005)
        await eventually(lambda: len(fast_latency) == 100, timeout=10)
        handlers = b.events.status()["types"]["NoteCreated"]["handlers"]
    fast_latency.sort()
    assert fast_latency[98] < 0.25, f"fast handler p99 {fast_latency[98] * 1000:.0f} ms behind a slow one"
    slow_status = next(h for h in handlers if h["handler"].endswith("slow"))
    assert len(slow_calls) < 50 and slow_status["queued"] >= 40  # it really was far behind meanwhile
    assert slow_status["dropped"] == 0


async def test_a_full_queue_drops_its_oldest_and_counts_each_drop(caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    handled: list[str] = []

    async def stuck(event: NoteDeleted) -> None:
        await gate.wait()
        handled.append(event.id)

    async with nodes(1) as (a,):
        a.events.on(NoteDeleted, stuck, queue=3)
        for i in range(10):
            await a.events.publish(NoteDeleted(id=str(i)))
        status = a.events.status()["types"]["NoteDeleted"]
        assert status["dropped"] == {"queue_full": 6}  # one is in the handler, three wait
        gate.set()
        await eventually(lambda: len(handled) == 4)
    assert handled == ["0", "7", "8", "9"]
    assert "queue of 3 is full" in caplog.text


async def test_a_blocking_handler_loses_nothing_and_holds_its_publisher_back() -> None:
    handled: list[str] = []

    async def slowish(event: NoteDeleted) -> None:
        await asyncio.sleep(0.01)
        handled.append(event.id)

    async with nodes(1) as (a,):
        a.events.on(NoteDeleted, slowish, queue=2, overflow="block")
        began = time.perf_counter()
        for i in range(30):
            await a.events.publish(NoteDeleted(id=str(i)))
        assert time.perf_counter() - began > 0.2  # publish waited for room
        await eventually(lambda: len(handled) == 30)
        assert a.events.status()["types"]["NoteDeleted"]["dropped"] == {}
    assert handled == [str(i) for i in range(30)]


async def test_a_handler_that_raises_is_logged_with_the_event_id_and_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []

    async def picky(event: NoteDeleted) -> None:
        if event.id == "bad":
            raise ValueError("cannot take this one")
        handled.append(event.id)

    async with nodes(1) as (a,):
        a.events.on(NoteDeleted, picky)
        await a.events.publish(NoteDeleted(id="ok-1"))
        bad = await a.events.publish(NoteDeleted(id="bad"))
        await a.events.publish(NoteDeleted(id="ok-2"))
        await eventually(lambda: handled == ["ok-1", "ok-2"])
        handler = a.events.status()["types"]["NoteDeleted"]["handlers"][0]
    assert handler["errors"] == 1 and handler["delivered"] == 2
    failure = next(r for r in caplog.records if r.name == "msuite.events" and r.levelno == logging.ERROR)
    assert bad.id in failure.getMessage() and "cannot take this one" in failure.getMessage()


async def test_queued_events_are_handled_within_the_shutdown_grace() -> None:
    handled: list[str] = []

    async def slowish(event: NoteDeleted) -> None:
        await asyncio.sleep(0.02)
        handled.append(event.id)

    node = Node(manifest("graceful", shutdown={"grace": "5s"}))
    node.events.on(NoteDeleted, slowish)
    await node.start()
    for i in range(20):
        await node.events.publish(NoteDeleted(id=str(i)))
    await node.stop()
    assert handled == [str(i) for i in range(20)]


# ---------------------------------------------------------------------- errors


async def test_publish_and_on_refuse_what_the_manifest_does_not_declare() -> None:
    class NoteMoved(Event):
        id: str

    class NoteDeleted(Event):  # a stale generated class: fields differ from the manifest
        id: str
        reason: str

    node = Node(manifest("strict"))
    with pytest.raises(EventError, match=r"once the node runs \(it is new\)"):
        await node.events.publish(NoteCreated(id="1", title="t"))
    async with node:
        with pytest.raises(
            EventError, match=r"NoteMoved is not an event of node strict.*NoteCreated, NoteDeleted"
        ):
            await node.events.publish(NoteMoved(id="1"))
        with pytest.raises(EventError, match="run `msuite generate` again"):
            node.events.on(NoteDeleted, _noop)
        with pytest.raises(EventError, match="not an event class"):
            node.events.on(dict, _noop)  # type: ignore[type-var]
        with pytest.raises(EventError, match="overflow must be"):
            node.events.on(NoteCreated, _noop, overflow="newest")  # type: ignore[call-overload]
        with pytest.raises(EventError, match="queue must be"):
            node.events.on(NoteCreated, _noop, queue=0)
        with pytest.raises(EventError, match=f"over the {MAX_SIZE}-byte limit"):
            await node.events.publish(NoteCreated(id="big", title="x" * MAX_SIZE))
        meta = await node.events.publish(NoteCreated(id="after", title="fine"))
        assert meta.seq == 1  # the refused ones took no number
        ids = {(await node.events.publish(NoteCreated(id=str(i), title="t"))).id for i in range(200)}
        assert len(ids) == 200 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


async def _noop(event: Event) -> None:
    return None


async def test_events_without_p2p_are_a_manifest_error() -> None:
    from msuite.spec import ManifestError

    with pytest.raises(ManifestError, match="events need"):
        Manifest.model_validate({"name": "x", "repo": ":memory:", "events": EVENTS})


# ---------------------------------------------------------------------- status and metrics


async def test_status_and_metrics_show_topics_mesh_and_counters() -> None:
    extra = {"http": {"port": 0}, "diagnostics": {"metrics": {}}}
    heard, handle = recorder()

    def setup(node: Node) -> None:
        if node.name == "n1":
            node.events.on(NoteCreated, handle)

    async with nodes(2, setup, **extra) as (a, b):
        for i in range(5):
            await a.events.publish(NoteCreated(id=str(i), title="t"))
        await eventually(lambda: len(heard) == 5)
        report = await b.status.report()
        text = b.metrics.render().decode()
        published = a.metrics.render().decode()
    section = report["events"]
    assert section["channel"] == "notes" and section["state"] == "running"
    created = section["types"]["NoteCreated"]
    assert created["subscribed"] is True and created["mesh"] == 1 and created["peers"] == 1
    assert created["received"] == 5 and created["handlers"][0]["delivered"] == 5
    assert created["handlers"][0]["latency_ms"]["p99"] is not None
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("msuite_events_received_total", (("type", "NoteCreated"),))] == 5
    handler = heard and created["handlers"][0]["handler"]
    assert samples[("msuite_events_delivered_total", (("handler", handler), ("type", "NoteCreated")))] == 5
    count_key = (
        "msuite_events_handler_latency_seconds_count",
        (("handler", handler), ("type", "NoteCreated")),
    )
    assert samples[count_key] == 5
    assert 'msuite_events_published_total{type="NoteCreated"} 5.0' in published


# ---------------------------------------------------------------------- a plain libp2p peer


class RawPeer:
    """``raw_events_peer`` in a process: a py-libp2p GossipSub peer with nothing of msuite."""

    def __init__(self, address: str, topic: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.events.raw_events_peer", address, topic],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.got: list[bytes] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.peer_id = self._expect("ready ").split()[1]

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("got "):
                self.got.append(base64.b64decode(line[4:]))
            else:
                self.lines.put(line.strip())
        self.lines.put("")

    def _expect(self, prefix: str) -> str:
        try:
            line = self.lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError("the raw peer did not answer") from None
        if not line.startswith(prefix):
            stderr = (
                self.process.stderr.read() if self.process.poll() is not None and self.process.stderr else ""
            )
            raise AssertionError(f"raw peer said {line!r}; stderr: {stderr}")
        return line

    def publish(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("publish " + base64.b64encode(data).decode() + "\n")
        self.process.stdin.flush()
        self._expect("ok")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


def envelope(event_id: str, data: Any, *, type_name: str = "NoteCreated", **fields: Any) -> bytes:
    """An envelope as docs/events.md specifies it, written with json alone."""
    body = {
        "v": 1,
        "type": type_name,
        "id": event_id,
        "time": "2026-12-03T06:00:00.5Z",
        "data": data,
        **fields,
    }
    return json.dumps(body).encode()


async def test_a_plain_libp2p_peer_publishes_raw_envelopes_and_bad_ones_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard, handle = recorder()
    node = Node(manifest("target"))
    node.events.on(NoteCreated, handle)
    async with node:
        topic = "msuite/notes/events/NoteCreated"
        peer = await asyncio.to_thread(RawPeer, node.p2p.addrs[0], topic)
        try:
            sends = [
                envelope("e1", {"id": "1", "title": "plain"}),
                envelope("e2", {"id": "2", "title": "newer", "colour": "red"}),  # extra field: ignored
                b"\xff\x00 not json",
                b"[1, 2, 3]",
                envelope("e3", {"id": "3", "title": "t"}, type_name="NoteDeleted"),
                envelope("e4", {"id": 4, "title": "t"}),  # id is not a str
                envelope("e5", {"title": "no id"}),
                envelope("e6", {"id": "6", "title": "t"}, v=2),
                envelope("e7", {"id": "7", "title": "x" * (MAX_SIZE + 10)}),
                envelope("e1", {"id": "1", "title": "plain"}),  # the same event again
                envelope("s3", {"id": "s3", "title": "t"}, session="abc", seq=3),
                envelope("s2", {"id": "s2", "title": "t"}, session="abc", seq=2),  # older than seq 3
                envelope("s5", {"id": "s5", "title": "t"}, session="abc", seq=5),  # seq 4 never sent
                envelope("e8", {"id": "8", "title": "last", "tags": None}),
            ]
            for data in sends:
                await asyncio.to_thread(peer.publish, data)
            try:
                await eventually(lambda: len(heard) == 5, timeout=15)
            except AssertionError:
                ids = [e.id for e in heard]  # type: ignore[attr-defined]
                raise AssertionError(f"heard {ids}; {node.events.status()['types']['NoteCreated']}") from None
            await asyncio.sleep(0.3)
            counts = node.events.status()["types"]["NoteCreated"]

            published = await node.events.publish(NoteCreated(id="to-raw", title="out", tags=["a"]))
            await eventually(lambda: bool(peer.got), timeout=15)
            wire = json.loads(peer.got[0])
        finally:
            await asyncio.to_thread(peer.close)
    # the five that fit, then the node's own event, delivered to its handler as well
    assert [e.id for e in heard] == ["1", "2", "s3", "s5", "8", "to-raw"]  # type: ignore[attr-defined]
    assert heard[1] == NoteCreated(id="2", title="newer")
    assert heard[0].meta is not None and heard[0].meta.publisher == peer.peer_id
    assert heard[0].meta.time == datetime(2026, 12, 3, 6, 0, 0, 500000, tzinfo=UTC)
    assert counts["dropped"] == {
        "undecodable": 2,
        "unknown_type": 1,
        "invalid": 2,
        "version": 1,
        "too_large": 1,
        "duplicate": 1,
        "out_of_order": 1,
    }
    assert counts["missed"] == 1 and counts["received"] == 5
    assert node.p2p.health() is None  # nothing of it hurt the host
    warnings = [r for r in caplog.records if r.name == "msuite.events" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and peer.peer_id in warnings[0].getMessage()  # once per peer per minute
    # what msuite publishes, read by the plain peer as docs/events.md says
    assert set(wire) == {"v", "type", "id", "time", "session", "seq", "data"}
    assert wire["v"] == 1 and wire["type"] == "NoteCreated" and wire["id"] == published.id
    assert wire["seq"] == published.seq == 1 and len(wire["session"]) == 16
    assert wire["data"] == {"id": "to-raw", "title": "out", "tags": ["a"]}
    assert datetime.fromisoformat(wire["time"]) == published.time


def test_events_is_listed_in_the_node_components() -> None:
    node = Node(manifest("listed"))
    node.build()
    assert isinstance(node.component("events"), Events)
    assert node.component("events").requires == ("p2p",)


async def test_a_publish_cancelled_in_flight_never_costs_the_next_event() -> None:
    """A cancelled publish may still reach peers; its number stays taken, or the next event would
    look older than it and be dropped everywhere as out_of_order (it was, 255 of 300 times)."""
    heard, handle = recorder()

    def setup(node: Node) -> None:
        if node.name == "n1":
            node.events.on(NoteDeleted, handle)

    async with nodes(2, setup) as (a, b):
        for i in range(100):
            attempt = asyncio.ensure_future(a.events.publish(NoteDeleted(id=f"cancelled-{i}")))
            for _ in range(i % 7):
                await asyncio.sleep(0)
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            await a.events.publish(NoteDeleted(id=f"kept-{i}"))
        kept = [f"kept-{i}" for i in range(100)]
        await eventually(lambda: [e.id for e in heard if e.id.startswith("kept")] == kept, timeout=20)  # type: ignore[attr-defined]
        dropped = b.events.status()["types"]["NoteDeleted"]["dropped"]
    assert "out_of_order" not in dropped


async def test_events_a_stalled_peer_could_not_take_are_counted_on_both_sides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer whose p2p thread stalls stops reading; its stream's window fills, then the
    publisher's outbound queue for it, which drops the rest. py-libp2p logs that at DEBUG only:
    here the publisher counts ``outbound_full`` and the peer, once it reads again, ``missed``."""
    from msuite.runtime.p2p import pubsub

    monkeypatch.setattr(pubsub, "OUTBOUND_QUEUE", 16)  # reached in a moment instead of 4,096 events
    heard, handle = recorder()

    def setup(node: Node) -> None:
        if node.name == "n1":
            node.events.on(NoteCreated, handle)

    async def freeze() -> None:  # b's p2p thread does nothing else meanwhile
        time.sleep(3)

    def dropped(node: Node) -> int:
        return int(node.events.status()["types"]["NoteCreated"]["dropped"].get("outbound_full", 0))

    async with nodes(2, setup) as (a, b):
        frozen = asyncio.ensure_future(b.p2p.bridge.run(freeze))
        await asyncio.sleep(0.2)
        for i in range(301):
            await a.events.publish(NoteCreated(id=str(i), title="x" * 2048))
        await frozen
        await eventually(lambda: len(heard) == 301 - dropped(a), timeout=20)  # the queue has drained
        await a.events.publish(NoteCreated(id="after", title="t"))
        await eventually(lambda: bool(heard) and heard[-1].id == "after", timeout=20)  # type: ignore[attr-defined]
        sent = a.events.status()["types"]["NoteCreated"]
        got = b.events.status()["types"]["NoteCreated"]
    lost = 302 - len(heard)
    assert lost > 0
    assert sent["dropped"]["outbound_full"] >= lost
    assert got["missed"] == lost


async def test_events_of_a_type_without_a_handler_are_counted_unhandled_not_decoded() -> None:
    async with nodes(2) as (a, b):
        await a.events.publish(NoteCreated(id="seen", title="t"))  # b learns the class, no handler
        for i in range(3):
            await a.events.publish(NoteDeleted(id=str(i)))
        await eventually(
            lambda: (
                b.events.status()["types"]["NoteDeleted"]["unhandled"] == 3
                and b.events.status()["types"]["NoteCreated"]["unhandled"] == 1
            ),
            timeout=10,
        )
        created = b.events.status()["types"]
    assert created["NoteDeleted"]["received"] == 0 and created["NoteCreated"]["received"] == 0
    assert created["NoteDeleted"]["dropped"] == {}
