"""The gRPC pipe's local side (runtime/p2p/grpc_tunnel.py), on real Unix sockets."""

from __future__ import annotations

import contextlib
import os
import socket

import trio

from msuite.runtime.p2p.grpc_tunnel import connect_unix


def test_a_full_accept_queue_is_waited_out_not_returned_unconnected() -> None:
    name = f"\0msuite-test-backlog-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    queued: list[socket.socket] = []
    try:
        while True:  # fill the accept queue until Linux refuses with EAGAIN
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            queued.append(client)
            try:
                client.connect(name)
            except BlockingIOError:
                queued.pop().close()
                break
            assert len(queued) < 100, "the accept queue never filled"

        async def main() -> tuple[str, float]:
            async def make_room() -> None:
                await trio.sleep(0.2)
                accepted, _ = listener.accept()
                accepted.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(make_room)
                began = trio.current_time()
                sock = await connect_unix(name)
                waited = trio.current_time() - began
            try:
                return sock.getpeername(), waited
            finally:
                sock.close()

        peer, waited = trio.run(main)
        assert peer == name.encode()  # connected, not a socket that only looks ready
        assert waited >= 0.15  # it waited for the room the server made
    finally:
        for client in queued:
            client.close()
        with contextlib.suppress(OSError):
            listener.close()
