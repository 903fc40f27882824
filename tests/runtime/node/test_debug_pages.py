"""The /debug/ pages on a node: behind the ACL, and ended by the node's stop."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare
from msuite.spec import load_manifest
from tests.runtime.nodes import started


def with_profiling(echo_manifest: Path) -> Path:
    text = echo_manifest.read_text(encoding="utf-8")
    text = text.replace("    /status: none\n", "    /status: none\n    /debug/: admin\n")
    path = echo_manifest.with_name("profiling.yaml")
    path.write_text(text + "diagnostics: {profiling: true}\n", encoding="utf-8")
    return path


async def test_debug_pages_are_served_behind_the_acl(echo_manifest: Path, tmp_path: Path) -> None:
    async with started(with_profiling(echo_manifest), tmp_path) as harness:
        async with harness.http.get("/debug/tasks") as response:
            assert response.status == 401
        async with harness.http.get(
            "/debug/tasks", headers=harness.bearer("authenticated_write")
        ) as response:
            assert response.status == 403
        async with harness.http.get("/debug/tasks", headers=harness.bearer()) as response:
            assert response.status == 200
            text = await response.text()
        # the task manager's worker is among them, with its coroutine
        assert "msuite-task-worker-1" in text
        assert "TaskManager._work" in text
        url = "/debug/profile?seconds=0.2&format=text"
        async with harness.http.get(url, headers=harness.bearer()) as response:
            assert response.status == 200
            assert "function calls" in await response.text()


async def test_stopping_the_node_ends_a_profile_in_progress(echo_manifest: Path, tmp_path: Path) -> None:
    node = Node(prepare(load_manifest(with_profiling(echo_manifest)), tmp_path))
    await node.start()
    harness = Harness(node, None)
    try:
        url = "/debug/profile/collapsed?seconds=60"
        request = asyncio.ensure_future(harness.http.get(url, headers=harness.bearer()))
        await asyncio.sleep(0.3)
        began = time.monotonic()
        await node.stop()
        stopped_in = time.monotonic() - began
        response = await request
        assert response.status == 503
        response.release()
    finally:
        await harness.close()
        if node.state != "stopped":
            await node.stop()
    assert stopped_in < 1.5  # not the profile's 60 s, nor the whole 2 s grace
    assert sys.getprofile() is None
