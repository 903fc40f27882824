"""``node.events`` across processes (issue 14): bursts, restarts and two ``msuite up`` nodes.

Every node is a process of its own: :mod:`tests.integration.events_peer` (a real msuite node
with ``events:``, driven over stdin/stdout) or ``msuite up`` on a project copied from
``events_pair/`` (its impl publishes and records ``NoteCreated`` from ``gen/events.py``).
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_up import Up, _forget_gen
from tests.runtime.p2p.peers import NodeProcess

EVENTS_PAIR = Path(__file__).parent / "events_pair"
TYPE = "NoteCreated"
CHANNEL = "notes"


class EventsPeer(NodeProcess):
    """An msuite node with ``events:`` in a process of its own (see :mod:`.events_peer`)."""

    def __init__(self, name: str, repo: str | Path = ":memory:", bootstrap: tuple[str, ...] = ()) -> None:
        super().__init__(name, "tests.integration.events_peer", name, str(repo), CHANNEL, *bootstrap)

    def send(self, command: str, timeout: float = 30) -> Any:
        """Send ``command``; its answer, decoded from JSON."""
        return json.loads(self.ask(command, timeout))

    def counts(self) -> dict[str, Any]:
        """The status of the ``NoteCreated`` topic."""
        counts: dict[str, Any] = self.status()["events"]["types"][TYPE]
        return counts

    def received(self, publisher: str) -> list[list[Any]]:
        """What the handler was given from ``publisher``: ``[publisher, seq, title, local, id]`` each."""
        answer: list[list[Any]] = self.send(f"received {publisher}")
        return answer


@contextlib.contextmanager
def running(*peers: EventsPeer) -> Iterator[tuple[EventsPeer, ...]]:
    """Wait until each of ``peers`` is ready; kill each still running on the way out."""
    try:
        yield tuple(peer.ready() for peer in peers)
    finally:
        for peer in peers:
            peer.kill()


def joining(first: EventsPeer, *names: str) -> list[EventsPeer]:
    """Fresh nodes (``:memory:`` repositories) bootstrapped to ``first``, started side by side."""
    return [EventsPeer(name, bootstrap=(first.addr,)) for name in names]


def meshed(peers: list[EventsPeer], timeout: float = 30) -> None:
    """Wait until each of ``peers`` has every other one as a peer and in its mesh of the topic."""
    others = len(peers) - 1
    for peer in peers:
        peer.wait_for(
            lambda s: (
                s["events"]["types"][TYPE]["mesh"] >= others and s["events"]["types"][TYPE]["peers"] >= others
            ),
            timeout,
            f"{others} peers in the mesh of {TYPE}",
        )


def handled(peer: EventsPeer, publisher: EventsPeer, count: int, timeout: float = 30) -> list[list[Any]]:
    """Wait until ``peer``'s handler was given ``count`` events of ``publisher``; return them."""
    deadline = time.monotonic() + timeout
    while True:
        events = peer.received(publisher.peer_id)
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{peer.name} handled {len(events)} of the {count} events of {publisher.name} in {timeout} s: "
                f"{peer.counts()}\nstderr:\n{peer.stderr}"
            )
        time.sleep(0.1)


def clean(counts: dict[str, Any]) -> None:
    """Nothing dropped or missed on this topic, by the node or any handler."""
    assert counts["dropped"] == {}, counts
    assert counts["missed"] == 0, counts
    assert counts["publish_errors"] == 0, counts
    assert [(h["dropped"], h["errors"]) for h in counts["handlers"]] == [(0, 0)], counts


# ---------------------------------------------------------------------------------------------------------


