"""GET /metrics: the node's own registry, gRPC, HTTP and task metrics, users' metrics, the ACL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from msuite.runtime.errors import NotConfigured
from msuite.runtime.node import Node
from msuite.runtime.tasks import TaskContext
from msuite.runtime.testing import Harness, prepare
from msuite.spec import load_manifest
from tests.runtime.nodes import started

DIAGNOSTICS = """
diagnostics:
  metrics: {latency: LATENCY}
"""


def manifest_with(echo_manifest: Path, name: str, extra: str) -> Path:
    """The echo manifest plus ``extra`` YAML, beside it (same generated code and impl)."""
    text = echo_manifest.read_text(encoding="utf-8")
    text = text.replace("    /status: none\n", "    /status: none\n    /metrics: admin\n")
    path = echo_manifest.with_name(name)
    path.write_text(text + extra, encoding="utf-8")
    return path


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(harness: Harness) -> str:
    async with harness.http.get("/metrics", headers=harness.bearer()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return await response.text()


def say(name: str = "Say", kind: str = "unary", service: str = "echo.v1.Echo") -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": name}


async def test_grpc_http_task_and_process_metrics(echo_manifest: Path, tmp_path: Path, echo_pb: Any) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    path = manifest_with(echo_manifest, "metrics.yaml", DIAGNOSTICS.replace("LATENCY", "true"))
    release = asyncio.Event()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    def setup(node: Node) -> None:
        node.http.router.add_get("/hello/{name}", hello)
        node.metrics.counter("notes_created", "Notes created.", ["kind"]).labels(kind="text").inc(2)

    async def waits(ctx: TaskContext) -> None:
        ctx.describe("waiting")
        await release.wait()

    async with started(path, tmp_path, setup=setup) as harness:
        node = harness.node
        node.tasks.submit(waits, name="waiter")
        metadata = harness.metadata()
        async with grpc.aio.insecure_channel(node.grpc.server.local_target) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(3):
                await stub.Say(echo_pb2.Ping(text="a"), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Say(echo_pb2.Ping(action="abort:NOT_FOUND"), metadata=metadata)
            assert len([p async for p in stub.Repeat(echo_pb2.Ping(count=2), metadata=metadata)]) == 2
            await stub.Collect(iter([echo_pb2.Ping(text="x")]), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError):  # no token: the ACL refuses it
                await echo_pb2_grpc.AdminStub(channel).Reset(echo_pb2.Ping())
        for _ in range(2):
            async with harness.http.get("/hello/ann") as response:
                assert response.status == 200
        async with harness.http.get("/nowhere") as response:
            assert response.status == 404
        for _ in range(100):
            if node.tasks.counts()["busy"] == 1:
                break
            await asyncio.sleep(0.01)
        found = samples(await scrape(harness))
        release.set()

    assert value(found, "grpc_server_started_total", **say()) == 4
    assert value(found, "grpc_server_handled_total", **say(), grpc_code="OK") == 3
    assert value(found, "grpc_server_handled_total", **say(), grpc_code="NOT_FOUND") == 1
    assert value(found, "grpc_server_handling_seconds_count", **say()) == 4
    assert value(found, "grpc_server_handling_seconds_bucket", **say(), le="+Inf") == 4
    assert value(found, "grpc_server_handled_total", **say("Repeat", "server_stream"), grpc_code="OK") == 1
    assert value(found, "grpc_server_handled_total", **say("Collect", "client_stream"), grpc_code="OK") == 1
    admin = say("Reset", service="echo.v1.Admin")
    assert value(found, "grpc_server_handled_total", **admin, grpc_code="UNAUTHENTICATED") == 1
    assert value(found, "http_requests_total", method="GET", route="/hello/{name}", code="200") == 2
    assert value(found, "http_requests_total", method="GET", route="(unmatched)", code="404") == 1
    assert value(found, "http_request_duration_seconds_count", method="GET", route="/hello/{name}") == 2
    assert value(found, "msuite_tasks_busy_workers") == 1
    assert value(found, "msuite_tasks", state="running") == 1
    assert value(found, "msuite_tasks_max_workers") == node.tasks.max_workers
    assert value(found, "notes_created_total", kind="text") == 2
    assert value(found, "process_cpu_seconds_total") > 0
    assert value(found, "process_open_fds") > 0
    assert any(name == "python_info" for name, _ in found)


async def test_without_latency_there_is_no_histogram(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    path = manifest_with(echo_manifest, "metrics-plain.yaml", "diagnostics: {metrics: true}\n")
    async with started(path, tmp_path) as harness:
        async with grpc.aio.insecure_channel(harness.node.grpc.server.local_target) as channel:
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=harness.metadata())
        text = await scrape(harness)
    found = samples(text)
    assert value(found, "grpc_server_handled_total", **say(), grpc_code="OK") == 1
    assert "grpc_server_handling_seconds" not in text


async def test_two_nodes_in_one_process_keep_their_own_metrics(
    echo_manifest: Path, tmp_path: Path, echo_pb: Any
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    path = manifest_with(echo_manifest, "metrics-two.yaml", "diagnostics: {metrics: true}\n")

    def setup(node: Node) -> None:
        node.metrics.gauge("same_name", "Both nodes define it.").set(1)

    async with (
        started(path, tmp_path / "a", setup=setup) as a,
        started(path, tmp_path / "b", setup=setup) as b,
    ):
        async with grpc.aio.insecure_channel(a.node.grpc.server.local_target) as channel:
            await echo_pb2_grpc.EchoStub(channel).Say(echo_pb2.Ping(), metadata=a.metadata())
        in_a, in_b = samples(await scrape(a)), samples(await scrape(b))
    assert value(in_a, "grpc_server_handled_total", **say(), grpc_code="OK") == 1
    assert value(in_b, "grpc_server_handled_total", **say(), grpc_code="OK") == 0
    assert value(in_a, "same_name") == value(in_b, "same_name") == 1


async def test_a_scraper_asking_for_openmetrics_gets_it(echo_manifest: Path, tmp_path: Path) -> None:
    path = manifest_with(echo_manifest, "metrics-om.yaml", "diagnostics: {metrics: true}\n")
    headers = {
        "Accept": "application/openmetrics-text; version=1.0.0",
    }
    async with started(path, tmp_path) as harness:
        headers.update(harness.bearer())
        async with harness.http.get("/metrics", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).endswith("# EOF\n")


async def test_metrics_go_through_the_acl(echo_manifest: Path, tmp_path: Path) -> None:
    path = manifest_with(echo_manifest, "metrics-acl.yaml", "diagnostics: {metrics: true}\n")
    async with started(path, tmp_path) as harness:
        async with harness.http.get("/metrics") as response:
            assert response.status == 401
        async with harness.http.get("/metrics", headers=harness.bearer("authenticated_read")) as response:
            assert response.status == 403
        async with harness.http.get("/metrics", headers=harness.bearer()) as response:
            assert response.status == 200


async def test_node_metrics_needs_the_manifest_key(echo_manifest: Path, tmp_path: Path) -> None:
    node = Node(prepare(load_manifest(echo_manifest), tmp_path))
    with pytest.raises(NotConfigured, match=r"diagnostics\.metrics"):
        node.metrics  # noqa: B018
    async with node:
        harness = Harness(node, None)
        async with harness.http.get("/metrics", headers=harness.bearer()) as response:
            assert response.status == 404
        await harness.close()


def test_a_failing_hook_prepare_is_left_out() -> None:
    from msuite.runtime.grpc.interceptors import NodeInterceptor

    class Broken:
        def prepare(self, method: str, kind: str) -> Any:
            raise RuntimeError("no")

    seen: list[str] = []

    class Good:
        def prepare(self, method: str, kind: str) -> Any:
            seen.append(f"{kind} {method}")
            return lambda context: lambda code, elapsed: None

    interceptor = NodeInterceptor(hooks=[Broken(), Good()])
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    wrapped = interceptor._wrap("/a.B/C", handler)
    assert wrapped.unary_unary is not None
    assert seen == ["unary /a.B/C"]
