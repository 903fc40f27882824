"""msuite's adjustments to py-libp2p (runtime/p2p/compat.py): one test per adjustment, the version
gate, and that none of them reaches another py-libp2p user in the same process. Real hosts over
loopback TCP."""

from __future__ import annotations

import logging
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub import pubsub as libp2p_pubsub
from libp2p.pubsub import rpc_queue
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.yamux import yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from libp2p.tools.anyio_service import background_trio_service

from msuite.runtime.p2p import compat
from msuite.runtime.p2p.host import build_host, listen_multiaddr
from tests.runtime.p2p.raw_peer import plain_host  # another py-libp2p user's host: nothing of msuite's

PROTOCOL = TProtocol("/msuite/test/compat/1.0.0")
LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
SERIES = (
    "yamux_credit",
    "pubsub_subscription_channel",
    "pubsub_outbound_queue",
    "forget_failed_dial",
    "log_routing",
)
"""Adjustments written for the 0.8 series: used wherever py-libp2p has what they touch."""
VERIFIED = (
    "yamux_whole_writes",
    "pubsub_bad_frames",
    "pubsub_seqno",
    "gossipsub_flood_publish",
    "gossipsub_record_once",
    "gossipsub_idontwant_threshold",
    "stream_guard",
    "identify_agent",
    "host_addrs_cache",
    "pubsub_coalesced_writes",
    "pubsub_ordered_handling",
)
"""Adjustments verified on 0.8.1 only: left out on any other version."""
ALL = SERIES + VERIFIED


@pytest.fixture(autouse=True)
def installed_version() -> Iterator[None]:
    """Every test starts and ends with apply() for the installed py-libp2p."""
    compat.apply()
    yield
    compat.apply()


def msuite_host() -> Any:
    """A host as msuite builds it: build_host, credit in batches."""
    host = build_host(create_new_key_pair())
    compat.batch_yamux_credit(host)  # what build_host does (a second call changes nothing)
    return host


@asynccontextmanager
async def pair(
    build: Callable[[], Any], handler: Callable[[Any], Awaitable[None]] | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """Two running hosts built by ``build``, the first connected to the second."""
    client, server = build(), build()
    if handler is not None:
        server.set_stream_handler(PROTOCOL, handler)
    async with client.run(LOOPBACK), server.run(LOOPBACK):
        await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
        yield client, server
        for host in (client, server):
            await host.close()


def count_credit_updates(client: Any, server: Any) -> Counter[str]:
    """Counts the pure window-update frames both ends of this pair's connection write."""
    seen: Counter[str] = Counter()
    ends = [(client, server.get_id()), (server, client.get_id())]
    for host, peer in ends:
        for conn in host.get_network().get_connections(peer):
            secured = conn.muxed_conn.secured_conn
            write = secured.write

            async def counting(data: bytes, write: Any = write) -> None:
                _, kind, flags, _, _ = struct.unpack(yamux.YAMUX_HEADER_FORMAT, data[: yamux.HEADER_SIZE])
                if kind == yamux.TYPE_WINDOW_UPDATE and flags == 0:
                    seen["window_update"] += 1
                await write(data)

            secured.write = counting  # this connection only: the frames still go out
    return seen


# ---------------------------------------------------------------------------- apply and the version gate


def test_apply_activates_every_adjustment_for_the_installed_version_and_twice_is_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = compat.apply()
    with caplog.at_level(logging.DEBUG, logger="msuite.p2p"):
        second = compat.apply()
    assert first == second == compat.status()
    assert first["in_range"] is True
    assert first["written_for"] == "0.8.x"
    assert first["patches"] == dict.fromkeys(ALL, True)
    assert not caplog.records  # nothing logged a second time


def test_the_version_gate_refuses_a_version_it_was_not_written_for(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="msuite.p2p"):
        refused = compat.apply(version="0.9.0")
        compat.apply(version="0.9.0")
    assert refused["libp2p"] == "0.9.0"
    assert refused["in_range"] is False
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0] == (
        "py-libp2p 0.9.0 is not 0.8.x, which msuite's adjustments to it were written for: "
        "each is used only where py-libp2p still has what it touches"
    )
    # one warning per adjustment verified on other versions only, saying what is lost
    assert sorted(w.split("'s ")[1].split(" ")[0] for w in warnings[1:]) == sorted(VERIFIED)
    assert all("was verified on 0.8.1 only: left out, so " in w for w in warnings[1:])
    # outside the range the older ones decide by what they touch (this py-libp2p has it all);
    # the newer ones are left out on any version they were not verified on
    assert refused["patches"] == {**dict.fromkeys(SERIES, True), **dict.fromkeys(VERIFIED, False)}
    assert compat.apply(version="0.8.0")["patches"] == refused["patches"]
    assert compat.apply()["in_range"] is True
    assert [compat.in_range(v) for v in ("0.8.0", "0.8.1", "0.8.12.dev3", "0.8rc1")] == [True] * 4
    assert [compat.in_range(v) for v in ("0.9.0", "0.80.1", "1.8.0", "0.7.9", "unknown")] == [False] * 5


