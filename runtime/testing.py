"""Test harness for msuite nodes, shipped with the package (the project tests itself with it).

``running(manifest)`` starts a node on free loopback ports with a fresh
repository in a temporary folder, hands back a :class:`Harness` (the node,
typed clients, an HTTP client, token minting) and stops everything after::

    from msuite.runtime.testing import running

    async def test_hello() -> None:
        async with running("msuite.yaml") as h:
            reply = await h.clients.greeter().SayHello(HelloRequest(name="a"))
            async with h.http.get("/v1/hello/a") as response:
                assert response.status == 200

As a pytest plugin (``pytest_plugins = ["msuite.runtime.testing"]`` in a
``conftest.py``) it adds the ``msuite_node`` fixture: an async function that
starts a node like ``running`` and stops it when the test ends.

What is changed from the manifest: ``grpc.tcp.port``, ``http.port`` and
``p2p.port`` become 0 (free ports), ``grpc.unix.path`` moves to a short
temporary path (an abstract socket gets a name of its own), ``repo`` to a
temporary folder (a real LevelDB repository; pass ``repo=":memory:"`` for an
in-memory one). So several nodes of one manifest start side by side in one
process (docs/multi-node.md); ``p2p.key``, when the manifest names one, is
kept, so such nodes share that identity.

Generated code is regenerated first when stale. That is this module's only
use of :mod:`msuite.codegen`, imported lazily inside :func:`_ensure_generated`
(outside the CLI the runtime does not depend on codegen, which pulls in jinja2
and grpcio-tools): importing this module never imports it, and a manifest
without services, or one built in Python, never reaches it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from msuite.spec import Manifest, load_manifest

from .node import Node

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Harness", "msuite_node", "prepare", "running"]


def prepare(manifest: Manifest, folder: Path, *, repo: str | None = None) -> Manifest:
    """``manifest`` on free ports, with its socket and repository under ``folder``."""
    update: dict[str, Any] = {"repo": repo if repo is not None else str(folder / "repo")}
    if manifest.grpc is not None:
        grpc_update: dict[str, Any] = {}
        if manifest.grpc.tcp is not None:
            grpc_update["tcp"] = manifest.grpc.tcp.model_copy(update={"port": 0})
        if manifest.grpc.unix is not None:
            # a short path (107-byte limit); an abstract name unique to this run
            path = (
                f"unix-abstract:{folder.name}"
                if manifest.grpc.unix.path.startswith("unix-abstract:")
                else None
            )
            grpc_update["unix"] = manifest.grpc.unix.model_copy(
                update={"path": path or str(folder / "grpc.sock")}
            )
        update["grpc"] = manifest.grpc.model_copy(update=grpc_update)
    if manifest.http is not None:
        update["http"] = manifest.http.model_copy(update={"port": 0})
    if manifest.p2p is not None:
        update["p2p"] = manifest.p2p.model_copy(update={"port": 0})
    return manifest.model_copy(update=update)


class Harness:
    """A running node and ways to call it."""

    def __init__(self, node: Node, wiring: ModuleType | None) -> None:
        self.node = node
        self.wiring = wiring
        self._http: aiohttp.ClientSession | None = None

    @property
    def clients(self) -> Any:
        """The generated ``Clients`` (typed stubs), resolved through the node."""
        if self.wiring is None:
            raise LookupError("this node declares no services")
        return self.wiring.Clients(self.node.grpc)

    @property
    def grpc_target(self) -> str:
        """What a grpc client dials to reach the node (its Unix socket when it has one)."""
        return self.node.grpc.server.local_target

    def target(self, kind: str) -> str:
        """The dial target of listener ``tcp`` or ``unix``."""
        for listener in self.node.grpc.server.listeners:
            if listener.kind == kind:
                return listener.target
        raise LookupError(f"the node has no {kind} listener")

    @property
    def base_url(self) -> str:
        address = self.node.http.address
        if address is None:
            raise LookupError("the node's HTTP server is not running")
        return address

    @property
    def http(self) -> aiohttp.ClientSession:
        """An HTTP client whose relative URLs go to the node (closed with the harness)."""
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(base_url=self.base_url)
        return self._http

    def token(
        self,
        role: str | None = None,
        subject: str = "test",
        *,
        ttl: timedelta | float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """A token the node accepts (needs ``auth.jwt``); ``role`` defaults to the ladder's highest."""
        auth = self.node.auth
        return auth.jwt.issue(subject, auth.roles.top if role is None else role, ttl=ttl, meta=meta)

    def bearer(self, role: str | None = None, subject: str = "test") -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` for HTTP requests (default role: the highest)."""
        return {"Authorization": f"Bearer {self.token(role, subject)}"}

    def metadata(self, role: str | None = None, subject: str = "test") -> tuple[tuple[str, str]]:
        """gRPC call metadata carrying a token (default role: the highest)."""
        return (("authorization", f"Bearer {self.token(role, subject)}"),)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _ensure_generated(manifest: Manifest) -> None:
    """Regenerate ``manifest``'s code when stale: this module's one, lazy, use of codegen."""
    if not manifest.services or manifest.source is None:
        return
    from msuite.codegen import generate, is_current  # lazily: see the module docstring

    if not is_current(manifest):
        generate(manifest)


@contextlib.asynccontextmanager
async def running(
    manifest: Manifest | str | Path,
    *,
    repo: str | None = None,
    servicers: Mapping[str, Any] | None = None,
    wiring: ModuleType | None = None,
) -> AsyncIterator[Harness]:
    """Start the node of ``manifest`` on free ports; stop it and remove its files after."""
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    # short: Unix socket paths are limited to 107 bytes, pytest's tmp_path is long
    folder = Path(tempfile.mkdtemp(prefix="msuite-"))
    try:
        _ensure_generated(manifest)
        node = Node(prepare(manifest, folder, repo=repo), wiring=wiring, servicers=servicers)
        await node.start()
        harness = Harness(node, node.wiring)
        try:
            yield harness
        finally:
            await harness.close()
            await node.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


try:
    import pytest
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin needs pytest and pytest-asyncio
    pass
else:

    @pytest_asyncio.fixture
    async def msuite_node() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
        """Start nodes with ``await msuite_node(manifest, ...)``; all stop when the test ends."""
        async with contextlib.AsyncExitStack() as stack:

            async def start(manifest: Manifest | str | Path, **options: Any) -> Harness:
                return await stack.enter_async_context(running(manifest, **options))

            yield start

    del pytest