def test_a_burst_of_1000_events_reaches_every_other_process_whole_and_in_order() -> None:
    """c publishes 1,000 events as fast as sequential awaits go: a and b each handle all of them,
    in publish order, and no counter says anything was dropped or missed."""
    burst = 1000
    with running(EventsPeer("a")) as (a,), running(*joining(a, "b", "c")) as (b, c):
        meshed([a, b, c])
        sent = c.send(f"publish {burst} burst", timeout=60)
        assert sent["error"] == ""
        assert sent["seqs"] == list(range(1, burst + 1))
        titles = [f"burst-{i}" for i in range(burst)]
        for listener in (a, b):
            events = handled(listener, c, burst)
            assert [e[2] for e in events] == titles  # every event, in publish order
            assert [e[1] for e in events] == sent["seqs"]
            assert len({e[4] for e in events}) == burst
            assert not any(e[3] for e in events)  # from the network, not local
        # c handled its own burst too, locally
        own = handled(c, c, burst)
        assert [(e[1], e[2], e[3]) for e in own] == [(i + 1, titles[i], True) for i in range(burst)]
        time.sleep(0.5)  # anything duplicated or late would show now
        for listener in (a, b):
            counts = listener.counts()
            clean(counts)
            assert counts["received"] == burst and counts["published"] == 0, counts
            assert counts["handlers"][0]["delivered"] == burst, counts
            assert len(listener.received(c.peer_id)) == burst
        counts = c.counts()
        clean(counts)
        assert counts["published"] == burst and counts["received"] == 0, counts
        for peer in (c, b, a):
            assert peer.quit() == 0, peer.stderr


@pytest.mark.parametrize("how", ["quit", "sigkill"])
def test_a_restarted_node_rejoins_its_topic_both_ways(tmp_path: Path, how: str) -> None:
    """b (on a repository, so the same peer ID) stops or is killed, then restarts: a's events
    published afterwards reach it, and the events it publishes reach a and c, counted clean
    (its new session starts its sequence again: neither out of order nor missed)."""
    repo = tmp_path / "b"
    with (
        running(EventsPeer("a")) as (a,),
        running(*joining(a, "c"), EventsPeer("b", repo, (a.addr,))) as (c, b),
    ):
        meshed([a, b, c])
        assert b.send("publish 5 before")["seqs"] == [1, 2, 3, 4, 5]
        for listener in (a, c):
            assert [e[2] for e in handled(listener, b, 5)] == [f"before-{i}" for i in range(5)]
        first_id = b.peer_id
        if how == "quit":
            assert b.quit() == 0, b.stderr
        else:
            b.kill()
        for peer in (a, c):
            peer.wait_for(lambda s: first_id not in s["peers"], 20, "b gone")
        # restarted at once: a clean stop once left the topic, and the PRUNE that sent backed b
        # off a's and c's meshes; b's GRAFTs within the back-off were refused and extended it to
        # 60 s, and with publishes going to mesh peers only, every event to or from b was lost
        with running(EventsPeer("b", repo, (a.addr,))) as (again,):
            assert again.peer_id == first_id
            meshed([a, again, c])
            # published after the restart, by a: b handles every one, in order
            assert a.send("publish 10 after")["error"] == ""
            titles = [f"after-{i}" for i in range(10)]
            assert [e[2] for e in handled(again, a, 10)] == titles
            assert [e[2] for e in handled(c, a, 10)] == titles
            # published by the restarted b: a and c handle every one, after the 5 from before
            sent = again.send("publish 10 again")
            assert sent["seqs"] == list(range(1, 11))  # a new session
            for listener in (a, c):
                events = handled(listener, again, 15)
                assert [e[2] for e in events] == [f"before-{i}" for i in range(5)] + [
                    f"again-{i}" for i in range(10)
                ]
                assert [e[1] for e in events] == [1, 2, 3, 4, 5, *range(1, 11)]
            time.sleep(0.5)
            for listener in (a, c):
                counts = listener.counts()
                clean(counts)
                assert len(listener.received(again.peer_id)) == 15
            assert again.counts()["received"] == 10
            clean(again.counts())
            for peer in (again, c, a):
                assert peer.quit() == 0, peer.stderr


# ---------------------------------------------------------------------------------------------------------

MANIFEST = """\
name: {name}
services:
  eventspair.v1.Notes:
    proto: protos/events_pair.proto
    impl: impl:Notes
grpc:
  unix: {{path: {socket}}}
p2p:
  port: 0
  channel: notes
  bootstrap: [{bootstrap}]
events:
  NoteCreated: {{id: str, title: str}}
shutdown: {{grace: 3s}}
"""


def socket_path() -> str:
    return f"/tmp/msuite-events-{os.getpid()}-{time.monotonic_ns()}.sock"


def project(root: Path, name: str, socket: str, bootstrap: str = "") -> Path:
    folder = root / name
    shutil.copytree(EVENTS_PAIR, folder)
    (folder / "msuite.yaml").write_text(MANIFEST.format(name=name, socket=socket, bootstrap=bootstrap))
    return folder


