"""samples/notifications end to end, with real parts: an SMTP server on loopback (aiosmtpd, with
STARTTLS and AUTH where a test needs them), the sample's own folder copied and served in-process
(``running``) and by ``msuite up``, a second node on the channel ``samples`` publishing
``UserRegistered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import logging
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from msuite.runtime.node import Node
from msuite.runtime.testing import Harness, running
from msuite.spec import Manifest, load_manifest
from tests.helpers import eventually
from tests.integration.test_up import Up
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "notifications"
SECRET = "notifications-sample-test-secret-0123456789"
WELCOME = "Welcome to the msuite samples"


# ---------------------------------------------------------------------------- an SMTP server


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


class Mailbox:
    """aiosmtpd's handler: keeps each mail the server accepts (called in the server's thread)."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


class Login:
    """aiosmtpd's authenticator (AUTH PLAIN and LOGIN): one user and its password."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        given = (auth_data.login, auth_data.password) if isinstance(auth_data, LoginPassword) else None
        # refused: aiosmtpd answers 535 and the client may try another mechanism
        return AuthResult(success=given == (self.user, self.password), handled=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1, keeping the mail it accepts; with ``login``, only after AUTH (PLAIN
    or LOGIN) with it; with ``tls``, STARTTLS is required (before AUTH too)."""

    def __init__(self, *, login: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.login = login
        self.tls = tls
        self._mailbox = Mailbox()
        self._controller: Controller | None = None
        self.port = 0

    @property
    def received(self) -> list[Received]:
        return self._mailbox.received

    async def start(self, port: int = 0) -> int:
        """Listens on ``port`` (a free one when 0); returns it."""
        options: dict[str, Any] = {}
        if self.tls is not None:
            options.update(tls_context=self.tls, require_starttls=True)
        if self.login is not None:
            options.update(
                authenticator=Login(*self.login), auth_required=True, auth_require_tls=self.tls is not None
            )
        self.port = port or free_port()
        self._controller = Controller(
            self._mailbox, hostname="127.0.0.1", port=self.port, ready_timeout=5.0, **options
        )
        # start() waits (briefly) for the server's thread: not on the test's event loop
        await asyncio.to_thread(self._controller.start)
        return self.port

    async def close(self) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
            self._controller = None

    async def wait(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` mails, once they have arrived (polled: they arrive in another thread)."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                await asyncio.sleep(0.02)
        return self.received[:count]


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    await server.start()
    yield server
    await server.close()


def smtp_env(monkeypatch: pytest.MonkeyPatch, port: int, **extra: str) -> None:
    """The sample's settings: the shared secret and the SMTP provider on ``port``."""
    settings = {
        "SAMPLES_JWT_SECRET": SECRET,
        "NOTIFY_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_TLS": "none",
        "SMTP_FROM": "samples <noreply@samples.test>",
        **extra,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("SAMPLES_SEED", "SMTP_USERNAME", "SMTP_PASSWORD"):
        if name not in extra:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A copy of the sample folder (its committed gen/ included)."""
    folder = tmp_path / "notifications"
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns(".msuite", "__pycache__"))
    return folder


@contextlib.asynccontextmanager
async def serving(folder: Path) -> AsyncIterator[Harness]:
    async with running(folder / "msuite.yaml") as h:
        yield h


def pb(h: Harness) -> Any:
    """The sample's generated messages."""
    return h.node.wiring.notifications__pb2  # type: ignore[union-attr]


def loaded(module: str) -> Any:
    """A module of the sample node started last (its folder's modules are the ones loaded)."""
    return sys.modules[module]


# ---------------------------------------------------------------------------- in-process


async def test_send_with_a_service_token_delivers_the_mail_and_a_user_token_is_refused(
    sample: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_env(monkeypatch, smtp.port)
    async with serving(sample) as h:
        m = pb(h)
        reply = await h.clients.notifications().Send(
            m.SendRequest(user_id="u1", to="ann@example.com", subject="Your code", body="It is 123456."),
            metadata=h.metadata("service", "auth"),
        )
        assert len(reply.ids) == 1 and reply.ids[0].startswith("u1/")
        [mail] = await smtp.wait(1)
        assert mail.recipients == ["ann@example.com"] and mail.sender == "noreply@samples.test"
        assert mail.message["To"] == "ann@example.com" and mail.message["Subject"] == "Your code"
        assert mail.body.strip() == "It is 123456."

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.clients.notifications().Send(
                m.SendRequest(user_id="u1", to="ann@example.com", subject="x"),
                metadata=h.metadata("user", "u1"),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        body = {"user_id": "u1", "to": "ann@example.com", "subject": "x"}
        async with h.http.post("/v1/notifications", json=body, headers=h.bearer("user", "u1")) as response:
            assert response.status == 403
        async with h.http.post("/v1/notifications", json=body) as response:
            assert response.status == 401
        async with h.http.post("/v1/notifications", json=body, headers=h.bearer("service")) as response:
            assert response.status == 200
        await smtp.wait(2)
        assert len(smtp.received) == 2  # the refused ones sent nothing


async def test_a_channel_send_reaches_every_subscriber_and_list_shows_a_user_only_their_own(
    sample: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_env(monkeypatch, smtp.port)
    async with serving(sample) as h:
        m, stub = pb(h), h.clients.notifications()
        for user in ("ann", "bob"):  # over HTTP, the user being the token's subject
            subscribe = {"channel": "news", "email": f"{user}@example.com"}
            async with h.http.post("/v1/subscriptions", json=subscribe, headers=h.bearer("user", user)) as r:
                assert r.status == 200 and (await r.json())["userId"] == user
        await stub.Subscribe(
            m.SubscribeRequest(channel="other", email="eve@example.com"), metadata=h.metadata("user", "eve")
        )
        with pytest.raises(grpc.aio.AioRpcError) as other:  # subscribing someone else needs `service`
            await stub.Subscribe(
                m.SubscribeRequest(user_id="bob", channel="x", email="a@b.c"),
                metadata=h.metadata("user", "ann"),
            )
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED

        reply = await stub.Send(
            m.SendRequest(channel="news", subject="News", body="Today's news."),
            metadata=h.metadata("service"),
        )
        assert len(reply.ids) == 2
        mails = await smtp.wait(2)
        assert sorted(r for mail in mails for r in mail.recipients) == ["ann@example.com", "bob@example.com"]
        assert {mail.message["Subject"] for mail in mails} == {"News"}
        await stub.Send(
            m.SendRequest(user_id="ann", to="ann@example.com", subject="Later", body="b"),
            metadata=h.metadata("service"),
        )

        listed = await stub.List(m.ListRequest(), metadata=h.metadata("user", "ann"))
        assert [(n.subject, n.channel, n.user_id) for n in listed.notifications] == [
            ("Later", "", "ann"),  # newest first
            ("News", "news", "ann"),
        ]
        assert listed.notifications[0].provider == "smtp" and listed.notifications[0].created.endswith("Z")
        with pytest.raises(grpc.aio.AioRpcError) as theirs:
            await stub.List(m.ListRequest(user_id="bob"), metadata=h.metadata("user", "ann"))
        assert theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with h.http.get("/v1/notifications?user_id=bob", headers=h.bearer("admin", "root")) as r:
            assert r.status == 200
            assert [n["to"] for n in (await r.json())["notifications"]] == ["bob@example.com"]
        async with h.http.get("/v1/notifications", headers=h.bearer("user", "eve")) as r:
            assert (await r.json())["notifications"] == []


async def test_a_user_registered_event_from_another_node_gets_the_welcome_mail(
    sample: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_env(monkeypatch, smtp.port)
    async with serving(sample) as h:
        user_registered = loaded("gen.events").UserRegistered
        publisher = Manifest.model_validate(
            {
                "name": "auth-stand-in",
                "repo": ":memory:",
                "p2p": {"port": 0, "bootstrap": [h.node.p2p.addrs[0]], "channel": "samples"},
                "events": {"UserRegistered": {"user_id": "str", "email": "str", "name": "str"}},
            }
        )
        async with Node(publisher) as other:
            topic = "msuite/samples/events/UserRegistered"
            await eventually(lambda: len(other.p2p.pubsub.mesh(topic)) >= 1, timeout=15)
            await other.events.publish(user_registered(user_id="u42", email="zoe@example.com", name="Zoë"))
            [mail] = await smtp.wait(1)
        assert mail.recipients == ["zoe@example.com"] and mail.message["Subject"] == WELCOME
        assert "Hello Zoë," in mail.body
        listed = await h.clients.notifications().List(pb(h).ListRequest(), metadata=h.metadata("user", "u42"))
        assert [n.subject for n in listed.notifications] == [WELCOME]


async def test_smtp_down_is_unavailable_the_notification_is_kept_and_the_node_serves_on(
    sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    smtp_env(monkeypatch, port)
    async with serving(sample) as h:
        m, stub = pb(h), h.clients.notifications()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stub.Send(
                m.SendRequest(user_id="u1", to="ann@example.com", subject="s", body="b"),
                metadata=h.metadata("service"),
            )
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        message = down.value.details() or ""
        assert f"SMTP server 127.0.0.1:{port} (none) unavailable: ConnectionRefusedError" in message, message
        assert "1 of 1 mails not delivered" in message
        listed = await stub.List(m.ListRequest(), metadata=h.metadata("user", "u1"))
        [kept] = listed.notifications
        assert kept.to == "ann@example.com" and kept.provider == "smtp"
        stored = await h.node.shared("notifications").list(loaded("notifications_service").Notification)
        assert [n.error for n in stored] == [message.split("): ", 1)[1]]

        server = SmtpServer()  # the server comes back on its port: the node delivers again
        await server.start(port)
        try:
            await stub.Send(
                m.SendRequest(user_id="u1", to="ann@example.com", subject="again"),
                metadata=h.metadata("service"),
            )
            [mail] = await server.wait(1)
            assert mail.message["Subject"] == "again"
        finally:
            await server.close()
        async with h.http.get("/status") as response:
            assert response.status == 200


async def test_starttls_and_login_reach_the_server_and_a_wrong_password_is_a_clear_error(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the CA the provider trusts
    server = SmtpServer(login=("mailer", "s3cret-pw"), tls=context)
    port = await server.start()
    try:
        smtp_env(monkeypatch, port, SMTP_TLS="starttls", SMTP_USERNAME="mailer", SMTP_PASSWORD="s3cret-pw")
        async with serving(sample) as h:
            request = pb(h).SendRequest(user_id="u1", to="ann@example.com", subject="secure")
            await h.clients.notifications().Send(request, metadata=h.metadata("service"))
            [mail] = await server.wait(1)
            assert mail.recipients == ["ann@example.com"] and mail.message["Subject"] == "secure"

        smtp_env(monkeypatch, port, SMTP_TLS="starttls", SMTP_USERNAME="mailer", SMTP_PASSWORD="wrong-pw")
        async with serving(sample) as h:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await h.clients.notifications().Send(request, metadata=h.metadata("service"))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            details = refused.value.details() or ""
            # aiosmtpd's reply to credentials its authenticator rejects
            expected = (
                "(starttls) refused the login of 'mailer': 535 5.7.8 Authentication credentials invalid"
            )
            assert expected in details, details
            assert "wrong-pw" not in details
    finally:
        await server.close()


async def test_the_log_provider_logs_one_line_per_mail_and_no_secret(
    sample: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_env(monkeypatch, 25, NOTIFY_PROVIDER="log", SMTP_PASSWORD="never-logged-pw")
    caplog.set_level(logging.INFO)
    async with serving(sample) as h:
        await h.clients.notifications().Send(
            pb(h).SendRequest(user_id="u1", to="ann@example.com", subject="Hi", body="line 1\nline 2"),
            metadata=h.metadata("service"),
        )
        listed = await h.clients.notifications().List(pb(h).ListRequest(), metadata=h.metadata("user", "u1"))
    mails = [r.getMessage() for r in caplog.records if r.name == "notifications.mail"]
    assert mails == ["mail to ann@example.com: subject 'Hi', body 'line 1\\nline 2'"]
    assert "never-logged-pw" not in caplog.text and SECRET not in caplog.text
    assert [n.provider for n in listed.notifications] == ["log"]


# ---------------------------------------------------------------------------- msuite up


def http(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_msuite_up_serves_the_sample_through_the_http_gateway(
    sample: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_env(monkeypatch, smtp.port)
    for name in ("NOTIFICATIONS_GRPC_PORT", "NOTIFICATIONS_HTTP_PORT", "NOTIFICATIONS_P2P_PORT"):
        monkeypatch.setenv(name, "0")
    # tokens as a user makes them (README.md): the manifest's key and role ladder
    from msuite.runtime.auth import JWTAuth

    auth = load_manifest(sample / "msuite.yaml").auth
    assert auth is not None and auth.jwt is not None
    jwt = JWTAuth(auth.jwt, roles=auth.ladder)
    service, user = jwt.issue("auth", "service"), jwt.issue("ann", "user")

    up = Up(sample)
    try:
        listeners = await asyncio.to_thread(up.wait_ready, 3)
        base = listeners["http"]
        mail = {"user_id": "ann", "to": "ann@example.com", "subject": "Hello", "body": "From msuite up."}
        status, answer = await asyncio.to_thread(http, "POST", f"{base}/v1/notifications", service, mail)
        assert status == 200 and answer["ids"][0].startswith("ann/"), answer
        [received] = await smtp.wait(1)
        assert received.recipients == ["ann@example.com"] and received.body.strip() == "From msuite up."
        status, answer = await asyncio.to_thread(http, "POST", f"{base}/v1/notifications", user, mail)
        assert status == 403 and answer["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
        status, answer = await asyncio.to_thread(http, "GET", f"{base}/v1/notifications", user)
        assert status == 200 and [n["subject"] for n in answer["notifications"]] == ["Hello"]
        assert await asyncio.to_thread(up.stop) == 0
    finally:
        up.kill()
