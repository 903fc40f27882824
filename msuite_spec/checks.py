"""Semantic checks: rules that span fields, run after the schema.

:func:`check_manifest` needs nothing but the manifest (it also runs when a
:class:`~msuite.spec.Manifest` is built in Python); :func:`check_files`
looks at the file system around the manifest (proto files, socket path
lengths). Checks that need compiled protos (ACL entries naming methods) are
``msuite generate``'s.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import TYPE_CHECKING

from .source import Path, format_path

if TYPE_CHECKING:
    from .models import JWT, Manifest

__all__ = ["EVENT_SCALAR_TYPES", "Issue", "check_event_type", "check_files", "check_manifest"]

EVENT_SCALAR_TYPES = ("str", "int", "float", "bool", "bytes", "datetime")
"""Field types an event may use, alone, in ``list[T]`` or as ``T | None``."""

UNIX_PATH_MAX = 107
"""Longest Unix socket path gRPC accepts (sun_path is 108 bytes with the NUL)."""

_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


@dataclass(frozen=True)
class Issue:
    """A problem at ``path``; ``at_key`` points at the key rather than its value."""

    path: Path
    message: str
    at_key: bool = False

    @property
    def path_text(self) -> str:
        return format_path(self.path)


def check_event_type(text: str) -> str | None:
    """Why ``text`` is not a valid event field type, or None when it is."""
    t = " ".join(text.split())
    if t.endswith("| None"):
        inner = t[: -len("| None")].strip()
        if inner.endswith("| None"):
            return "'| None' may appear once"
        return check_event_type(inner) if inner else "'| None' needs a type before it"
    if t.startswith("list[") and t.endswith("]"):
        inner = t[5:-1].strip()
        return check_event_type(inner) if inner else "list[] needs an item type, e.g. list[str]"
    if t in EVENT_SCALAR_TYPES:
        return None
    return "unknown event field type: use one of " + ", ".join(EVENT_SCALAR_TYPES) + ", list[T] or T | None"


_HOSTPORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


def check_address(text: str) -> str | None:
    """Why ``text`` is not a static service address, or None when it is."""
    if text.startswith("unix:"):
        return None if len(text) > len("unix:") else "unix: needs a socket path"
    if text.startswith("unix-abstract:"):
        return None if len(text) > len("unix-abstract:") else "unix-abstract: needs a name"
    match = _HOSTPORT.match(text)
    if match is None or not 0 < int(match.group("port")) <= 65535:
        return "an address is host:port (port 1-65535), [v6]:port, unix:/path or unix-abstract:NAME"
    return None


_LOCALHOST = {"localhost", "127.0.0.1", "::1"}


def _hosts_overlap(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS:
        return True
    if "localhost" in (a, b):
        return a in _LOCALHOST and b in _LOCALHOST  # localhost binds 127.0.0.1 and ::1
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _port_issues(m: Manifest) -> Iterator[Issue]:
    listeners: list[tuple[Path, str, int]] = []
    if m.grpc is not None and m.grpc.tcp is not None:
        listeners.append((("grpc", "tcp", "port"), m.grpc.tcp.host, m.grpc.tcp.port))
    if m.http is not None:
        listeners.append((("http", "port"), m.http.host, m.http.port))
    if m.p2p is not None:
        listeners.append((("p2p", "port"), m.p2p.host, m.p2p.port))
    for i, (path, host, port) in enumerate(listeners):
        if port == 0:
            continue
        for earlier_path, earlier_host, earlier_port in listeners[:i]:
            if earlier_port == port and _hosts_overlap(host, earlier_host):
                yield Issue(path, f"port {port} is already used by {format_path(earlier_path)}")
                break


_NEEDS_P2P = "a `p2p` section (libp2p host); add `p2p: true` or remove this"


_PEER_ID = re.compile(r"/p2p/[1-9A-HJ-NP-Za-km-z]{32,128}$")


def _p2p_issues(m: Manifest) -> Iterator[Issue]:
    if m.p2p is not None:
        for index, address in enumerate(m.p2p.bootstrap):
            if not _PEER_ID.search(str(address)):
                yield Issue(
                    ("p2p", "bootstrap", index),
                    "a bootstrap peer needs its peer ID: end the multiaddr with /p2p/<peer ID>",
                )
        return
    if m.grpc is not None and m.grpc.p2p:
        yield Issue(("grpc", "p2p"), f"gRPC over libp2p needs {_NEEDS_P2P}")
    if m.storage.shared is not None:
        yield Issue(("storage", "shared"), f"the shared store needs {_NEEDS_P2P}", at_key=True)
    if m.files is not None:
        yield Issue(("files",), f"file sharing needs {_NEEDS_P2P}")
    if m.events:
        yield Issue(("events",), f"events need {_NEEDS_P2P}", at_key=True)
    if m.discovery.mdns:
        yield Issue(("discovery", "mdns"), f"mDNS discovery needs {_NEEDS_P2P}")
    if m.discovery.dht:
        yield Issue(("discovery", "dht"), f"DHT discovery needs {_NEEDS_P2P}")


def _grpc_issues(m: Manifest) -> Iterator[Issue]:
    g = m.grpc
    if g is not None and g.tcp is None and g.unix is None and not g.p2p:
        yield Issue(("grpc",), "gRPC has no listener: add tcp, unix or p2p: true", at_key=True)
    if m.services and g is None:
        yield Issue(
            ("services",),
            "services need a gRPC server: add a `grpc` section with tcp, unix or p2p",
            at_key=True,
        )


def _storage_issues(m: Manifest) -> Iterator[Issue]:
    if m.in_memory and m.storage.kv == "leveldb":
        yield Issue(
            ("storage", "kv"),
            'leveldb needs an on-disk repo, but repo is ":memory:"; use kv: memory or set repo to a folder',
        )


def _locker_issues(m: Manifest) -> Iterator[Issue]:
    lk = m.locker
    if lk is None:
        return
    needs = {"redis": "url", "zookeeper": "hosts"}
    needed = needs.get(lk.backend)
    if needed is not None and getattr(lk, needed) is None:
        yield Issue(
            ("locker", "backend"),
            f"backend {lk.backend} needs locker.{needed}"
            + (" (e.g. redis://127.0.0.1:6379/0)" if needed == "url" else " (e.g. 127.0.0.1:2181)"),
        )
    for field, owner in (("url", "redis"), ("password", "redis"), ("hosts", "zookeeper")):
        if getattr(lk, field) is not None and lk.backend != owner:
            yield Issue(
                ("locker", field), f"locker.{field} is for backend {owner}, not {lk.backend}", at_key=True
            )
    if lk.tls is not None and lk.backend == "memory":
        yield Issue(("locker", "tls"), "TLS has no meaning for the memory backend", at_key=True)


def _auth_issues(m: Manifest) -> Iterator[Issue]:
    if m.auth is None:
        return
    for resource in m.auth.acl:
        if not resource.startswith("/"):
            yield Issue(
                ("auth", "acl", resource),
                "an ACL resource is a gRPC method (/pkg.Service/Method) or an HTTP path, starting with '/'",
                at_key=True,
            )
    ladder = m.auth.ladder
    for resource, role in m.auth.acl.items():
        if role not in ladder:
            yield Issue(("auth", "acl", resource), ladder.unknown(role) + "; the ladder is auth.roles")
    if m.auth.jwt is not None:
        yield from _jwt_issues(m.auth.jwt)
    outgoing = m.auth.outgoing
    if outgoing is not None:
        at: Path = ("auth", "outgoing")
        if (outgoing.role is None) == (outgoing.token is None):
            yield Issue(at, "auth.outgoing has exactly one of role (mint a token) and token (a fixed one)")
        elif outgoing.role is not None:
            if outgoing.role not in ladder:
                yield Issue((*at, "role"), ladder.unknown(outgoing.role) + "; the ladder is auth.roles")
            if m.auth.jwt is None or not _can_sign(m.auth.jwt):
                yield Issue(
                    (*at, "role"),
                    "minting a token needs a signing key in auth.jwt (a secret, or a key with a secret "
                    "or a private key)",
                )


def _can_sign(jwt: JWT) -> bool:
    return jwt.secret is not None or any(k.secret is not None or k.private_key is not None for k in jwt.keys)


def _jwt_issues(jwt: JWT) -> Iterator[Issue]:
    at: Path = ("auth", "jwt")
    if jwt.secret is None and not jwt.keys and jwt.jwks is None and jwt.jwks_url is None:
        yield Issue(at, "auth.jwt needs a key: a secret, keys, a jwks file or a jwks_url")
    hmac_algorithms = [a for a in jwt.algorithms if a.startswith("HS")]
    signers: list[str] = []
    seen: dict[str, int] = {}
    for i, key in enumerate(jwt.keys):
        given = [name for name in ("secret", "public_key", "private_key") if getattr(key, name) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            yield Issue(
                (*at, "keys", i),
                f"a key has exactly one of secret, public_key, private_key (this one: {what})",
            )
        if key.kid in seen:
            yield Issue((*at, "keys", i, "kid"), f"kid '{key.kid}' is also the kid of keys[{seen[key.kid]}]")
        seen.setdefault(key.kid, i)
        if key.secret is not None and not hmac_algorithms:
            yield Issue((*at, "keys", i, "secret"), "a secret needs an HS algorithm in auth.jwt.algorithms")
        if key.secret is not None or key.private_key is not None:
            signers.append(key.kid)
    if jwt.secret is not None and not hmac_algorithms:
        yield Issue((*at, "secret"), "a secret needs an HS algorithm in auth.jwt.algorithms")
    if jwt.sign_with is not None and jwt.sign_with not in signers:
        known = f"keys that can sign: {', '.join(signers)}" if signers else "no key of auth.jwt.keys can sign"
        yield Issue(
            (*at, "sign_with"), f"no key with kid '{jwt.sign_with}' and a secret or private key ({known})"
        )


def _event_issues(m: Manifest) -> Iterator[Issue]:
    for event, fields in m.events.items():
        if not fields:
            yield Issue(("events", event), "an event needs at least one field")
        for name, type_text in fields.items():
            why = check_event_type(type_text)
            if why is not None:
                yield Issue(("events", event, name), why)


def _task_issues(m: Manifest) -> Iterator[Issue]:
    if m.tasks.min_workers > m.tasks.max_workers:
        yield Issue(
            ("tasks", "min_workers"),
            f"min_workers ({m.tasks.min_workers}) is above max_workers ({m.tasks.max_workers})",
        )


def _diagnostics_issues(m: Manifest) -> Iterator[Issue]:
    if m.http is None:
        if m.diagnostics.metrics is not None:
            yield Issue(("diagnostics", "metrics"), "GET /metrics is served by the HTTP server: add http:")
        if m.diagnostics.profiling:
            yield Issue(("diagnostics", "profiling"), "/debug/ is served by the HTTP server: add http:")
    tracing = m.diagnostics.tracing
    if tracing is not None and tracing.otlp is not None:
        otlp = tracing.otlp
        if tracing.jaeger is not None:
            yield Issue(
                ("diagnostics", "tracing", "jaeger"),
                "choose one exporter: jaeger (OpenTracing over UDP) or otlp (OpenTelemetry), not both",
                at_key=True,
            )
        scheme, _, rest = otlp.endpoint.partition("://")
        if otlp.protocol == "grpc" and "/" in rest.rstrip("/"):
            yield Issue(
                ("diagnostics", "tracing", "otlp", "endpoint"),
                "an OTLP/gRPC endpoint has no path: give scheme, host and port only",
            )
        if otlp.ca is not None and scheme != "https":
            yield Issue(
                ("diagnostics", "tracing", "otlp", "ca"), "a CA file needs an https:// endpoint", at_key=True
            )


def _discovery_issues(m: Manifest) -> Iterator[Issue]:
    for name, address in m.discovery.static.items():
        why = check_address(address)
        if why is not None:
            yield Issue(("discovery", "static", name), why)
    tls = m.discovery.tls
    if tls is not None and (tls.cert is None) != (tls.key is None):
        given, missing = ("cert", "key") if tls.cert is not None else ("key", "cert")
        yield Issue(
            ("discovery", "tls", given), f"a client certificate needs both cert and key (add {missing})"
        )


_CHECKS = (
    _port_issues,
    _p2p_issues,
    _grpc_issues,
    _storage_issues,
    _locker_issues,
    _auth_issues,
    _event_issues,
    _task_issues,
    _diagnostics_issues,
    _discovery_issues,
)


def check_manifest(manifest: Manifest) -> list[Issue]:
    """Every cross-field problem of ``manifest`` (no file system access)."""
    return [issue for check in _CHECKS for issue in check(manifest)]


def _why_not(path: FilePath, *, want_dir: bool) -> str | None:
    """Why ``path`` is not an existing file (or folder), or None when it is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except ValueError:  # a NUL character inside the path
        return "path contains a NUL character"
    if want_dir and not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if not want_dir and not stat.S_ISREG(info.st_mode):
        return "is not a file"
    return None


