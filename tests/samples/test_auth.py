"""samples/auth end to end: real Redis, real auth nodes, a real notifications servicer.

Every part is real: a redis-server of our own (the locker), two auth nodes of
``samples/auth/msuite.yaml`` (in-process ``Node`` objects, and in one test two
``msuite up`` processes), and a third in-process msuite node serving
``notifications.v1.Notifications`` over libp2p (``grpc.p2p``) with a servicer that
records each ``Send`` and the caller's principal (which proves auth's service token).
The auth nodes are called through their HTTP gateway, as the sample's README does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import message_factory

from msuite.runtime.auth import current_principal
from msuite.runtime.testing import Harness, running
from msuite.spec import load_manifest
from tests.integration.test_up import MSUITE, Up
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
AUTH = ROOT / "samples" / "auth"
NOTIFICATIONS_PROTO = ROOT / "samples" / "notifications" / "protos" / "notifications.proto"
SECRET = "samples-test-secret-" + "x" * 32
ADMIN = "boss@example.com"
SHARED_TOPIC = "msuite/auth/shared"
NOTIFICATIONS = "notifications.v1.Notifications"

STAND_IN = """\
name: notifications
services:
  notifications.v1.Notifications: {proto: protos/notifications.proto, impl: "unused:Unused"}
grpc: {p2p: true}
p2p: {port: 0, channel: samples}
auth:
  jwt: {secret: "${SAMPLES_JWT_SECRET}"}
  roles: [user, service, admin]
  acl: {/notifications.v1.Notifications/Send: service}