def test_what_an_adjustment_touches_is_checked_by_name() -> None:
    class Stand:
        present = 1
        annotated: int

    assert compat._missing_attributes(Stand, ("present", "annotated")) == []
    assert compat._missing_attributes(Stand, ("present", "absent")) == ["Stand.absent"]


# ---------------------------------------------------------------------------- yamux credit, scoped


def test_credit_in_batches_on_msuite_hosts_only_another_libp2p_user_keeps_its_own() -> None:
    """Both pairs in one process at once, after apply(): msuite's batches, the plain one is untouched."""
    exchanges = 200
    original = YamuxStream.__dict__["_auto_tune_and_send_window_update"]
    kinds: dict[str, set[type]] = {"msuite": set(), "plain": set()}
    updates: dict[str, Counter[str]] = {}

    def echo(name: str) -> Callable[[Any], Awaitable[None]]:
        async def serve(stream: Any) -> None:
            kinds[name].add(type(stream.muxed_stream))
            while data := await stream.read(65536):
                await stream.write(data)

        return serve

    async def exchange(name: str, build: Callable[[], Any]) -> None:
        async with pair(build, echo(name)) as (client, server):
            updates[name] = count_credit_updates(client, server)
            stream = await client.new_stream(server.get_id(), [PROTOCOL])
            kinds[name].add(type(stream.muxed_stream))
            for i in range(exchanges):
                message = b"%05d" % i * 12
                await stream.write(message)
                assert await stream.read(65536) == message
                await trio.sleep(0)  # the other pair's turn
            await stream.close()

    async def main() -> None:
        assert compat.apply()["patches"]["yamux_credit"]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange, "msuite", msuite_host)
                nursery.start_soon(exchange, "plain", plain_host)

    trio.run(main)
    assert kinds == {"msuite": {compat.MsuiteStream}, "plain": {YamuxStream}}
    assert issubclass(compat.MsuiteStream, compat.BatchedCreditStream)
    # py-libp2p's class keeps py-libp2p's own method
    assert YamuxStream.__dict__["_auto_tune_and_send_window_update"] is original
    assert original.__module__ == "libp2p.stream_muxer.yamux.yamux"
    # py-libp2p's rule: an update after nearly every read, on both ends
    assert updates["plain"]["window_update"] >= exchanges, updates
    # msuite's: 12 KB each way is far below half the 256 KiB window, so none
    assert updates["msuite"]["window_update"] <= 2, updates


def test_credit_in_batches_is_registered_once_per_host() -> None:
    host = msuite_host()
    assert compat.batch_yamux_credit(host)
    notifees = [n for n in host.get_network().notifees if type(n).__name__ == "_StreamNotifee"]
    assert len(notifees) == 1


# ---------------------------------------------------------------------------- pubsub sizes, scoped


@asynccontextmanager
async def running_pubsub(host: Any, sized: bool) -> AsyncIterator[Pubsub]:
    router = GossipSub(protocols=[PROTOCOL_ID], degree=6, degree_low=4, degree_high=12, heartbeat_interval=1)
    if sized:
        pubsub = compat.sized_pubsub(
            host, router, subscription_channel=1024, outbound_queue=4096, strict_signing=True
        )
    else:
        pubsub = Pubsub(host, router, strict_signing=True)
    try:
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            yield pubsub
    finally:
        pubsub.seen_messages.stop()