def _tls_files(m: Manifest) -> Iterator[tuple[Path, str]]:
    """``(path, file)`` of every TLS file the manifest names."""
    sections: list[tuple[Path, object]] = []
    if m.grpc is not None and m.grpc.tcp is not None:
        sections.append((("grpc", "tcp", "tls"), m.grpc.tcp.tls))
    if m.http is not None:
        sections.append((("http", "tls"), m.http.tls))
    sections.append((("discovery", "tls"), m.discovery.tls))
    for at, tls in sections:
        for name in ("cert", "key", "client_ca", "ca"):
            file = getattr(tls, name, None)
            if isinstance(file, str):
                yield (*at, name), file


def check_files(manifest: Manifest, base_dir: FilePath) -> list[Issue]:
    """Problems with files the manifest names, relative to ``base_dir``."""
    issues: list[Issue] = []
    for name, service in manifest.services.items():
        looked_for = base_dir / service.proto
        why = _why_not(looked_for, want_dir=False)
        if why in ("not found", "is not a file"):  # say where it looked
            why += f": looked for {looked_for} (proto paths are relative to the manifest's folder)"
        if why is not None:
            issues.append(Issue(("services", name, "proto"), f"proto file {why}"))
    if "proto_paths" in manifest.codegen.model_fields_set:
        for i, root in enumerate(manifest.codegen.proto_paths):
            why = _why_not(base_dir / root, want_dir=True)
            if why is not None:
                issues.append(Issue(("codegen", "proto_paths", i), f"proto include folder {why}"))
    jwt = manifest.auth.jwt if manifest.auth is not None else None
    if jwt is not None:
        named: list[tuple[Path, str | None]] = [(("auth", "jwt", "jwks"), jwt.jwks)]
        for i, key in enumerate(jwt.keys):
            named += [(("auth", "jwt", "keys", i, "public_key"), key.public_key)]
            named += [(("auth", "jwt", "keys", i, "private_key"), key.private_key)]
        for at, file in named:
            if file is not None:
                why = _why_not(base_dir / file, want_dir=False)
                if why is not None:
                    issues.append(Issue(at, f"key file {why}: {base_dir / file}"))
    tracing = manifest.diagnostics.tracing
    if tracing is not None and tracing.otlp is not None and tracing.otlp.ca is not None:
        why = _why_not(base_dir / tracing.otlp.ca, want_dir=False)
        if why is not None:
            at = ("diagnostics", "tracing", "otlp", "ca")
            issues.append(Issue(at, f"CA file {why}: {base_dir / tracing.otlp.ca}"))
    for at, file in _tls_files(manifest):
        why = _why_not(base_dir / file, want_dir=False)
        if why is not None:
            issues.append(Issue(at, f"TLS file {why}: {base_dir / file}"))
    if manifest.grpc is not None and manifest.grpc.unix is not None:
        path = manifest.grpc.unix.path
        if not path.startswith("unix-abstract:"):
            resolved = str((base_dir / path).absolute())
            if len(resolved.encode()) > UNIX_PATH_MAX:
                issues.append(
                    Issue(
                        ("grpc", "unix", "path"),
                        f"socket path is {len(resolved.encode())} bytes once resolved; the limit is "
                        f"{UNIX_PATH_MAX}: use a shorter path or unix-abstract:NAME",
                    )
                )
    return issues
