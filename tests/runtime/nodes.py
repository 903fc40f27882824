"""Starting a test node from a manifest variant, beside the harness's ``running()``.

``msuite.runtime.testing.running()`` regenerates a project's code when its
manifest changed; the echo tests run several manifest files against one
generated package, so they start nodes with :func:`started`, which uses the
generated code as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, prepare
from msuite.spec import Manifest, load_manifest


@asynccontextmanager
async def started(
    manifest: Manifest | Path,
    folder: Path,
    *,
    setup: Callable[[Node], None] | None = None,
    **options: Any,
) -> AsyncIterator[Harness]:
    """The node of ``manifest`` on free ports under ``folder``; ``setup(node)`` runs before start."""
    if isinstance(manifest, Path):
        manifest = load_manifest(manifest)
    node = Node(prepare(manifest, folder), **options)
    if setup is not None:
        setup(node)
    async with node:
        harness = Harness(node, node.wiring)
        try:
            yield harness
        finally:
            await harness.close()