def test_a_subscription_holds_the_sized_channel_on_msuite_pubsub_only() -> None:
    """Own messages, published without reading: msuite's subscription keeps 300, a plain one 32."""
    held: dict[str, int] = {}

    async def fill(name: str, sized: bool) -> None:
        host = msuite_host() if sized else plain_host()
        async with host.run(LOOPBACK), running_pubsub(host, sized) as pubsub:
            subscription = await pubsub.subscribe("burst")
            for i in range(300):
                await pubsub.publish("burst", b"%d" % i)
            received = []
            with trio.move_on_after(0.5):
                while True:
                    received.append(int((await subscription.get()).data))
            assert received == list(range(len(received)))  # in order, the overflow lost
            held[name] = len(received)
            await pubsub.unsubscribe("burst")
            await host.close()

    async def main() -> None:
        with trio.fail_after(30):
            await fill("msuite", sized=True)
            await fill("plain", sized=False)

    trio.run(main)
    assert held == {"msuite": 300, "plain": libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE}
    assert libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE == 32  # py-libp2p's global is untouched


def test_a_peer_queue_holds_the_sized_count_on_msuite_pubsub_only() -> None:
    """RPCs pushed at once onto each peer's outbound queue: msuite's takes 4,096, a plain one 32."""
    accepted: dict[str, int] = {}

    async def push(name: str, build: Callable[[], Any], sized: bool) -> None:
        client, server = build(), build()
        async with client.run(LOOPBACK), server.run(LOOPBACK), AsyncExitStack() as stack:
            mine = await stack.enter_async_context(running_pubsub(client, sized))
            await stack.enter_async_context(running_pubsub(server, sized))
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))  # pubsub sees it
            with trio.fail_after(10):
                while server.get_id() not in mine.peer_queues:
                    await trio.sleep(0.01)
            queue = mine.peer_queues[server.get_id()]
            rpc = rpc_pb2.RPC()
            # no await in between: the sending task cannot drain the queue meanwhile
            accepted[name] = sum(queue.push(rpc) for _ in range(5000))
            await stack.aclose()
            for host in (client, server):
                await host.close()

    async def main() -> None:
        with trio.fail_after(30):
            await push("msuite", msuite_host, sized=True)
            await push("plain", plain_host, sized=False)

    trio.run(main)
    assert accepted == {"msuite": 4096, "plain": rpc_queue.OutBoundQueueSize}
    assert libp2p_pubsub.RpcQueue is rpc_queue.RpcQueue  # py-libp2p's global is untouched


# ---------------------------------------------------------------------------- forgetting a failed dial


def test_a_failed_dial_is_forgotten_so_a_peer_that_came_up_is_dialled_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        dialler, late = msuite_host(), msuite_host()
        address = listen_multiaddr("127.0.0.1", port)
        info = PeerInfo(late.get_id(), [address])
        async with dialler.run(LOOPBACK):
            with pytest.raises(SwarmException):  # nobody listens yet
                await dialler.connect(info)
            async with late.run([address]):
                with pytest.raises(SwarmException, match="negative cache"):  # py-libp2p's 60 s
                    await dialler.connect(info)
                compat.forget_failed_dial(dialler, late.get_id())
                with trio.fail_after(10):
                    await dialler.connect(info)
                assert dialler.get_network().get_connections(late.get_id())
                await late.close()
            await dialler.close()

    trio.run(main)


# ---------------------------------------------------------------------------- py-libp2p's logs


def test_libp2p_records_reach_the_process_logging_with_failed_opens_demoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    compat.route_logs()
    compat.route_logs()
    swarm = logging.getLogger("libp2p.network.swarm")
    assert [type(f).__name__ for f in swarm.filters].count("_Demote") == 1
    assert logging.getLogger("libp2p").propagate
    with caplog.at_level(logging.INFO):
        swarm.error("Failed to dial peer X: connection refused")
        swarm.warning("a warning of py-libp2p's own")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("libp2p.network.swarm", "WARNING", "a warning of py-libp2p's own")
    ]


# ---------------------------------------------------------------------------- whole writes, the guard, identify


