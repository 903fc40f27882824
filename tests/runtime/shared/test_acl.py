"""ACL entries added at run time live in the shared namespace ``msuite.acl``: a change on one node
applies on every node of the channel; the manifest's entries stay each node's own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from msuite.runtime.node import Node
from msuite.spec import Manifest
from tests.helpers import eventually

from .nodes import drained, mesh


def manifest(
    name: str,
    folder: Path,
    bootstrap: tuple[str, ...] = (),
    acl: dict[str, str] | None = None,
    shared: bool = True,
) -> Manifest:
    data: dict[str, Any] = {
        "name": name,
        "repo": str(folder / name),
        "p2p": {"port": 0, "bootstrap": list(bootstrap)},
        "auth": {"jwt": {"secret": "s" * 32}, "acl": acl or {}},
        "storage": {"sync": False},
    }
    if shared:
        data["storage"]["shared"] = {"channel": "acl", "rebroadcast": "1s"}
    return Manifest.model_validate(data)


@contextlib.asynccontextmanager
async def pair(folder: Path, acl_b: dict[str, str] | None = None) -> AsyncIterator[tuple[Node, Node]]:
    a = Node(manifest("a", folder))
    await a.start()
    b = Node(manifest("b", folder, (a.p2p.addrs[0],), acl_b))
    try:
        await b.start()
        await mesh([a, b], "msuite/acl/shared")
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def test_a_change_on_one_node_applies_on_the_other(tmp_path: Path) -> None:
    async with pair(tmp_path, acl_b={"/notes.v1.Notes/Delete": "authenticated_write"}) as (a, b):
        await a.auth.acl.allow("/admin/", "admin")
        await eventually(lambda: b.auth.acl.required("/admin/users") == "admin", timeout=3)
        assert b.auth.acl.source("/admin/") == "runtime"
        # a run-time entry wins over a node's manifest entry, and removing it brings that back
        await a.auth.acl.allow("/notes.v1.Notes/Delete", "admin")
        await eventually(lambda: b.auth.acl.required("/notes.v1.Notes/Delete") == "admin", timeout=3)
        assert await b.auth.acl.remove("/notes.v1.Notes/Delete") is True
        assert b.auth.acl.required("/notes.v1.Notes/Delete") == "authenticated_write"
        await eventually(lambda: a.auth.acl.required("/notes.v1.Notes/Delete") is None, timeout=3)
        # a removal on b reaches a
        assert await b.auth.acl.remove("/admin/") is True
        await eventually(lambda: a.auth.acl.required("/admin/users") is None, timeout=3)
        assert a.auth.acl.list() == {} and b.auth.acl.list() == {
            "/notes.v1.Notes/Delete": "authenticated_write"
        }


async def test_entries_added_before_sharing_move_to_the_shared_namespace(tmp_path: Path) -> None:
    lone = Node(manifest("a", tmp_path, shared=False))
    async with lone:
        await lone.auth.acl.allow("/old/", "admin")
    async with pair(tmp_path) as (a, b):
        assert a.auth.acl.required("/old/x") == "admin"
        await eventually(lambda: b.auth.acl.required("/old/x") == "admin", timeout=3)
        await a.auth.acl.allow("/quick", "admin")
        assert await a.auth.acl.remove("/quick") is True  # right after: the table must not bring it back
        await drained(a.component("shared").namespace("msuite.acl", internal=True))  # both callbacks ran
        assert a.auth.acl.required("/quick") is None
    async with Node(manifest("a", tmp_path)) as again:  # alone now: the entry is in its shared replica
        assert again.auth.acl.required("/old/x") == "admin"
        assert again.auth.acl.required("/quick") is None
