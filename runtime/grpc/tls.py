"""TLS material of the node's TCP listeners and of its channels to static addresses.

Read and checked while the node is built, before anything binds, so a bad file
is a :class:`NodeError` at its manifest position (``file:line:col: grpc.tcp.tls.key:
...``), never a traceback from a handshake:

- each file is read (the paths are relative to the manifest's folder);
- the certificate file must hold a PEM certificate, the key file an unencrypted
  PEM private key that matches it, ``client_ca``/``ca`` PEM certificates.

TLS 1.2 is the least version either side accepts (gRPC's core default; set on
the HTTP server's ``ssl.SSLContext``). Only :mod:`ssl` is imported here; grpc
only by the methods that make grpc credentials, so the HTTP server uses this
module without grpc.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NodeError, where

if TYPE_CHECKING:
    import grpc

    from msuite.spec import Manifest
    from msuite.spec.models import ClientTLS, ServerTLS

__all__ = ["ClientMaterial", "ServerMaterial", "client_tls", "server_tls"]


@dataclass(frozen=True)
class ServerMaterial:
    """A listener's certificate, key and (for mutual TLS) client CAs, checked."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    """The server context for Python servers (aiohttp): TLS 1.2+, client certificates required
    and verified against ``client_ca`` when it is set."""

    @property
    def mode(self) -> str:
        """``mtls`` when clients must present a certificate, else ``tls`` (readiness lines, ``/status``)."""
        return "mtls" if self.client_ca is not None else "tls"

    def grpc_credentials(self) -> grpc.ServerCredentials:
        import grpc

        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ClientMaterial:
    """What the node's channels to static TCP addresses trust and present, checked."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(manifest: Manifest, at: tuple[str, ...], name: str, file: str) -> tuple[Path, bytes]:
    path = manifest.resolve(file)
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise NodeError(f"{where(manifest, *at, name)}: cannot read {path}: {exc.strerror or exc}") from None


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason, without the ``(_ssl.c:NNNN)`` suffix."""
    return str(exc.reason or exc.strerror or exc).split(" (_ssl.c:")[0]


def _check_certificates(manifest: Manifest, at: tuple[str, ...], name: str, path: Path, data: bytes) -> None:
    """``data`` holds at least one PEM certificate (and nothing that is not one)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        reason = _reason(exc) if isinstance(exc, ssl.SSLError) else "not ASCII text"
        raise NodeError(
            f"{where(manifest, *at, name)}: {path} does not hold PEM certificates ({reason})"
        ) from None


def read_ca(manifest: Manifest, at: tuple[str, ...], name: str, file: str) -> tuple[Path, bytes]:
    """The CA file at ``at.name`` (its path and PEM bytes), checked to hold certificates; a
    :class:`NodeError` at the manifest's position when it cannot be read or holds none."""
    path, data = _read(manifest, at, name, file)
    _check_certificates(manifest, at, name, path, data)
    return path, data


def _load_pair(
    manifest: Manifest,
    at: tuple[str, ...],
    context: ssl.SSLContext,
    cert: tuple[Path, bytes],
    key: tuple[Path, bytes],
) -> None:
    """Load the certificate and its key into ``context``; a key that does not match is refused."""
    (cert_path, cert_data), (key_path, key_data) = cert, key
    _check_certificates(manifest, at, "cert", cert_path, cert_data)
    if b"ENCRYPTED" in key_data:
        raise NodeError(
            f"{where(manifest, *at, 'key')}: {key_path} is encrypted; msuite reads unencrypted PEM keys"
        )
    try:
        context.load_cert_chain(cert_path, key_path, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = f"the key in {key_path} does not match the certificate in {cert_path}"
        else:
            why = f"{key_path} does not hold a PEM private key ({_reason(exc)})"
        raise NodeError(f"{where(manifest, *at, 'key')}: {why}") from None
    except OSError as exc:
        raise NodeError(
            f"{where(manifest, *at, 'key')}: cannot read {key_path}: {exc.strerror or exc}"
        ) from None


def server_tls(manifest: Manifest, at: tuple[str, ...], settings: ServerTLS) -> ServerMaterial:
    """The checked material of the ``tls`` section at ``at`` (``grpc.tcp.tls``, ``http.tls``)."""
    cert = _read(manifest, at, "cert", settings.cert)
    key = _read(manifest, at, "key", settings.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pair(manifest, at, context, cert, key)
    client_ca: bytes | None = None
    if settings.client_ca is not None:
        ca_path, client_ca = _read(manifest, at, "client_ca", settings.client_ca)
        _check_certificates(manifest, at, "client_ca", ca_path, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode("ascii"))
    return ServerMaterial(cert[1], key[1], client_ca, context)


def client_tls(manifest: Manifest, settings: ClientTLS) -> ClientMaterial:
    """The checked material of ``discovery.tls``."""
    at = ("discovery", "tls")
    ca: bytes | None = None
    if settings.ca is not None:
        ca_path, ca = _read(manifest, at, "ca", settings.ca)
        _check_certificates(manifest, at, "ca", ca_path, ca)
    cert: bytes | None = None
    key: bytes | None = None
    if settings.cert is not None and settings.key is not None:
        cert_pair = _read(manifest, at, "cert", settings.cert)
        key_pair = _read(manifest, at, "key", settings.key)
        _load_pair(manifest, at, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_pair, key_pair)
        cert, key = cert_pair[1], key_pair[1]
    return ClientMaterial(ca, cert, key)
