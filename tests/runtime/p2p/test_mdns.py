"""mDNS discovery, inside a network namespace of the test's own (loopback with multicast on).

mDNS multicasts: outside a namespace it would reach the machine's real network,
so these tests run their nodes in a child process under ``unshare -n``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"

SCRIPT = textwrap.dedent(
    """
    import asyncio, time
    from msuite.runtime.node import Node
    from msuite.spec import Manifest

    def manifest(name, mdns=True):
        return Manifest.model_validate(
            {"name": name, "repo": ":memory:", "p2p": {"port": 0}, "discovery": {"mdns": mdns}}
        )

    async def main():
        async with Node(manifest("a")) as a, Node(manifest("b")) as b, Node(manifest("quiet", False)) as quiet:
            began = time.monotonic()
            while time.monotonic() - began < 15:
                # both sides: b learns of the connection a little after a does
                if {p["id"] for p in a.p2p.peers()} == {b.p2p.peer_id} and {
                    p["id"] for p in b.p2p.peers()
                } == {a.p2p.peer_id}:
                    break
                await asyncio.sleep(0.05)
            print("a", sorted(p["id"] for p in a.p2p.peers()) == [b.p2p.peer_id])
            print("b", sorted(p["id"] for p in b.p2p.peers()) == [a.p2p.peer_id])
            print("quiet", quiet.p2p.peers() == [])
            seen_by_a = set((await a.status.report())["p2p"]["mdns"]["discovered"])
            seen_by_b = set((await b.status.report())["p2p"]["mdns"]["discovered"])
            # whichever found the other first dialled it; neither found the quiet node
            print("status", bool(seen_by_a | seen_by_b) and seen_by_a <= {b.p2p.peer_id} and seen_by_b <= {a.p2p.peer_id})
            print("seconds", round(time.monotonic() - began, 2))

    asyncio.run(main())
    """
)


def _namespaces_work() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", SETUP], check=False, capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


def test_two_nodes_find_each_other_by_mdns_and_a_third_without_it_stays_alone() -> None:
    why = _namespaces_work()
    if why is not None:
        pytest.skip(f"mDNS needs a network namespace of its own: {why}")
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'{SETUP} && exec "$0" -c "$1"', sys.executable, SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["a"] == lines["b"] == lines["quiet"] == lines["status"] == "True", result.stdout
    assert float(lines["seconds"]) < 15