def test_concurrent_writes_on_one_stream_stay_whole_on_msuite_hosts() -> None:
    """Two tasks write 150 KB messages on one stream at once (each more than one 64 KiB frame),
    the reader is slow (the window runs short): every message arrives whole. py-libp2p's own
    stream let the frames of the two writes interleave (how a joining node lost its host)."""
    size, each = 150 * 1024, 4
    messages: list[bytes] = []

    async def slow_reader(stream: Any) -> None:
        buffer = b""
        while True:
            await trio.sleep(0.02)
            try:
                chunk = await stream.read(16 * 1024)
            except Exception:
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 4:
                length = int.from_bytes(buffer[:4], "big")
                if length != size:  # a length prefix read from the middle of another message
                    messages.append(b"cut")
                    return
                if len(buffer) < 4 + length:
                    break
                messages.append(buffer[4 : 4 + length])
                buffer = buffer[4 + length :]

    async def main() -> None:
        async with pair(msuite_host, slow_reader) as (client, server):
            stream = await client.new_stream(server.get_id(), [PROTOCOL])
            assert isinstance(stream.muxed_stream, compat.WholeWriteStream)

            async def writer(mark: int) -> None:
                for _ in range(each):
                    await stream.write(size.to_bytes(4, "big") + bytes([mark]) * size)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(writer, 1)
                    nursery.start_soon(writer, 2)
                await stream.close()
                while len(messages) < 2 * each and b"cut" not in messages:
                    await trio.sleep(0.05)

    trio.run(main)
    assert b"cut" not in messages
    assert len(messages) == 2 * each
    assert all(len(m) == size and m == bytes([m[0]]) * size for m in messages)  # none cut into by another
    assert sorted(m[0] for m in messages) == [1] * each + [2] * each


def test_a_handler_that_raises_resets_its_stream_only_and_is_reported() -> None:
    faults: list[tuple[str, str, str]] = []

    async def broken(stream: Any) -> None:
        await stream.read(1)
        raise ValueError("the handler broke")

    async def echo(stream: Any) -> None:
        await stream.write(await stream.read(100))
        await stream.close()

    async def main() -> None:
        client, server = (
            msuite_host(),
            build_host(
                create_new_key_pair(),
                lambda peer, protocol, error: faults.append((peer, protocol, repr(error))),
            ),
        )
        server.set_stream_handler(PROTOCOL, broken)
        server.set_stream_handler(TProtocol("/msuite/test/echo/1.0.0"), echo)
        async with client.run(LOOPBACK), server.run(LOOPBACK):
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            with trio.fail_after(20):
                for _ in range(3):
                    stream = await client.new_stream(server.get_id(), [PROTOCOL])
                    await stream.write(b"x")
                    with pytest.raises(Exception):  # noqa: B017 - reset: py-libp2p's errors vary
                        while await stream.read(10):
                            pass
                # the host goes on: another protocol on the same connection answers
                stream = await client.new_stream(server.get_id(), [TProtocol("/msuite/test/echo/1.0.0")])
                await stream.write(b"still")
                assert await stream.read(100) == b"still"
            for host in (client, server):
                await host.close()

    trio.run(main)
    assert len(faults) == 3
    assert faults[0][1:] == (str(PROTOCOL), "ValueError('the handler broke')")


def test_message_numbers_start_at_the_time_in_nanoseconds_on_msuite_pubsub_only() -> None:
    import time

    async def main() -> None:
        host, plain = msuite_host(), plain_host()
        router = GossipSub(protocols=[PROTOCOL_ID], degree=6, degree_low=4, degree_high=12)
        before = time.time_ns()
        mine = compat.sized_pubsub(host, router, subscription_channel=8, outbound_queue=8)
        theirs = Pubsub(plain, GossipSub(protocols=[PROTOCOL_ID], degree=6, degree_low=4, degree_high=12))
        assert before <= mine.counter <= time.time_ns()
        assert abs(theirs.counter - int(time.time())) <= 2  # py-libp2p's own: seconds
        for pubsub in (mine, theirs):
            pubsub.seen_messages.stop()

    trio.run(main)


