"""The node: what it builds, the order it starts and stops in, failures, accessors."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from msuite.runtime.errors import NodeError, NotConfigured, NotSupported, StartError
from msuite.runtime.node import Node
from msuite.runtime.registry import COMPONENTS
from msuite.runtime.testing import prepare
from msuite.spec import GRPC, HTTP, Manifest, TCPListener, load_manifest, loads_manifest


async def test_bare_node_starts_with_repo_tasks_and_clients_only() -> None:
    node = Node(Manifest(name="bare", repo=":memory:"))
    async with node:
        assert node.state == "running"
        assert node.components == ["repo", "tasks", "clients"]
        assert node.repo.backend == "memory"
        handle = node.tasks.submit(lambda ctx: _answer(), name="job")
        assert await handle.wait() == 42
        assert node.listeners() == []
    assert node.state == "stopped"
    assert node.components == []


async def _answer() -> int:
    return 42


@pytest.mark.parametrize(
    ("accessor", "key"),
    [
        ("auth", "auth"),
        ("http", "http"),
        ("locker", "locker"),
        ("p2p", "p2p"),
        ("events", "events"),
        ("files", "files"),
        ("tracer", "diagnostics.tracing"),
        ("otel_tracer", "diagnostics.tracing"),
        ("metrics", "diagnostics.metrics"),
    ],
)
async def test_absent_subsystems_raise_not_configured_naming_the_key(accessor: str, key: str) -> None:
    async with Node(Manifest(name="bare", repo=":memory:")) as node:
        with pytest.raises(NotConfigured, match=f"add `{key}` to the manifest"):
            getattr(node, accessor)
        with pytest.raises(NotConfigured, match=r"storage\.shared"):
            node.shared("notes")
        with pytest.raises(NotConfigured, match="`grpc`"):
            node.grpc.server  # noqa: B018


async def test_configured_subsystems_are_present(tmp_path: Path) -> None:
    manifest = Manifest(
        name="full",
        repo=str(tmp_path / "repo"),
        http=HTTP(port=0),
        locker={"backend": "memory"},  # type: ignore[arg-type]
        auth={"jwt": {"secret": "x" * 32}},  # type: ignore[arg-type]
    )
    async with Node(manifest) as node:
        assert node.components == ["repo", "auth", "tasks", "locker", "clients", "http"]
        assert node.auth.jwt.verify(node.auth.jwt.issue("a", "admin")).subject == "a"
        async with node.locker.lock("k", timeout=1) as lease:
            assert lease.fencing_token >= 1
        assert node.http.address is not None and node.http.address.startswith("http://127.0.0.1:")
        assert node.repo.backend == "leveldb"


async def test_start_and_stop_follow_the_documented_order(echo_manifest: Path, tmp_path: Path) -> None:
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))
    events: list[str] = []
    node.build()
    for spec in COMPONENTS:
        try:
            component = node.component(spec.name)
        except NotConfigured:
            continue
        start, stop = component.start, component.stop

        async def started(start: Any = start, name: str = component.name) -> None:
            await start()
            events.append(f"start {name}")

        async def stopped(grace: float, stop: Any = stop, name: str = component.name) -> None:
            events.append(f"stop {name}")
            await stop(grace)

        component.start = started  # type: ignore[method-assign]
        component.stop = stopped  # type: ignore[method-assign]
    async with node:
        pass
    order = ["repo", "auth", "tasks", "clients", "grpc", "http"]
    assert events == [f"start {n}" for n in order] + [f"stop {n}" for n in reversed(order)]


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_a_failed_start_stops_what_started_and_names_the_component(
    echo_manifest: Path, tmp_path: Path
) -> None:
    blocker = _taken_port()
    try:
        prepared = prepare(load_manifest(echo_manifest), tmp_path)
        assert prepared.http is not None
        manifest = prepared.model_copy(
            update={"http": prepared.http.model_copy(update={"port": blocker.getsockname()[1]})}
        )
        node = Node(manifest)
        with pytest.raises(StartError) as caught:
            await node.start()
        assert caught.value.component == "http"
        assert f"cannot listen on 127.0.0.1:{blocker.getsockname()[1]}" in str(caught.value)
        assert "msuite.yaml:" in str(caught.value)  # the manifest line of http.port
        assert node.components == []
        assert not (tmp_path / "grpc.sock").exists()
        # the repository was closed: another node can open it at once
        async with Node(prepare(load_manifest(echo_manifest), tmp_path)) as again:
            assert again.state == "running"
    finally:
        blocker.close()


async def test_a_node_starts_once(tmp_path: Path) -> None:
    node = Node(Manifest(name="once", repo=":memory:"))
    async with node:
        with pytest.raises(NodeError, match="started already"):
            await node.start()


async def test_subsystems_not_built_yet_are_refused_with_their_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msuite.runtime import registry

    text = "name: later\nrepo: ':memory:'\np2p: true\nfiles: true\nstorage:\n  shared: {channel: c}\n"
    manifest = loads_manifest(text, file="later.yaml", base_dir=tmp_path)
    monkeypatch.setattr(
        registry,
        "PLANNED",
        ((("storage", "shared"), lambda m: m.storage.shared is not None, "the shared CRDT store", "x"),),
    )
    with pytest.raises(NotSupported) as caught:
        await Node(manifest).start()
    assert "later.yaml:6:3: storage.shared: the shared CRDT store is not built" in str(caught.value)


async def test_every_fixed_subsystem_is_built(tmp_path: Path) -> None:
    text = (
        "name: later\nrepo: ':memory:'\np2p: {port: 0}\nfiles: true\nstorage:\n  shared: {channel: c}\n"
        "events:\n  Joined: {who: str}\n"
    )
    from msuite.runtime import registry

    assert registry.PLANNED == ()
    async with Node(loads_manifest(text, file="later.yaml", base_dir=tmp_path)) as node:
        assert {"events", "files", "shared"} <= set(node.components)


async def test_an_impl_that_fails_to_import_names_the_manifest_line(
    echo_project: Path, tmp_path: Path
) -> None:
    text = (echo_project / "msuite.yaml").read_text().replace("echo_service:Admin", "missing_module:Admin")
    (echo_project / "broken.yaml").write_text(text)
    try:
        manifest = load_manifest(echo_project / "broken.yaml")
        node = Node(prepare(manifest, tmp_path))
        with pytest.raises(NodeError) as caught:  # at build, inside start, before anything opens
            await node.start()
        assert not isinstance(caught.value, StartError) and node.components == []
        assert not (tmp_path / "repo").exists()
        assert "broken.yaml:8:11: services['echo.v1.Admin'].impl: cannot import 'missing_module'" in str(
            caught.value
        )
        assert str(caught.value).endswith("ModuleNotFoundError: No module named 'missing_module'")
    finally:
        (echo_project / "broken.yaml").unlink()


def test_impls_get_the_node_only_when_they_take_an_argument() -> None:
    from msuite.runtime.loading import construct

    class Takes:
        def __init__(self, node: object) -> None:
            self.node = node

    class TakesNothing:
        pass

    class Optional:
        def __init__(self, node: object = None) -> None:
            self.node = node

    sentinel = object()
    assert construct(Takes, sentinel).node is sentinel
    assert isinstance(construct(TakesNothing, sentinel), TakesNothing)
    assert construct(Optional, sentinel).node is sentinel


async def test_grpc_server_without_services_serves_health(tmp_path: Path) -> None:
    manifest = Manifest(name="lonely", repo=":memory:", grpc=GRPC(tcp=TCPListener(port=0)))
    async with Node(manifest) as node:
        assert [kind for kind, _ in node.listeners()] == ["grpc.tcp"]
        assert node.grpc.server.status()["state"] == "serving"


async def test_auth_only_node_has_auth_and_nothing_else() -> None:
    manifest = Manifest(name="guard", repo=":memory:", auth={"jwt": {"secret": "s" * 32}})  # type: ignore[arg-type]
    async with Node(manifest) as node:
        assert node.components == ["repo", "auth", "tasks", "clients"]
        token = node.auth.jwt.issue("ann", "authenticated_write")
        assert node.auth.jwt.verify(token).subject == "ann"
        for absent in ("http", "locker", "p2p", "events", "files", "tracer", "metrics"):
            with pytest.raises(NotConfigured):
                getattr(node, absent)
        with pytest.raises(NotConfigured):
            node.grpc.server  # noqa: B018


async def test_hooks_added_after_start_raise_instead_of_never_running(
    echo_manifest: Path, tmp_path: Path
) -> None:
    from msuite.runtime.components import FrozenError

    class Hook:
        def prepare(self, method: str, kind: str) -> Any:
            return lambda context: None

        def begin(self, request: Any, route: str) -> Any:
            return lambda status, elapsed: None

    async with Node(prepare(load_manifest(echo_manifest), tmp_path)) as node:
        with pytest.raises(FrozenError, match="gRPC call hooks are fixed once the node has started"):
            node.grpc.server.hooks.append(Hook())
        with pytest.raises(FrozenError, match="HTTP request hooks are fixed once the node has started"):
            node.http.hooks.append(Hook())
        with pytest.raises(RuntimeError):  # aiohttp's router is frozen too
            node.http.router.add_get("/late", lambda request: None)  # type: ignore[arg-type,return-value]


def test_a_bad_gateway_route_is_a_located_error_at_build_before_any_port(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    import dataclasses
    import types

    from msuite.runtime.loading import import_from

    wiring = import_from(echo_manifest.parent, "gen.wiring")
    good = wiring.ROUTES[0]
    bad = dataclasses.replace(good, path="/v1/{no_such_field}", annotated=True)
    broken = types.ModuleType("wiring")
    broken.SERVICES = wiring.SERVICES  # type: ignore[attr-defined]
    broken.ROUTES = (*wiring.ROUTES, bad)  # type: ignore[attr-defined]
    node = Node(prepare(load_manifest(echo_manifest), tmp_path), wiring=broken)
    with pytest.raises(NodeError) as caught:
        node.build()
    message = str(caught.value)
    assert message.startswith(f"{echo_manifest}:")
    assert f"services['{good.service}']" in message or f"services.{good.service}" in message
    assert "no_such_field" in message
    assert node.state == "new" and node.components == []
    assert not (tmp_path / "repo").exists()  # nothing was opened, let alone bound


async def test_an_impl_raising_in_its_constructor_shows_the_users_frames(
    echo_project: Path, tmp_path: Path
) -> None:
    (echo_project / "broken_impl.py").write_text(
        "def lookup(settings):\n"
        "    return settings['missing']\n"
        "\n"
        "class Echo:\n"
        "    def __init__(self, node):\n"
        "        self.value = lookup({})\n"
    )
    text = (echo_project / "msuite.yaml").read_text().replace("echo_service:Echo", "broken_impl:Echo")
    (echo_project / "broken-init.yaml").write_text(text)
    try:
        node = Node(prepare(load_manifest(echo_project / "broken-init.yaml"), tmp_path))
        with pytest.raises(StartError) as caught:
            await node.start()
        first, *frames = str(caught.value).splitlines()
        assert "services['echo.v1.Echo'].impl: broken_impl:Echo(...) raised KeyError: 'missing'" in first
        source = echo_project / "broken_impl.py"
        assert frames == [
            f'  File "{source}", line 6, in __init__',
            "    self.value = lookup({})",
            f'  File "{source}", line 2, in lookup',
            "    return settings['missing']",
        ]
    finally:
        (echo_project / "broken-init.yaml").unlink()
        (echo_project / "broken_impl.py").unlink()
