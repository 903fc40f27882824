"""Bad credentials against a running node (issue 17, item 5): each is refused per request, over
gRPC (UNAUTHENTICATED) and HTTP (401, the gateway included), the node serves on, and neither the
token nor a key ever reaches the log."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from msuite.runtime.testing import Harness
from msuite.spec import load_manifest
from tests.runtime.nodes import started

OLD = "an-old-secret-of-at-least-thirty-two-bytes!"
NEW = "a-new-secret-of-at-least-thirty-two-bytes!!"


def token(secret: str | bytes, kid: str | None, *, alg: str = "HS256", **changes: Any) -> str:
    now = int(time.time())
    claims = {"sub": "mallory", "role": "admin", "iat": now, "nbf": now, "exp": now + 300, **changes}
    headers = {"kid": kid} if kid is not None else None
    return pyjwt.encode(claims, secret, algorithm=alg, headers=headers)


def bad_tokens() -> dict[str, str]:
    rsa_key = rsa.generate_private_key(65537, 2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "expired": token(NEW, "new", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "unknown kid": token(NEW, "2019"),
        "a known kid, signed with another key": token(OLD, "new"),
        "signed with a key nobody has": token("x" * 40, None),
        "alg none": pyjwt.encode({"sub": "mallory", "role": "admin"}, None, algorithm="none"),
        "RS256 where HMAC keys are configured": token(pem, "new", alg="RS256"),
        "not a JWT": "not.a.jwt-at-all",
    }


@pytest.fixture
async def node(echo_manifest: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    manifest = load_manifest(echo_manifest)
    auth = type(manifest.auth).model_validate(  # type: ignore[arg-type]
        {
            "jwt": {"keys": [{"kid": "new", "secret": NEW}, {"kid": "old", "secret": OLD}]},
            "acl": {"/echo.v1.Admin/": "admin", "/private/": "authenticated_read"},
        }
    )
    async with started(manifest.model_copy(update={"auth": auth}), tmp_path) as harness:
        yield harness


async def test_each_bad_token_is_refused_per_request_and_never_logged(
    node: Harness, echo_pb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    echo_pb2, echo_pb2_grpc = echo_pb
    caplog.set_level(logging.DEBUG)
    bad = bad_tokens()
    rotated = token(OLD, "old")  # the previous key, still configured: accepted
    async with grpc.aio.insecure_channel(node.node.grpc.server.local_target) as channel:
        admin = echo_pb2_grpc.AdminStub(channel)
        echo = echo_pb2_grpc.EchoStub(channel)
        for why, value in bad.items():
            metadata = (("authorization", f"Bearer {value}"),)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.Reset(echo_pb2.Ping(), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, why
            assert value not in (refused.value.details() or ""), why
            # an open method refuses a bad token too, rather than serving it as anonymous
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await echo.Say(echo_pb2.Ping(text="x"), metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, why
            for path in ("/v1/echo/hi", "/private/anything"):
                async with node.http.get(path, headers={"Authorization": f"Bearer {value}"}) as response:
                    assert response.status == 401, (why, path)
                    body = await response.json()
                    assert value not in str(body), why
        # the node serves on: a good token, and one of the rotated-out key that is still configured
        for good in (token(NEW, "new"), rotated):
            reply = await admin.Reset(echo_pb2.Ping(), metadata=(("authorization", f"Bearer {good}"),))
            assert reply.text == "reset"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for value in [*bad.values(), rotated]:
        assert value not in logged
        signature = value.split(".")[-1]
        assert not signature or signature not in logged  # not even the signature
    assert NEW not in logged and OLD not in logged
    assert not [r for r in caplog.records if r.exc_info is not None]  # no tracebacks
