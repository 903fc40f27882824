"""A node without p2p never imports libp2p or trio (importing libp2p alone takes ~0.6 s)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_node_without_p2p_imports_neither_libp2p_nor_trio() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from msuite.runtime.node import Node
        from msuite.spec import Manifest

        async def main():
            async with Node(Manifest.model_validate(
                {"name": "plain", "repo": ":memory:", "http": {"port": 0}}
            )):
                pass

        asyncio.run(main())
        print(sorted(m for m in ("libp2p", "trio", "multiaddr") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_node_with_p2p_prints_its_p2p_listener() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from msuite.runtime.node import Node
        from msuite.spec import Manifest

        async def main():
            async with Node(Manifest.model_validate(
                {"name": "peer", "repo": ":memory:", "p2p": {"port": 0}}
            )) as node:
                print(node.listeners())

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "('p2p', '/ip4/127.0.0.1/tcp/" in result.stdout
