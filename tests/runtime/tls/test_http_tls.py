"""HTTPS and mutual TLS on the HTTP server: real aiohttp clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from msuite.spec import Manifest
from tests.runtime.nodes import started

from .conftest import Pki, echo_over_tls, server_tls


def client_context(pki: Pki, *, cert: bool = False, stranger: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    if stranger:
        context.load_cert_chain(str(pki.stranger_cert), str(pki.stranger_key))
    return context


def over_http_tls(echo_manifest: Path, pki: Pki, *, mutual: bool = False) -> Manifest:
    """The echo manifest with TLS on http (grpc stays plaintext on its Unix socket)."""
    manifest = echo_over_tls(echo_manifest, server_tls(pki), unix=True)
    assert manifest.http is not None
    http = manifest.http.model_copy(update={"tls": server_tls(pki, mutual=mutual)})
    return manifest.model_copy(update={"http": http})


async def get(url: str, context: ssl.SSLContext | bool) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context, timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status, await response.json()


async def test_https_serves_the_gateway_and_status(echo_manifest: Path, pki: Pki, tmp_path: Path) -> None:
    async with started(over_http_tls(echo_manifest, pki), tmp_path / "node") as h:
        base = h.node.http.address
        assert base is not None and base.startswith("https://127.0.0.1:")
        status, body = await get(f"{base}/v1/echo/secure", client_context(pki))
        assert (status, body["text"]) == (200, "echo: secure")
        status, report = await get(f"{base}/status", client_context(pki))
        assert status == 200
        assert report["http"]["tls"] == "tls"  # type: ignore[index]
        listeners = {entry["kind"]: entry for entry in report["grpc"]["listeners"]}  # type: ignore[index]
        assert listeners["tcp"]["tls"] == "tls"
        assert dict(h.node.listeners())["http"] == f"{base} (tls)"


async def test_plaintext_against_https_fails_and_the_node_keeps_serving(
    echo_manifest: Path, pki: Pki, tmp_path: Path
) -> None:
    async with started(over_http_tls(echo_manifest, pki), tmp_path / "node") as h:
        base = h.node.http.address
        assert base is not None
        plain = base.replace("https://", "http://")
        for _ in range(3):
            with pytest.raises(aiohttp.ClientError):
                await get(f"{plain}/status", False)
        status, _ = await get(f"{base}/status", client_context(pki))
        assert status == 200


async def test_mtls_refuses_clients_without_a_certificate_of_the_ca(
    echo_manifest: Path, pki: Pki, tmp_path: Path
) -> None:
    manifest = over_http_tls(echo_manifest, pki, mutual=True)
    async with started(manifest, tmp_path / "node") as h:
        base = h.node.http.address
        assert base is not None
        for context in (client_context(pki), client_context(pki, stranger=True)):
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                await get(f"{base}/v1/echo/no", context)
        servicer = h.node.grpc.server.servicers["echo.v1.Echo"]
        assert servicer.finished == 0  # no request got through
        status, body = await get(f"{base}/v1/echo/yes", client_context(pki, cert=True))
        assert (status, body["text"]) == (200, "echo: yes")
        assert dict(h.node.listeners())["http"] == f"{base} (mtls)"