def test_two_up_processes_exchange_typed_events_both_ways(tmp_path: Path) -> None:
    """Two `msuite up` processes with `events:` in their manifests: each impl registers a handler
    of gen/events.py's NoteCreated in its constructor; what one publishes, the other handles."""
    sockets = {"alpha": socket_path(), "beta": socket_path()}
    alpha_dir = project(tmp_path, "alpha", sockets["alpha"])
    alpha = Up(alpha_dir)
    beta = None
    try:
        listeners = alpha.wait_ready(2, timeout=60)  # grpc.unix, p2p
        assert (alpha_dir / "gen" / "events.py").is_file()  # generated by msuite up
        beta_dir = project(tmp_path, "beta", sockets["beta"], bootstrap=listeners["p2p"])
        beta = Up(beta_dir)
        beta.wait_ready(2, timeout=60)
        assert "class NoteCreated(Event)" in (beta_dir / "gen" / "events.py").read_text()

        sys.path.insert(0, str(alpha_dir))
        try:
            _forget_gen()
            pb2 = importlib.import_module("gen.events_pair_pb2")
            pb2_grpc = importlib.import_module("gen.events_pair_pb2_grpc")
        finally:
            sys.path.remove(str(alpha_dir))

        async def exchange() -> dict[str, Any]:
            import grpc.aio

            async with (
                grpc.aio.insecure_channel(f"unix:{sockets['alpha']}") as to_alpha,
                grpc.aio.insecure_channel(f"unix:{sockets['beta']}") as to_beta,
            ):
                stubs = {"alpha": pb2_grpc.NotesStub(to_alpha), "beta": pb2_grpc.NotesStub(to_beta)}

                async def inbox(name: str) -> Any:
                    return await stubs[name].Received(pb2.Empty(), timeout=10)

                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while not all([(await inbox(name)).mesh >= 1 for name in stubs]):
                    assert loop.time() < deadline, "alpha and beta never share a mesh of NoteCreated"
                    await asyncio.sleep(0.1)
                published: dict[str, list[Any]] = {name: [] for name in stubs}
                for i in range(5):  # interleaved: both publish at once
                    for name, stub in stubs.items():
                        note = pb2.Note(id=f"{name}-{i}", title=f"note {i} of {name}")
                        published[name].append(await stub.Publish(note, timeout=10))
                while True:
                    inboxes = {name: await inbox(name) for name in stubs}
                    if all(len(box.events) >= 10 for box in inboxes.values()):
                        break
                    assert loop.time() < deadline + 30, {n: len(b.events) for n, b in inboxes.items()}
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)  # duplicates would show now
                inboxes = {name: await inbox(name) for name in stubs}
                return {"published": published, "inboxes": inboxes}

        result = asyncio.run(exchange())
        inboxes, published = result["inboxes"], result["published"]
        ids = {name: inboxes[name].peer_id for name in inboxes}
        assert ids["alpha"] != ids["beta"]
        for name, other in (("alpha", "beta"), ("beta", "alpha")):
            box = inboxes[name]
            assert box.published == 5 and box.received == 5 and box.missed == 0, box
            assert dict(box.dropped) == {}, box
            assert [p.seq for p in published[name]] == [1, 2, 3, 4, 5]
            assert {p.publisher for p in published[name]} == {ids[name]}
            mine = [(e.id, e.title, e.seq, e.local) for e in box.events if e.publisher == ids[name]]
            theirs = [(e.id, e.title, e.seq, e.local) for e in box.events if e.publisher == ids[other]]
            assert mine == [(f"{name}-{i}", f"note {i} of {name}", i + 1, True) for i in range(5)]
            assert theirs == [(f"{other}-{i}", f"note {i} of {other}", i + 1, False) for i in range(5)]
            assert len(box.events) == 10
            assert {e.cls for e in box.events} == {"gen.events.NoteCreated"}  # the generated class
        assert beta.stop() == 0, beta.stderr()
        assert alpha.stop() == 0, alpha.stderr()
    finally:
        for up in (alpha, beta):
            if up is not None:
                up.kill()
        _forget_gen()
        for socket in sockets.values():
            Path(socket).unlink(missing_ok=True)
