"""``msuite up`` with TLS listeners: the readiness lines say ``tls``/``mtls``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import Pki

READY = re.compile(r"^ready (\S+) (\S+) \((m?tls)\) \(\d+ ms\)$")


def test_readiness_lines_say_tls_and_mtls(pki: Pki, tmp_path: Path) -> None:
    manifest = tmp_path / "msuite.yaml"
    manifest.write_text(
        "name: up-tls\n"
        'repo: ":memory:"\n'
        f"grpc: {{tcp: {{port: 0, tls: {{cert: {pki.cert}, key: {pki.key}, client_ca: {pki.ca}}}}}}}\n"
        f"http: {{port: 0, tls: {{cert: {pki.cert}, key: {pki.key}}}}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "msuite", "up", str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().rstrip("\n") for _ in range(2)]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    matches = [READY.match(line) for line in lines]
    assert all(matches), (lines, err)
    ready = {m.group(1): (m.group(2), m.group(3)) for m in matches if m is not None}
    assert ready["grpc.tcp"][0].startswith("127.0.0.1:") and ready["grpc.tcp"][1] == "mtls"
    assert ready["http"][0].startswith("https://127.0.0.1:") and ready["http"][1] == "tls"
    assert process.returncode == 0, err