def test_identify_answers_msuite_on_msuite_hosts_only() -> None:
    from libp2p.identity.identify.identify import ID, parse_identify_response
    from libp2p.network.stream.exceptions import StreamEOF

    import msuite

    agents: dict[str, str] = {}

    async def ask(name: str, build: Callable[[], Any]) -> None:
        async with pair(build) as (client, server):
            stream = await client.new_stream(server.get_id(), [ID])
            response = b""
            with trio.fail_after(10):
                try:
                    while chunk := await stream.read(65536):
                        response += chunk
                except StreamEOF:
                    pass
            agents[name] = parse_identify_response(response).agent_version

    async def main() -> None:
        await ask("msuite", msuite_host)
        await ask("plain", plain_host)

    trio.run(main)
    assert agents == {"msuite": f"msuite/{msuite.__version__}", "plain": "py-libp2p/0.8.1"}


# ---------------------------------------------------------------------------- addresses, pubsub writes and reads


def test_the_hosts_addresses_are_built_once_per_listening_socket_on_msuite_hosts_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p rebuilt them on every call (pubsub asks for every message): msuite's host answers
    the same from a cache, rebuilt when it listens on something more; a plain host is untouched."""
    from libp2p.host.basic_host import BasicHost
    from libp2p.transport.tcp import tcp

    built = Counter[str]()
    original = tcp._multiaddr_from_socket

    def counting(socket: Any) -> Any:
        built["addr"] += 1
        return original(socket)

    monkeypatch.setattr(tcp, "_multiaddr_from_socket", counting)

    async def main() -> None:
        host, plain = msuite_host(), plain_host()
        async with host.run(LOOPBACK), plain.run(LOOPBACK):
            first = host.get_addrs()
            assert first == BasicHost.get_addrs(host)  # py-libp2p's own answer
            built.clear()
            answers = [host.get_addrs() for _ in range(200)]
            assert all(a == first and a is not answers[0] for a in answers[1:])  # a new list each time
            assert built["addr"] == 0
            with socket.socket() as probe:  # a port of its own: the swarm skips an address it has
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            await host.get_network().listen(multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"))
            second = host.get_addrs()
            assert len(second) == len(first) + 1 and set(first) < set(second)
            assert second == BasicHost.get_addrs(host)
            assert type(plain).get_addrs is BasicHost.get_addrs and "get_addrs" not in vars(plain)
            for each in (host, plain):
                await each.close()

    trio.run(main)


def signed_publish(host: Any, topic: str, data: bytes, seqno: int) -> rpc_pb2.Message:
    """A publish message from ``host``, signed as py-libp2p's Pubsub signs its own."""
    from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

    message = rpc_pb2.Message(
        data=data, topicIDs=[topic], from_id=host.get_id().to_bytes(), seqno=seqno.to_bytes(8, "big")
    )
    message.signature = host.get_private_key().sign(
        PUBSUB_SIGNING_PREFIX.encode() + message.SerializeToString()
    )
    message.key = host.get_public_key().serialize()
    return message


def test_queued_rpcs_go_out_together_and_a_plain_peer_reads_each_in_order() -> None:
    """300 publishes queued at once for one peer: msuite's sending loop writes them in a few writes
    (py-libp2p: one each); a plain py-libp2p subscriber checks each signature and gets all, in order."""
    got: list[int] = []
    writes: list[int] = []

    async def main() -> None:
        client, server = msuite_host(), plain_host()
        async with client.run(LOOPBACK), server.run(LOOPBACK), AsyncExitStack() as stack:
            mine = await stack.enter_async_context(running_pubsub(client, sized=True))
            theirs = await stack.enter_async_context(running_pubsub(server, sized=False))
            subscription = await theirs.subscribe("burst")
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            with trio.fail_after(10):
                while server.get_id() not in mine.peer_queues or server.get_id() not in mine.peers:
                    await trio.sleep(0.01)
            stream = mine.peers[server.get_id()]
            write = stream.write

            async def counting(data: bytes) -> None:
                writes.append(len(data))
                await write(data)

            stream.write = counting
            queue = mine.peer_queues[server.get_id()]
            for i in range(300):  # no await in between: the sending loop finds all 300 queued
                queue.push(rpc_pb2.RPC(publish=[signed_publish(client, "burst", b"%d" % i, i + 1)]))
            with trio.fail_after(20):
                while len(got) < 300:
                    got.append(int((await subscription.get()).data))
            await stack.aclose()
            for host in (client, server):
                await host.close()

    trio.run(main)
    assert got == list(range(300))
    assert 1 <= len(writes) <= 5  # 300 RPCs of about 150 bytes: under 64 KiB a write


