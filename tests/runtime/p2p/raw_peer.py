"""A plain py-libp2p peer (nothing of msuite's) in its own process, for multi-process tests.

``python -m tests.runtime.p2p.raw_peer MODE ADDR [COUNT]`` dials ADDR (a multiaddr ending in
``/p2p/<peer id>``) and prints one JSON line:

- ``flood ADDR COUNT``: COUNT times, opens a ``/meshsub/1.1.0`` stream and sends one 13-byte
  frame that is not a protobuf RPC, then reads until the other side ends the stream;
  prints ``{"sent": n, "ended": n, "connected": bool}`` (still connected at the end);
- ``identify ADDR``: asks identify (``/ipfs/id/1.0.0``); prints what the node says it is:
  ``{"agent_version": ..., "protocol_version": ..., "protocols": [...]}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

GARBAGE = b"\x0d" + b"\xff\xfe not protobuf"[:13]
"""A length prefix of 13, then 13 bytes no protobuf parser accepts."""


def plain_host() -> Any:
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


async def flood(host: Any, peer: Any, count: int) -> dict[str, Any]:
    sent = ended = 0
    for _ in range(count):
        stream = await host.new_stream(peer, [TProtocol("/meshsub/1.1.0")])
        await stream.write(GARBAGE)
        sent += 1
        with trio.move_on_after(10):
            try:
                while await stream.read(1024):
                    pass
            except Exception:
                pass
            ended += 1
    connected = bool(host.get_network().get_connections(peer))
    return {"sent": sent, "ended": ended, "connected": connected}


async def identify(host: Any, peer: Any) -> dict[str, Any]:
    from libp2p.identity.identify.identify import ID, parse_identify_response
    from libp2p.network.stream.exceptions import StreamEOF

    stream = await host.new_stream(peer, [ID])
    response = b""
    with trio.fail_after(10):
        try:
            while chunk := await stream.read(65536):
                response += chunk
        except StreamEOF:  # the answer is complete: the node closed the stream
            pass
    message = parse_identify_response(response)
    return {
        "agent_version": message.agent_version,
        "protocol_version": message.protocol_version,
        "protocols": list(message.protocols),
    }


async def main(mode: str, address: str, count: int) -> None:
    host = plain_host()
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(10):
            await host.connect(info)
        if mode == "flood":
            result = await flood(host, info.peer_id, count)
        else:
            result = await identify(host, info.peer_id)
        print(json.dumps(result), flush=True)
        await host.close()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
