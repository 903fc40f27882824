"""A plain py-libp2p GossipSub peer (nothing of msuite's) speaking the events wire format by hand.

``python -m tests.runtime.events.raw_events_peer ADDR TOPIC`` dials ADDR (a multiaddr ending
in ``/p2p/<peer id>``), subscribes to TOPIC (StrictSign, as every libp2p implementation
expects), prints ``ready <peer id>`` once the node is in its mesh for TOPIC, then takes one
command per line on stdin:

- ``publish <base64>``: publishes those bytes on TOPIC as they are; answers ``ok``;
- ``quit``: exits.

Every message another peer publishes on TOPIC is printed as ``got <base64>``.
Its envelopes are written with ``json`` by the test, never with msuite's encoder: this peer
is what a non-Python libp2p node following ``docs/events.md`` does.
"""

from __future__ import annotations

import base64
import sys

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from tests.runtime.p2p.raw_peer import plain_host


def say(line: str) -> None:
    print(line, flush=True)


async def main(address: str, topic: str) -> None:
    host = plain_host()
    router = GossipSub(  # spam protection off: py-libp2p's would silently drop its own 11th publish
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router, strict_signing=True)
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with (
        host.run(listen_addrs=listen),
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        await pubsub.wait_until_ready()
        with trio.fail_after(10):
            await host.connect(info)
        subscription = await pubsub.subscribe(topic)
        with trio.fail_after(20):  # the node is in this peer's mesh: publishes reach it
            while info.peer_id not in router.mesh.get(topic, set()):
                await trio.sleep(0.05)
        say(f"ready {host.get_id()}")
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    message = await subscription.get()
                    if message.from_id != host.get_id().to_bytes():
                        say("got " + base64.b64encode(message.data).decode())

            nursery.start_soon(read)
            stdin = trio.wrap_file(sys.stdin)
            async for line in stdin:
                command, _, argument = line.strip().partition(" ")
                if command == "publish":
                    await pubsub.publish(topic, base64.b64decode(argument))
                    say("ok")
                elif command == "quit":
                    break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
