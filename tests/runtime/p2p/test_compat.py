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
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub import pubsub as libp2p_pubsub
from libp2p.pubsub import rpc_queue
from libp2p.pubsub.gossipsub import PROTOCOL_ID, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux import yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.tcp.tcp import TCP

from msuite.runtime.p2p import compat
from msuite.runtime.p2p.host import build_host, listen_multiaddr

PROTOCOL = TProtocol("/msuite/test/compat/1.0.0")
LOOPBACK = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
ALL = (
    "yamux_credit",
    "pubsub_subscription_channel",
    "pubsub_outbound_queue",
    "forget_failed_dial",
    "log_routing",
)


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


def plain_host() -> Any:
    """Another py-libp2p user's host in the same process: the same stack, nothing of msuite's."""
    keys = create_new_key_pair()
    return new_host(
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
    assert warnings == [
        "py-libp2p 0.9.0 is not 0.8.x, which msuite's adjustments to it were written for: "
        "each is used only where py-libp2p still has what it touches"
    ]
    # outside the range each adjustment decides by what it touches: this py-libp2p has it all
    assert refused["patches"] == dict.fromkeys(ALL, True)
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
    assert kinds == {"msuite": {compat.BatchedCreditStream}, "plain": {YamuxStream}}
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
    notifees = [n for n in host.get_network().notifees if type(n).__name__ == "_CreditNotifee"]
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
