"""What is checked when: files exist at `msuite validate`; they parse and match when the node is built."""

from __future__ import annotations

import shutil
import ssl
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from msuite.runtime.cli import main
from msuite.runtime.errors import NodeError
from msuite.runtime.grpc.tls import server_tls
from msuite.runtime.node import Node
from msuite.spec import Manifest, ManifestError, load_manifest

from .conftest import Pki
from .conftest import server_tls as settings

GRPC_AND_HTTP = """\
    name: tls
    repo: ":memory:"
    grpc:
      tcp:
        port: 0
        tls:
          cert: {cert}
          key: {key}
    http:
      port: 0
      tls:
        cert: cert.pem
        key: {http_key}
        client_ca: {ca}
    discovery:
      static: {{other.v1.Other: "127.0.0.1:1"}}
      tls:
        ca: {discovery_ca}
    """


def write(folder: Path, pki: Pki, **names: str) -> Path:
    """A manifest naming the PEM files copied beside it; ``names`` replaces file names."""
    for name in ("cert", "key", "ca", "other_key"):
        shutil.copy(getattr(pki, name), folder / f"{name}.pem")
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase"),
    )
    (folder / "encrypted.pem").write_bytes(encrypted)
    files = {
        "cert": "cert.pem",
        "key": "key.pem",
        "http_key": "key.pem",
        "ca": "ca.pem",
        "discovery_ca": "ca.pem",
        **names,
    }
    path = folder / "msuite.yaml"
    path.write_text(textwrap.dedent(GRPC_AND_HTTP.format(**files)))
    return path


def test_good_files_validate(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(write(tmp_path, pki))]) == 0


def test_a_missing_file_is_a_validate_error_at_its_line(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, pki, key="missing.key", ca="tls/none.pem", discovery_ca="nope.pem")
    assert main(["validate", str(path)]) != 0
    assert capsys.readouterr().err.splitlines()[:3] == [
        f"{path}:8:12: grpc.tcp.tls.key: TLS file not found: {tmp_path / 'missing.key'}",
        f"{path}:14:16: http.tls.client_ca: TLS file not found: {tmp_path / 'tls/none.pem'}",
        f"{path}:18:9: discovery.tls.ca: TLS file not found: {tmp_path / 'nope.pem'}",
    ]


def test_a_client_cert_without_its_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "msuite.yaml"
    path.write_text("name: c\ndiscovery:\n  tls: {cert: c.pem}\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert "3:15: discovery.tls.cert: a client certificate needs both cert and key (add key)" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("names", "at", "why"),
    [
        ({"key": "other_key.pem"}, "8:12: grpc.tcp.tls.key", "does not match the certificate"),
        ({"cert": "key.pem"}, "7:13: grpc.tcp.tls.cert", "does not hold PEM certificates"),
        ({"key": "cert.pem"}, "8:12: grpc.tcp.tls.key", "does not hold a PEM private key"),
        ({"key": "encrypted.pem"}, "8:12: grpc.tcp.tls.key", "is encrypted; msuite reads unencrypted"),
        ({"http_key": "other_key.pem"}, "13:10: http.tls.key", "does not match the certificate"),
        ({"ca": "key.pem"}, "14:16: http.tls.client_ca", "does not hold PEM certificates"),
        ({"discovery_ca": "cert.pem"}, None, None),
        ({"discovery_ca": "key.pem"}, "18:9: discovery.tls.ca", "does not hold PEM certificates"),
    ],
)
def test_bad_material_is_a_build_error_at_its_manifest_position(
    pki: Pki, tmp_path: Path, names: dict[str, str], at: str | None, why: str | None
) -> None:
    path = write(tmp_path, pki, **names)
    node = Node(load_manifest(path))
    if at is None:  # the control: good material builds
        node.build()
        return
    assert why is not None
    with pytest.raises(NodeError) as caught:
        node.build()
    message = str(caught.value)
    assert message.startswith(f"{path}:{at}: "), message
    assert why in message
    assert "Traceback" not in message


def test_up_reports_a_mismatched_key_without_a_traceback(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, pki, key="other_key.pem")
    assert main(["up", str(path)]) != 0
    captured = capsys.readouterr()
    assert f"{path}:8:12: grpc.tcp.tls.key: the key in" in captured.err
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("mutual", [False, True])
def test_the_server_context_wants_tls_1_2_and_client_certificates_with_client_ca(
    pki: Pki, mutual: bool
) -> None:
    material = server_tls(Manifest(name="m"), ("http", "tls"), settings(pki, mutual=mutual))
    assert material.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert material.context.verify_mode == (ssl.CERT_REQUIRED if mutual else ssl.CERT_NONE)
    assert material.mode == ("mtls" if mutual else "tls")
    assert material.cert == pki.cert.read_bytes() and material.key == pki.key.read_bytes()
