"""A real msuite node in its own process, driven line by line over stdin/stdout (multi-process tests).

Run as ``python -m tests.runtime.p2p.peer_process NAME REPO [BOOTSTRAP...]`` (REPO is a folder or
``:memory:``). It prints ``ready <peer id> <multiaddr>`` once the node runs, then answers one
line per command:

- ``subscribe TOPIC``: count what arrives on TOPIC, per sender; answers ``ok``;
- ``publish TOPIC COUNT SIZE``: publish COUNT messages of SIZE bytes at once; answers ``ok``;
- ``stream TOPIC SIZE RATE``: publish SIZE-byte messages RATE times a second in the
  background until ``quiet``; answers ``ok``;
- ``quiet``: stop streaming; answers ``ok``;
- ``status``: answers one JSON line: ``state``, ``health`` (None or why not), ``failed``
  (the host's failed services), ``peers``, ``received`` ({sender: count}),
  ``seqnos`` ({sender: last seqno}), ``published``, ``publish_errors`` and the last
  ``error``, ``bad_frames`` (the host's count);
- ``joins COUNT TOPIC STAY BUSY BOOTSTRAP``: COUNT times, one after the other, start a fresh
  node (a new identity, its own host) bootstrapped to BOOTSTRAP, subscribe to TOPIC, keep its
  trio thread busy for BUSY seconds (it reads slowly, as a node starting in a fresh process
  or on a loaded machine does), let it run STAY seconds, publish one message, read its state
  and stop it; answers one JSON line, a list with per join: ``failed``, ``health``,
  ``bad_frames``, ``publish_error``, ``received``;
- ``quit``: stops the node and exits 0.

The node logs to stderr (WARNING and up), so a test can look for what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from msuite.runtime.node import Node
from msuite.spec import Manifest


async def hog(seconds: float) -> None:
    """In the trio thread: busy for ``seconds``, letting other trio tasks run a moment every 20 ms."""
    import trio

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)  # the trio thread does nothing else meanwhile
        await trio.sleep(0)


async def main(name: str, repo: str, bootstrap: list[str]) -> None:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    node = Node(
        Manifest.model_validate({"name": name, "repo": repo, "p2p": {"port": 0, "bootstrap": bootstrap}})
    )
    received: dict[str, int] = {}
    seqnos: dict[str, int] = {}
    counters = {"published": 0, "publish_errors": 0}
    last_error = [""]
    streaming: list[asyncio.Task[None]] = []

    async def on_message(message: Any) -> None:
        received[message.sender] = received.get(message.sender, 0) + 1
        seqnos[message.sender] = message.seqno

    async def publish(topic: str, data: bytes) -> None:
        try:
            await node.p2p.pubsub.publish(topic, data)
            counters["published"] += 1
        except Exception as exc:
            counters["publish_errors"] += 1
            last_error[0] = f"{type(exc).__name__}: {exc}"

    async def stream(topic: str, size: int, rate: float) -> None:
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        while True:
            sent += 1
            await publish(topic, (b"%08d" % sent).ljust(size, b"."))
            await asyncio.sleep(max(began + sent / rate - loop.time(), 0))

    def status() -> dict[str, Any]:
        p2p = node.p2p
        return {
            "state": p2p.state,
            "health": p2p.health(),
            "failed": dict(p2p.failed),
            "peers": sorted(peer["id"] for peer in p2p.peers()),
            "received": dict(received),
            "seqnos": dict(seqnos),
            "published": counters["published"],
            "publish_errors": counters["publish_errors"],
            "error": last_error[0],
            "bad_frames": p2p.status()["stream_errors"]["count"],
        }

    async def joins(count: int, topic: str, stay: float, busy: float, bootstrap: str) -> list[dict[str, Any]]:
        outcomes = []
        for i in range(count):
            joiner = Node(
                Manifest.model_validate(
                    {
                        "name": f"{name}-join{i}",
                        "repo": ":memory:",
                        "p2p": {"port": 0, "bootstrap": [bootstrap]},
                    }
                )
            )
            heard = [0]

            async def count_message(message: Any, heard: list[int] = heard) -> None:
                heard[0] += 1

            async with joiner:
                await joiner.p2p.pubsub.subscribe(topic, count_message)
                await joiner.p2p.bridge.run(hog, busy)
                await asyncio.sleep(stay)
                error = ""
                try:
                    await joiner.p2p.pubsub.publish(topic, b"joined")
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                p2p = joiner.p2p
                outcomes.append(
                    {
                        "failed": dict(p2p.failed),
                        "health": p2p.health(),
                        "bad_frames": p2p.status()["stream_errors"]["count"],
                        "publish_error": error,
                        "received": heard[0],
                    }
                )
        return outcomes

    async with node:
        print("ready", node.p2p.peer_id, node.p2p.addrs[0], flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                break
            command, args = words[0], words[1:]
            if command == "subscribe":
                await node.p2p.pubsub.subscribe(args[0], on_message)
                answer: Any = "ok"
            elif command == "publish":
                topic, count, size = args[0], int(args[1]), int(args[2])
                for i in range(count):
                    await publish(topic, (b"%08d" % i).ljust(size, b"."))
                answer = "ok"
            elif command == "stream":
                streaming.append(asyncio.ensure_future(stream(args[0], int(args[1]), float(args[2]))))
                answer = "ok"
            elif command == "quiet":
                for task in streaming:
                    task.cancel()
                streaming.clear()
                answer = "ok"
            elif command == "status":
                answer = json.dumps(status())
            elif command == "joins":
                count, topic, stay, busy = int(args[0]), args[1], float(args[2]), float(args[3])
                answer = json.dumps(await joins(count, topic, stay, busy, args[4]))
            else:
                answer = f"unknown command {command}"
            print(answer, flush=True)
        for task in streaming:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