logging: {level: warning}
shutdown: {grace: 1s}
"""


@dataclass
class Sent:
    to: str
    body: str
    subject: str | None
    role: str

    @property
    def code(self) -> str:
        found = re.search(r"\b(\d{6})\b", self.body)
        assert found, self.body
        return found.group(1)


class Recorder:
    """A real servicer of notifications.v1.Notifications: keeps each Send and who sent it."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def Send(self, request: Any, context: Any) -> Any:
        principal = current_principal()
        self.sent.append(Sent(request.to, request.body, principal.subject, principal.role))
        reply = message_factory.GetMessageClass(request.DESCRIPTOR.file.message_types_by_name["SendReply"])
        return reply(ids=[f"n{len(self.sent)}"])

    async def Subscribe(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def List(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    def to(self, email: str) -> Sent:
        found = [sent for sent in self.sent if sent.to == email]
        assert len(found) == 1, (email, self.sent)
        return found[0]


class Api:
    """The auth gateway of one node: ``await api.call(method, path, body, token)`` -> (status, json)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession()

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base_url + path, json=body, headers=headers, timeout=aiohttp.ClientTimeout(20)
        ) as response:
            return response.status, await response.json(content_type=None)

    async def register(self, email: str, password: str = "password-1", name: str = "") -> tuple[int, dict]:
        return await self.call("POST", "/v1/register", {"email": email, "password": password, "name": name})

    async def authenticate(self, email: str, password: str = "password-1") -> tuple[int, dict]:
        return await self.call("POST", "/v1/authenticate", {"email": email, "password": password})

    async def token(self, email: str, password: str = "password-1") -> str:
        status, reply = await self.authenticate(email, password)
        assert status == 200, reply
        return str(reply["accessToken"])

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis: RedisServer) -> pytest.MonkeyPatch:
    """The samples' environment (read when a manifest loads); the seed is set per test."""
    monkeypatch.setenv("SAMPLES_JWT_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", redis.url)
    monkeypatch.setenv("AUTH_ADMINS", f"someone@example.com, {ADMIN.upper()}")
    return monkeypatch


@contextlib.asynccontextmanager
async def stand_in(folder: Path) -> AsyncIterator[tuple[Harness, Recorder]]:
    """The notifications node: a real msuite node serving the Recorder over libp2p."""
    (folder / "protos").mkdir(parents=True)
    shutil.copyfile(NOTIFICATIONS_PROTO, folder / "protos" / "notifications.proto")
    (folder / "msuite.yaml").write_text(STAND_IN)
    recorder = Recorder()
    async with running(folder / "msuite.yaml", servicers={NOTIFICATIONS: recorder}) as harness:
        yield harness, recorder


async def eventually(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, env: pytest.MonkeyPatch) -> AsyncIterator[tuple[Recorder, Api, Api]]:
    """Notifications, then two in-process auth nodes bootstrapping to it, meshed on `samples`."""
    async with contextlib.AsyncExitStack() as stack:
        notifications, recorder = await stack.enter_async_context(stand_in(tmp_path / "notifications"))
        env.setenv("SAMPLES_SEED", notifications.node.p2p.addrs[0])
        a, b = [await stack.enter_async_context(running(load_manifest(AUTH / "msuite.yaml"))) for _ in "ab"]

        async def meshed() -> bool:
            return b.node.p2p.peer_id in a.node.p2p.pubsub.peers(SHARED_TOPIC) and (
                a.node.p2p.peer_id in b.node.p2p.pubsub.peers(SHARED_TOPIC)
            )

        await eventually(meshed, "the auth nodes on the shared topic")
        apis = [Api(a.base_url), Api(b.base_url)]
        for api in apis:
            stack.push_async_callback(api.close)
        yield recorder, apis[0], apis[1]


async def register_and_verify(recorder: Recorder, on: Api, verify_on: Api, email: str) -> str:
    status, reply = await on.register(email, name=email.split("@", maxsplit=1)[0])
    assert status == 200, reply
    status, reply = await verify_on.call(
        "POST", "/v1/verify", {"email": email, "code": recorder.to(email).code}
    )
    assert status == 200, reply
    return await verify_on.token(email)


async def concurrent_registrations(recorder: Recorder, a: Api, b: Api, rounds: int) -> None:
    """One email registered on both nodes at once: exactly one succeeds, the other ALREADY_EXISTS."""
    for round in range(rounds):
        email = f"race-{round}-{time.monotonic_ns()}@example.com"
        answers = await asyncio.gather(a.register(email), b.register(email))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 409], answers
        loser = next(reply for status, reply in answers if status == 409)
        assert loser["code"] == 6, loser  # ALREADY_EXISTS
        assert len([sent for sent in recorder.sent if sent.to == email]) == 1


def test_manifest_valid_and_code_current() -> None:
    """`msuite validate`, `msuite generate --check` and the copied notifications stubs."""
    for command in (
        [*MSUITE, "validate", "--allow-unset-env", "msuite.yaml"],
        [*MSUITE, "generate", "--allow-unset-env", "--check", "msuite.yaml"],
        [sys.executable, "update_clients.py", "--check"],
    ):
        result = subprocess.run(command, check=False, cwd=AUTH, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


async def test_register_verify_authenticate_across_two_nodes(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    async with cluster(tmp_path, env) as (recorder, a, b):
        # register on a: the code goes to notifications with auth's own service token
        status, reply = await a.register("Alice@Example.com", name="Alice")
        assert status == 200, reply
        alice = reply["userId"]
        sent = recorder.to("alice@example.com")
        assert (sent.subject, sent.role) == ("auth", "service")
        assert re.fullmatch(r"\d{6}", sent.code)

        # not verified yet: refused, on the other node too (once the registration reached it:
        # a read there that misses does not ask the other nodes)
        async def reached_b() -> bool:
            return (await b.authenticate("alice@example.com"))[0] != 401

        await eventually(reached_b, "the registration on node b")
        status, reply = await b.authenticate("alice@example.com")
        assert (status, reply["code"]) == (400, 9), reply  # FAILED_PRECONDITION
        status, reply = await b.register("alice@example.com")
        assert (status, reply["code"]) == (409, 6), reply  # ALREADY_EXISTS

        # verify on b (a wrong code first), authenticate on a, the token works on b
        wrong = f"{(int(sent.code) + 1) % 10**6:06d}"
        status, reply = await b.call("POST", "/v1/verify", {"email": "alice@example.com", "code": wrong})
        assert (status, reply["code"]) == (400, 3), reply  # INVALID_ARGUMENT
        status, reply = await b.call("POST", "/v1/verify", {"email": "alice@example.com", "code": sent.code})
        assert status == 200, reply
        status, reply = await a.authenticate("alice@example.com")
        assert status == 200, reply
        assert reply["role"] == "user"
        token = reply["accessToken"]
        status, profile = await b.call("GET", "/v1/profile", token=token)
        assert status == 200, profile
        assert profile["userId"] == alice
        assert (profile["email"], profile["name"], profile["verified"]) == (
            "alice@example.com",
            "Alice",
            True,
        )

        # wrong password and unknown email: one answer
        wrong_password = await b.authenticate("alice@example.com", "not-her-password")
        unknown = await b.authenticate("nobody@example.com", "not-her-password")
        assert wrong_password == unknown
        assert unknown[0] == 401
        assert unknown[1]["code"] == 16  # UNAUTHENTICATED

        # a user's token on admin-only methods, and no token on a user's method
        status, reply = await a.call("GET", "/v1/users", token=token)
        assert (status, reply["code"]) == (403, 7), reply  # PERMISSION_DENIED
        status, reply = await a.call("DELETE", f"/v1/users/{alice}", token=token)
        assert (status, reply["code"]) == (403, 7), reply
        status, reply = await a.call("GET", "/v1/profile")
        assert (status, reply["code"]) == (401, 16), reply

        # refresh and update the profile
        status, refreshed = await b.call("POST", "/v1/refresh", {}, token=token)
        assert status == 200, refreshed
        assert refreshed["role"] == "user"
        status, profile = await a.call(
            "PATCH", "/v1/profile", {"name": "Alice B."}, token=refreshed["accessToken"]
        )
        assert (status, profile["name"]) == (200, "Alice B."), profile

        # an admin (AUTH_ADMINS, any case) lists the users on either node and deletes one
        admin = await register_and_verify(recorder, b, a, ADMIN)
        status, reply = await b.call("GET", "/v1/users", token=admin)
        assert status == 200, reply
        roles = {user["email"]: user["role"] for user in reply["users"]}
        assert roles == {"alice@example.com": "user", ADMIN: "admin"}
        # two admins delete her on both nodes at once: one deletes, the other finds nobody
        both = await asyncio.gather(
            *(node.call("DELETE", f"/v1/users/{alice}", token=admin) for node in (a, b))
        )
        assert sorted(status for status, _ in both) == [200, 404], both

        async def refused() -> bool:
            status, _ = await b.call("GET", "/v1/profile", token=token)
            return status == 401

        await eventually(refused, "a deleted user's token refused on the other node")
        status, reply = await b.register("alice@example.com")  # the email is free again
        assert status == 200, reply


async def test_concurrent_registrations_of_one_email(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    async with cluster(tmp_path, env) as (recorder, a, b):
        await concurrent_registrations(recorder, a, b, rounds=6)


async def test_two_msuite_up_processes(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    async with stand_in(tmp_path / "notifications") as (notifications, recorder):
        env.setenv("SAMPLES_SEED", notifications.node.p2p.addrs[0])
        for variable in ("AUTH_GRPC_PORT", "AUTH_HTTP_PORT", "AUTH_P2P_PORT"):
            env.setenv(variable, "0")
        ups = []
        for index in range(2):
            env.setenv("AUTH_REPO", str(tmp_path / f"repo-{index}"))
            ups.append(Up(AUTH, "--set", "logging.level=warning"))
        try:
            for up in ups:
                await asyncio.to_thread(up.wait_ready, 3, 60)  # p2p, grpc.tcp, http
            a, b = Api(ups[0].listeners["http"]), Api(ups[1].listeners["http"])
            try:

                async def meshed() -> bool:
                    for api in (a, b):
                        _, status = await api.call("GET", "/status")
                        if status["p2p"]["pubsub"].get(SHARED_TOPIC, {}).get("peers", 0) < 1:
                            return False
                    return True

                await eventually(meshed, "the auth processes on the shared topic", timeout=30)
                token = await register_and_verify(recorder, a, b, "carol@example.com")
                assert recorder.to("carol@example.com").role == "service"
                status, profile = await a.call("GET", "/v1/profile", token=token)
                assert (status, profile["email"]) == (200, "carol@example.com"), profile
                await concurrent_registrations(recorder, a, b, rounds=3)
            finally:
                await a.close()
                await b.close()
            assert [await asyncio.to_thread(up.stop) for up in ups] == [0, 0]
        finally:
            for up in ups:
                up.kill()
