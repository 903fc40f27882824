"""TLS fixtures: a certificate authority made with trustme and its files, and echo nodes over TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from msuite.spec import Manifest, load_manifest
from msuite.spec.models import ServerTLS


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for localhost/127.0.0.1, a client one, and strangers."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_key: Path
    """The key of another certificate: does not match ``cert``."""
    stranger_cert: Path
    stranger_key: Path
    """A client certificate from another CA."""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca, stranger_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    other = ca.issue_cert("other.example")
    stranger = stranger_ca.issue_cert("stranger.example")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
        "other_key": other.private_key_pem,
        "stranger_cert": stranger.cert_chain_pems[0],
        "stranger_key": stranger.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = folder / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = path
    return Pki(**paths)


def server_tls(pki: Pki, *, mutual: bool = False) -> ServerTLS:
    return ServerTLS(cert=str(pki.cert), key=str(pki.key), client_ca=str(pki.ca) if mutual else None)


def echo_over_tls(echo_manifest: Path, tls: ServerTLS, *, unix: bool = False, http: bool = True) -> Manifest:
    """The echo manifest with TLS on grpc.tcp; without its Unix socket unless ``unix``."""
    manifest = load_manifest(echo_manifest)
    assert manifest.grpc is not None and manifest.grpc.tcp is not None
    grpc = manifest.grpc.model_copy(
        update={
            "tcp": manifest.grpc.tcp.model_copy(update={"tls": tls}),
            "unix": manifest.grpc.unix if unix else None,
        }
    )
    return manifest.model_copy(update={"grpc": grpc, "http": manifest.http if http else None})
