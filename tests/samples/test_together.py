"""The three samples together, as ``samples/run.py --two`` starts them: notifications (mailing
through an aiosmtpd server this test runs), two auth nodes and two cdn nodes, each its own
``msuite up`` process on 127.0.0.1, auth locking through a Redis of run.py's own.

One user's whole path: register -> the welcome mail and the code arrive at the SMTP server ->
verify -> authenticate -> the token works on the other auth node -> an admin-only call with it
is refused -> upload on cdn 1, download on cdn 2 (bytes and CID equal) -> concurrent
registrations of one email on both auth nodes: exactly one wins -> SIGKILL of one auth node:
the other keeps serving."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from tests.servers import free_port

SECRET = "the-samples-secret-of-at-least-32-bytes"


class Mailbox:
    """aiosmtpd's handler: every mail the server accepts, as (recipients, subject, body)."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: Any = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(("plain",))
        self.mails.append((list(envelope.rcpt_tos), str(message["subject"]), str(body.get_content())))
        return "250 OK"

    def wait(self, to: str, subject: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for recipients, got, body in list(self.mails):
                if to in recipients and got == subject:
                    return body
            time.sleep(0.02)
        raise AssertionError(f"no mail {subject!r} to {to} in {timeout} s; got {self.mails}")


class Deployment:
    """``samples/run.py --two --ports 0`` and what it printed."""

    def __init__(self, repos: Path, smtp_port: int) -> None:
        env = {**os.environ, "SAMPLES_JWT_SECRET": SECRET, "AUTH_ADMINS": "boss@example.com"}
        env.pop("REDIS_URL", None)
        redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing there: run.py starts its own
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "samples" / "run.py"), "--two", "--ports", "0", "--repos", str(repos)]
            + ["--smtp", f"127.0.0.1:{smtp_port}", "--redis", redis],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.http: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    def _drain(self) -> None:  # the nodes' logs: read, so a full pipe never blocks them
        assert self.process.stderr is not None
        self.log = ""
        for line in self.process.stderr:
            self.log = (self.log + line)[-20000:]

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError("the samples did not all start in time") from None
            if not line:
                raise AssertionError(f"run.py ended: {self.process.wait()}")
            if line == "all ready":
                return
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "ready" and parts[2] == "http":
                self.http[parts[0]] = parts[3]
            elif len(parts) == 3 and parts[1] == "pid":
                self.pids[parts[0]] = int(parts[2])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in self.pids.values():  # nothing may outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def call(
    method: str, url: str, body: Any = None, token: str | None = None, raw: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if raw is not None:
        request.add_header("Content-Type", "application/octet-stream")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        payload, status, headers = error.read(), error.code, dict(error.headers)
    if headers.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(payload or b"null"), headers
    return status, payload, headers


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, Mailbox]]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (Debian package redis-server) for auth's locks")
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    deployment = Deployment(tmp_path / "repos", smtp.port)
    try:
        deployment.wait_ready()
        yield deployment, mailbox
    finally:
        deployment.stop()
        smtp.stop()


def test_a_user_registers_verifies_signs_in_and_shares_a_file_across_the_samples(
    deployment: tuple[Deployment, Mailbox],
) -> None:
    nodes, mailbox = deployment
    auth, auth2, cdn, cdn2 = (nodes.http[name] for name in ("auth", "auth-2", "cdn", "cdn-2"))
    user = {"email": "ann@example.com", "password": "correct horse", "name": "Ann"}

    status, answer, _ = call("POST", f"{auth}/v1/register", user)
    assert status == 200, answer
    welcome = mailbox.wait("ann@example.com", "Welcome to the msuite samples")
    assert "Ann" in welcome
    coded = mailbox.wait("ann@example.com", "Your verification code")
    code = re.search(r"\b(\d{6})\b", coded)
    assert code is not None, coded

    status, answer, _ = call(
        "POST", f"{auth}/v1/authenticate", {"email": user["email"], "password": user["password"]}
    )
    assert status == 400, answer  # not verified yet (FAILED_PRECONDITION)
    status, answer, _ = call("POST", f"{auth}/v1/verify", {"email": user["email"], "code": code.group(1)})
    assert status == 200, answer
    status, answer, _ = call(
        "POST", f"{auth}/v1/authenticate", {"email": user["email"], "password": user["password"]}
    )
    assert status == 200, answer
    token = answer["accessToken"]

    deadline = time.monotonic() + 5
    while True:  # the other auth node: the verification reaches it through the shared store
        status, profile, _ = call("GET", f"{auth2}/v1/profile", token=token)
        if (status == 200 and profile.get("verified")) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and profile["email"] == "ann@example.com" and profile["verified"] is True
    status, _, _ = call("GET", f"{auth2}/v1/users", token=token)  # admin only
    assert status == 403

    data = os.urandom(3 * 1024 * 1024 + 5)
    status, stored, _ = call("PUT", f"{cdn}/cdn/files/holiday.bin", raw=data, token=token)
    assert status == 201, stored
    deadline = time.monotonic() + 5
    while True:  # the name reaches cdn 2 through the shared store, a round trip or so later
        status, got, headers = call("GET", f"{cdn2}/cdn/files/holiday.bin")
        if status != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and got == data and headers["ETag"] == f'"{stored["cid"]}"'
    status, by_cid, _ = call("GET", f"{cdn2}/cdn/cid/{stored['cid']}")
    assert status == 200 and by_cid == data

    # one email registered on both auth nodes at once, a few times: exactly one wins each time
    for round_ in range(3):
        twin = {"email": f"twin{round_}@example.com", "password": "long enough", "name": "Twin"}
        with ThreadPoolExecutor(2) as pool:
            both = [pool.submit(call, "POST", f"{base}/v1/register", twin) for base in (auth, auth2)]
            answers = [future.result()[0] for future in both]
        assert sorted(answers) == [200, 409], answers

    # SIGKILL one auth node: the other keeps serving
    os.kill(nodes.pids["auth"], signal.SIGKILL)
    status, answer, _ = call(
        "POST", f"{auth2}/v1/authenticate", {"email": user["email"], "password": user["password"]}
    )
    assert status == 200, answer
    status, profile, _ = call("GET", f"{auth2}/v1/profile", token=answer["accessToken"])
    assert status == 200 and profile["email"] == "ann@example.com"
    deadline = time.monotonic() + 20
    while True:  # a registration syncs with the channel: once the dead node is gone from it, it works
        status, answer, _ = call(
            "POST",
            f"{auth2}/v1/register",
            {"email": "late@example.com", "password": "long enough", "name": "Late"},
        )
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200, answer