def test_rpcs_arriving_in_one_frame_are_read_from_one_read_and_handled_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain peer writes 300 signed publishes in one write: msuite's reader takes them with a few
    reads of its stream (py-libp2p: three or more per RPC) and handles every one in one task (py-libp2p
    starts a managed task per message), delivering them in order."""
    from libp2p.network.stream.net_stream import NetStream
    from libp2p.utils.varint import encode_uvarint

    got: list[int] = []
    reads = Counter[int]()
    read = NetStream.read

    async def counting(self: NetStream, n: int | None = None) -> bytes:
        reads[id(self)] += 1
        return await read(self, n)

    monkeypatch.setattr(NetStream, "read", counting)  # from before the stream exists
    from libp2p.tools.anyio_service.trio_manager import TrioManager

    tasks = Counter[str]()
    run_task = TrioManager.run_task

    def counting_tasks(self: TrioManager, async_fn: Any, *args: Any, **kwargs: Any) -> None:
        tasks[getattr(async_fn, "__name__", "?")] += 1
        run_task(self, async_fn, *args, **kwargs)

    monkeypatch.setattr(TrioManager, "run_task", counting_tasks)

    async def main() -> None:
        server, client = msuite_host(), plain_host()
        async with client.run(LOOPBACK), server.run(LOOPBACK), AsyncExitStack() as stack:
            mine = await stack.enter_async_context(running_pubsub(server, sized=True))
            subscription = await mine.subscribe("burst")
            await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
            stream = await client.new_stream(server.get_id(), [PROTOCOL_ID])
            with trio.fail_after(10):
                while not mine._inbound:  # type: ignore[attr-defined]
                    await trio.sleep(0.01)
            (inbound,) = mine._inbound  # type: ignore[attr-defined]
            frames = []
            for i in range(300):
                rpc = rpc_pb2.RPC(publish=[signed_publish(client, "burst", b"%d" % i, i + 1)])
                data = rpc.SerializeToString()
                frames.append(encode_uvarint(len(data)) + data)
            before = reads[id(inbound)]
            await stream.write(b"".join(frames))
            with trio.fail_after(20):
                while len(got) < 300:
                    got.append(int((await subscription.get()).data))
            assert 1 <= reads[id(inbound)] - before + 1 <= 10  # + the read already waiting
            await stack.aclose()
            for host in (client, server):
                await host.close()

    trio.run(main)
    assert got == list(range(300))
    assert tasks["push_msg"] == 0  # py-libp2p: a managed task per message; msuite: one task for all


def test_an_error_handling_an_inbound_message_fails_the_pubsub_service_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inbound messages are handled in one task on msuite's Pubsub: an error there still fails the
    service and comes out of it, as it did from py-libp2p's task per message (a plain Pubsub)."""
    from libp2p.utils.varint import encode_uvarint

    async def broken(self: Pubsub, *args: Any) -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(Pubsub, "push_msg", broken)
    outcome: dict[str, list[str]] = {}

    def leaves(error: BaseException) -> list[str]:
        if isinstance(error, BaseExceptionGroup):
            return [leaf for inner in error.exceptions for leaf in leaves(inner)]
        return [str(error)]

    async def send_one(name: str, build: Callable[[], Any], sized: bool) -> None:
        server, client = build(), plain_host()
        async with client.run(LOOPBACK), server.run(LOOPBACK):
            try:
                async with running_pubsub(server, sized) as mine:
                    await mine.subscribe("burst")
                    await client.connect(PeerInfo(server.get_id(), server.get_addrs()))
                    stream = await client.new_stream(server.get_id(), [PROTOCOL_ID])
                    rpc = rpc_pb2.RPC(publish=[signed_publish(client, "burst", b"x", 1)])
                    data = rpc.SerializeToString()
                    await stream.write(encode_uvarint(len(data)) + data)
                    await trio.sleep(10)  # the service's failure cancels this
                    outcome[name] = []
            except Exception as exc:
                outcome[name] = leaves(exc)
            for host in (client, server):
                await host.close()

    async def main() -> None:
        with trio.fail_after(30):
            await send_one("msuite", msuite_host, sized=True)
            await send_one("plain", plain_host, sized=False)

    trio.run(main)
    assert "broken on purpose" in outcome["msuite"]
    assert "broken on purpose" in outcome["plain"]
