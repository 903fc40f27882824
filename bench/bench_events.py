"""Event burst: delivered % and publish-to-handler latency of node.events, vs py-libp2p's default GossipSub.

    python bench/bench_events.py [--count N] [--rounds R] [--title CHARS] [--with-pubsub] [--profile DIR]

Three nodes, each in its own process, on 127.0.0.1: a publisher and two
receivers (the first bootstrapped to the publisher, the second to both), and
each node's mesh of the topic holds the other two before the burst. The
publisher then publishes ``--count`` events as fast as sequential awaits
allow; each receiver notes ``time.time_ns()`` in its handler, the publisher
just before each publish call (one machine: one clock). Compared, in
alternating rounds (medians reported):

- **msuite**: ``node.events``, ``await publish(NoteCreated(id=..., title=...))``,
  a handler ``node.events.on(NoteCreated, ...)`` on each receiver;
- **py-libp2p**: three plain py-libp2p hosts (TCP, Noise, yamux) with
  ``Pubsub(host, GossipSub(...))`` at py-libp2p's defaults (only the required
  protocols and degrees given: 6/4/12, as msuite), publishing payloads as long
  as msuite's envelopes. Its heartbeat comes every 120 s, so the mesh is built
  the way that works without one: the publisher subscribes first, each
  receiver once it sees the others subscribed (its join grafts them). Its
  spam protection passes 10 messages per second per topic, its own publishes
  included, and drops the rest silently: its latencies are those of the few
  delivered;
- with ``--with-pubsub``, also **msuite pubsub**: ``node.p2p.pubsub`` with raw
  payloads of the same length (msuite's GossipSub, no events layer), which
  tells the events layer's share of the latency.

Goal: 100% delivered and p99 under 50 ms. Exits non-zero only on errors.
``--profile DIR`` writes a cProfile of each msuite process's asyncio thread
(where ``node.events`` runs; py-libp2p runs in the p2p thread) to DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

CHANNEL = "bench"
TOPIC = f"msuite/{CHANNEL}/events/NoteCreated"
EVENTS = {"NoteCreated": {"id": "str", "title": "str"}}
PEERS = 2
"""Mesh size every node waits for: the other two."""
QUIET = 2.0
"""Seconds without a new delivery after the burst that end the wait for the rest."""
SETTLE = 20.0
"""Longest wait, in seconds, for deliveries after the last publish."""
LABELS = {"msuite": "msuite events", "libp2p": "py-libp2p default", "pubsub": "msuite pubsub"}


# ---------------------------------------------------------------------- children


def say(kind: str, **values: Any) -> None:
    print(json.dumps({"kind": kind, **values}), flush=True)


def child_msuite(role: str, impl: str, count: int, title: str, size: int) -> None:
    """A node (events or raw pubsub) as publisher or receiver, driven by lines on stdin."""
    from msuite.runtime.node import Node
    from msuite.runtime.wiring import Event
    from msuite.spec import Manifest

    class NoteCreated(Event):
        id: str
        title: str

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def pump() -> None:
            while True:
                line = sys.stdin.readline()
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(lines.put_nowait, line.strip())
                if not line:
                    return

        threading.Thread(target=pump, daemon=True).start()
        config = json.loads(await lines.get())
        p2p = {"port": 0, "channel": CHANNEL, "bootstrap": config["bootstrap"]}
        settings = {"name": f"bench-{role}", "repo": ":memory:", "p2p": p2p, "events": EVENTS}
        node = Node(Manifest.model_validate(settings))
        arrivals: dict[int, int] = {}
        topic = TOPIC if impl == "msuite" else "bench-raw"

        async def got(event: NoteCreated) -> None:
            arrivals[int(event.id)] = time.time_ns()

        async def got_raw(message: Any) -> None:
            arrivals[int(message.data[:6])] = time.time_ns()

        if role == "recv" and impl == "msuite":
            node.events.on(NoteCreated, got)
        async with node:
            if impl == "pubsub":
                await node.p2p.pubsub.subscribe(topic, got_raw if role == "recv" else _ignore)
            say("addr", addr=node.p2p.addrs[0])
            deadline = time.monotonic() + 30
            while len(node.p2p.pubsub.mesh(topic)) < PEERS:
                if time.monotonic() > deadline:
                    raise SystemExit(f"no mesh of {PEERS} in 30 s: {node.p2p.pubsub.mesh(topic)}")
                await asyncio.sleep(0.02)
            say("ready")
            if role == "pub":
                assert await lines.get() == "go"
                events = [NoteCreated(id=f"{i:06d}", title=title) for i in range(count)]
                payloads = [f"{i:06d}".encode() + b"x" * (size - 6) for i in range(count)]
                sent: list[int] = []
                began = time.perf_counter()
                if impl == "msuite":
                    for event in events:
                        sent.append(time.time_ns())
                        await node.events.publish(event)
                else:
                    for payload in payloads:
                        sent.append(time.time_ns())
                        await node.p2p.pubsub.publish(topic, payload)
                elapsed = time.perf_counter() - began
                say("sent", sent=sent, elapsed=elapsed)
                await lines.get()
            else:
                reporter = asyncio.ensure_future(_progress(arrivals))
                await lines.get()
                reporter.cancel()
                status = node.events.status()["types"]["NoteCreated"] if impl == "msuite" else {}
                dropped = {**status.get("dropped", {}), "missed": status.get("missed", 0)}
                say("arrivals", arrivals=arrivals, dropped=dropped)

    asyncio.run(main())


async def _ignore(message: Any) -> None:
    return None


async def _progress(arrivals: dict[int, int]) -> None:
    last = -1
    while True:
        if len(arrivals) != last:
            last = len(arrivals)
            say("count", count=last)
        await asyncio.sleep(0.1)


def child_libp2p(role: str, count: int, size: int) -> None:
    """Three plain py-libp2p hosts with GossipSub at py-libp2p's defaults (nothing of msuite's)."""
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as x25519
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
    from libp2p.stream_muxer.yamux.yamux import Yamux
    from libp2p.tools.anyio_service import background_trio_service
    from libp2p.transport.tcp.tcp import TCP

    async def line() -> str:
        text: str = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        return text.strip()

    async def progress(arrivals: dict[int, int]) -> None:
        last = -1
        while True:
            if len(arrivals) != last:
                last = len(arrivals)
                say("count", count=last)
            await trio.sleep(0.1)

    async def main() -> None:
        config = json.loads(await line())
        keys = create_new_key_pair()
        host = new_host(
            key_pair=keys,
            sec_opt={TProtocol(NOISE): Noise(keys, noise_privkey=x25519().private_key)},
            muxer_opt={TProtocol(YAMUX): Yamux},
            transports=[TCP()],
            enable_mDNS=False,
            enable_upnp=False,
            enable_autotls=False,
            enable_quic=False,
            bootstrap=None,
        )
        router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12
        )
        pubsub = Pubsub(host, router)
        arrivals: dict[int, int] = {}
        listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
        async with (
            host.run(listen_addrs=listen),
            background_trio_service(pubsub),
            background_trio_service(router),
            trio.open_nursery() as nursery,
        ):
            await pubsub.wait_until_ready()
            if role == "pub":
                subscription = await pubsub.subscribe(TOPIC)
            say("addr", addr=str(host.get_addrs()[0]))
            with trio.fail_after(30):
                peers = [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in config["bootstrap"]]
                for info in peers:
                    await host.connect(info)
                # joining once the others' subscriptions are known grafts them (no heartbeat needed)
                while any(p.peer_id not in pubsub.peer_topics.get(TOPIC, ()) for p in peers):
                    await trio.sleep(0.02)
                if role == "recv":
                    subscription = await pubsub.subscribe(TOPIC)
                while len(router.mesh.get(TOPIC, ())) < PEERS:
                    await trio.sleep(0.02)
            say("ready")
            if role == "pub":
                assert await line() == "go"
                payloads = [f"{i:06d}".encode() + b"x" * (size - 6) for i in range(count)]
                sent: list[int] = []
                began = time.perf_counter()
                for payload in payloads:
                    sent.append(time.time_ns())
                    await pubsub.publish(TOPIC, payload)
                elapsed = time.perf_counter() - began
                say("sent", sent=sent, elapsed=elapsed)
                await line()
            else:

                async def consume() -> None:
                    while True:
                        message = await subscription.get()
                        arrivals[int(message.data[:6])] = time.time_ns()

                nursery.start_soon(consume)
                nursery.start_soon(progress, arrivals)
                await line()
                say("arrivals", arrivals=arrivals, dropped={})
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------- the driver


class Child:
    """One child process: JSON lines in and out, its stderr in a file (shown when it fails)."""

    def __init__(self, process: asyncio.subprocess.Process, name: str, stderr: Any) -> None:
        self.process = process
        self.name = name
        self.stderr = stderr
        self.count = 0
        self.last_change = time.monotonic()
        self.lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, arguments: list[str]) -> Child:
        stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed with the child)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            *arguments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=1 << 24,
        )
        return cls(process, name, stderr)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if message["kind"] == "count":
                if message["count"] != self.count:
                    self.count, self.last_change = message["count"], time.monotonic()
            else:
                self.lines.put_nowait(message)
        self.lines.put_nowait(None)

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self.lines.get(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no {kind!r} within {timeout:.0f} s{self._tail()}") from None
        if message is None:
            await self.process.wait()
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}){self._tail()}")
        if message["kind"] != kind:
            raise RuntimeError(f"{self.name}: expected {kind!r}, got {message['kind']!r}")
        return message

    def _tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().strip()
        return ":\n" + "\n".join(text.splitlines()[-15:]) if text else ""

    async def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.reader.cancel()
        self.stderr.close()


@dataclass
class Result:
    impl: str
    delivered: list[float]
    """Percent delivered, per receiver."""
    latencies: list[float]
    """Milliseconds, every delivery at both receivers."""
    rate: float
    """Publishes per second."""
    span: float | None
    """Seconds from the first publish to the last delivery."""
    dropped: list[dict[str, int]] = field(default_factory=list)

    def quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


async def burst(impl: str, count: int, title: str, size: int, profile: str | None = None) -> Result:
    """One run: start the three processes, form the mesh, publish ``count``, collect the arrivals."""
    base = ["--child", impl, "--count", str(count), "--title-text", title, "--size", str(size)]
    if profile and impl != "libp2p":
        os.makedirs(profile, exist_ok=True)
        base += ["--profile", profile]
    names = ("publisher", "receiver 1", "receiver 2")
    children = list(
        await asyncio.gather(
            *(
                Child.start(f"{impl} {name}", [*base, "--role", role])
                for name, role in zip(names, ("pub", "recv", "recv"), strict=True)
            )
        )
    )
    publisher, *receivers = children
    try:
        addrs: list[str] = []
        for child in children:  # the first receiver dials the publisher, the second both
            child.send(json.dumps({"bootstrap": addrs}))
            addrs.append((await child.expect("addr", 60))["addr"])
        for child in children:
            await child.expect("ready", 30)
        publisher.send("go")
        report = await publisher.expect("sent", 120)
        sent: list[int] = report["sent"]
        finished = time.monotonic()
        deadline = finished + SETTLE
        while any(r.count < count for r in receivers) and time.monotonic() < deadline:
            if time.monotonic() - max(finished, *(r.last_change for r in receivers)) > QUIET:
                break
            await asyncio.sleep(0.02)
        arrivals: list[dict[int, int]] = []
        dropped = []
        for receiver in receivers:
            receiver.send("report")
            message = await receiver.expect("arrivals", 30)
            arrivals.append({int(k): v for k, v in message["arrivals"].items()})
            dropped.append({k: v for k, v in message["dropped"].items() if v})
        publisher.send("exit")
    finally:
        await asyncio.gather(*(child.close() for child in children))
    latencies = [(t - sent[i]) / 1e6 for got in arrivals for i, t in got.items()]
    last = max((t for got in arrivals for t in got.values()), default=None)
    return Result(
        impl,
        [100 * len(got) / count for got in arrivals],
        latencies,
        count / report["elapsed"],
        None if last is None else (last - sent[0]) / 1e9,
        dropped,
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def show(round_: int, result: Result) -> None:
    delivered = " ".join(f"{d:5.1f}%" for d in result.delivered)
    span = "-" if result.span is None else f"{result.span:.2f} s"
    dropped = "".join(f"  dropped {d}" for d in result.dropped if d)
    print(
        f"  round {round_}  {LABELS[result.impl]:18} delivered {delivered}   "
        f"p50 {ms(result.quantile(0.5)):>9}  p99 {ms(result.quantile(0.99)):>9}   "
        f"publish {result.rate:6,.0f}/s   first publish -> last delivery {span}{dropped}",
        flush=True,
    )


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def envelope_size(title: str) -> int:
    """Bytes of the envelope msuite publishes for one event of the bench (the raw payloads' length)."""
    from datetime import UTC, datetime

    from msuite.runtime.events.envelope import encode, new_session
    from msuite.runtime.wiring import Event

    class NoteCreated(Event):
        id: str
        title: str

    event = NoteCreated(id="000000", title=title)
    return len(encode(event, event_id="0" * 32, time=datetime.now(UTC), session=new_session(), seq=1000))


async def compare(count: int, rounds: int, title_size: int, with_pubsub: bool, profile: str | None) -> None:
    title = "t" * title_size
    size = envelope_size(title)
    impls = ["msuite", "libp2p", *(["pubsub"] if with_pubsub else [])]
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"{count}-event burst, 1 publisher -> 2 receivers, 3 processes on 127.0.0.1, "
        f"{size}-byte messages; load {load} on {os.cpu_count()} cores",
        flush=True,
    )
    results: dict[str, list[Result]] = {impl: [] for impl in impls}
    began = time.monotonic()
    for round_ in range(1, rounds + 1):
        for impl in impls if round_ % 2 else reversed(impls):
            result = await burst(impl, count, title, size, profile)
            results[impl].append(result)
            show(round_, result)
    print(f"  ({time.monotonic() - began:.0f} s; load now {' '.join(f'{v:.2f}' for v in os.getloadavg())})")

    def summary(impl: str) -> dict[str, float | None]:
        runs = results[impl]
        return {
            "delivered": median([min(r.delivered) for r in runs]),
            "p50": median([r.quantile(0.5) for r in runs]),
            "p99": median([r.quantile(0.99) for r in runs]),
            "rate": median([r.rate for r in runs]),
            "span": median([r.span for r in runs]),
        }

    ours, raw = summary("msuite"), summary("libp2p")
    extra = summary("pubsub") if with_pubsub else None
    rows = (
        ("delivered, worst receiver", "delivered", "{:.1f}%"),
        ("p50 latency, of delivered", "p50", "{:.1f} ms"),
        ("p99 latency, of delivered", "p99", "{:.1f} ms"),
        ("publish rate", "rate", "{:,.0f}/s"),
        ("first publish -> last delivery", "span", "{:.2f} s"),
    )
    header = f"{f'median of {rounds} rounds':32}{'msuite events':>16}{'py-libp2p default':>19}{'ratio':>9}"
    print(header + (f"{'msuite pubsub':>16}" if extra else ""))
    for label, key, form in rows:
        a, b = ours[key], raw[key]
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        line = f"  {label:30}{_fmt(form, a):>16}{_fmt(form, b):>19}{ratio:>9}"
        if extra:
            line += f"{_fmt(form, extra[key]):>16}"
        print(line)
    whole = all(min(r.delivered) == 100.0 for r in results["msuite"])
    p99 = ours["p99"]
    met = whole and p99 is not None and p99 < 50
    worst = max((r.quantile(0.99) or 0.0) for r in results["msuite"])
    print(
        f"events burst {count}: msuite {_fmt('{:.1f}%', ours['delivered'])} p99 {ms(p99)} "
        f"vs py-libp2p default {_fmt('{:.1f}%', raw['delivered'])} p99 {ms(raw['p99'])}; "
        f"goal (100% in every round, p99 < 50 ms): {'met' if met else 'NOT met'} "
        f"(every round whole: {'yes' if whole else 'no'}, worst round p99 {ms(worst)})"
    )


def _fmt(form: str, value: float | None) -> str:
    return "-" if value is None else form.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="events in the burst (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--title", type=int, default=128, help="characters of each event's title")
    parser.add_argument("--with-pubsub", action="store_true", help="also msuite's raw pubsub, no events")
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile each msuite process's asyncio thread into DIR"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--title-text", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "libp2p":
        return child_libp2p(args.role, args.count, args.size)
    if args.child in ("msuite", "pubsub"):
        if not args.profile:
            return child_msuite(args.role, args.child, args.count, args.title_text, args.size)
        import cProfile

        with cProfile.Profile() as profile:
            child_msuite(args.role, args.child, args.count, args.title_text, args.size)
        profile.dump_stats(os.path.join(args.profile, f"{args.child}-{args.role}-{os.getpid()}.prof"))
        return None
    try:
        asyncio.run(compare(args.count, args.rounds, args.title, args.with_pubsub, args.profile))
    except RuntimeError as error:  # a child failed or did not answer in time
        raise SystemExit(f"bench_events: {error}") from None
    return None


if __name__ == "__main__":
    main()
