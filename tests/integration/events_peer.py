"""A real msuite node with ``events:`` in its own process, driven line by line over stdin/stdout.

Run as ``python -m tests.integration.events_peer NAME REPO CHANNEL [BOOTSTRAP...]`` (REPO is a
folder or ``:memory:``). The node declares one event type, ``NoteCreated {id: str, title: str}``,
on ``CHANNEL``, and records every ``NoteCreated`` its handler is given. It prints
``ready <peer id> <multiaddr>`` once the node runs, then answers one line per command:

- ``publish COUNT PREFIX``: publish COUNT events one after the other, each awaited before the
  next (titles ``PREFIX-0`` ... ``PREFIX-<COUNT-1>``); answers one JSON line: ``seqs`` (the
  sequence numbers ``publish`` returned, in order), ``errors`` (the first error, if any),
  ``seconds`` (the burst's duration);
- ``received [PUBLISHER]``: answers one JSON line, the list of events the handler was given
  (of PUBLISHER only, when given), in the order it was given them, each
  ``[publisher, seq, title, local, id]``;
- ``status``: answers one JSON line: ``events`` (``node.events.status()``), ``peers`` (the
  p2p peer IDs), ``failed`` (the host's failed services), ``handled`` (events handled);
- ``quit``: stops the node (its events component leaves the topics) and exits 0.

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
from msuite.runtime.wiring import Event
from msuite.spec import Manifest

TYPE = "NoteCreated"


class NoteCreated(Event):
    id: str
    title: str


async def main(name: str, repo: str, channel: str, bootstrap: list[str]) -> None:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    node = Node(
        Manifest.model_validate(
            {
                "name": name,
                "repo": repo,
                "p2p": {"port": 0, "channel": channel, "bootstrap": bootstrap},
                "events": {TYPE: {"id": "str", "title": "str"}},
                "shutdown": {"grace": "2s"},
            }
        )
    )
    handled: list[list[Any]] = []

    @node.events.on(NoteCreated)
    async def record(event: NoteCreated) -> None:
        meta = event.meta
        assert meta is not None
        handled.append([meta.publisher, meta.seq, event.title, meta.local, meta.id])

    async def publish(count: int, prefix: str) -> dict[str, Any]:
        seqs: list[int | None] = []
        error = ""
        began = time.perf_counter()
        for i in range(count):
            try:
                meta = await node.events.publish(NoteCreated(id=f"{prefix}-{i}", title=f"{prefix}-{i}"))
            except Exception as exc:
                error = error or f"{type(exc).__name__}: {exc}"
                continue
            seqs.append(meta.seq)
        return {"seqs": seqs, "error": error, "seconds": time.perf_counter() - began}

    def status() -> dict[str, Any]:
        return {
            "events": node.events.status(),
            "peers": sorted(peer["id"] for peer in node.p2p.peers()),
            "failed": dict(node.p2p.failed),
            "handled": len(handled),
        }

    async with node:
        print("ready", node.p2p.peer_id, node.p2p.addrs[0], flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                break
            command, args = words[0], words[1:]
            if command == "publish":
                answer = json.dumps(await publish(int(args[0]), args[1]))
            elif command == "received":
                answer = json.dumps([entry for entry in handled if not args or entry[0] == args[0]])
            elif command == "status":
                answer = json.dumps(status())
            else:
                answer = f"unknown command {command}"
            print(answer, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
