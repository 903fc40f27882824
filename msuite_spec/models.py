"""The manifest as pydantic models: the one source of truth.

The YAML file, the JSON Schema in ``schemas/`` and the Python API all come
from these classes. Every model is frozen and refuses unknown keys; every
field has a description (it becomes the schema's documentation) and every
field but ``name`` has a default, so ``Manifest(name="web",
http=HTTP(port=8080))`` is a whole manifest.

Key names are the contract other parts of msuite (and users' files) rely on:
add keys, never rename them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._types import (
    Count,
    Duration,
    EventName,
    FieldName,
    Host,
    ImportPath,
    Multiaddr,
    Port,
    RoleName,
    Roles,
    SecretURL,
    ServiceName,
    Size,
)
from .source import SourceMap

__all__ = [
    "API_VERSION",
    "GRPC",
    "HTTP",
    "JWT",
    "P2P",
    "Auth",
    "ClientTLS",
    "Codegen",
    "Diagnostics",
    "Discovery",
    "JWTKey",
    "Locker",
    "LockerTLS",
    "Logging",
    "Manifest",
    "Metrics",
    "Outgoing",
    "ServerTLS",
    "Service",
    "SharedStore",
    "Shutdown",
    "Storage",
    "TCPListener",
    "Tasks",
    "Tracing",
    "UnixListener",
]

API_VERSION = "msuite/v1"
"""The manifest format this version of msuite reads."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""A node name: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit."""
DEFAULT_HOST = "127.0.0.1"
MEMORY_REPO = ":memory:"
DEFER_CHECKS = "msuite.defer_checks"
"""Validation context key: the loader runs the semantic checks itself, with positions."""


class Section(BaseModel):
    """Base of every manifest section: frozen, unknown keys refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=False,
        hide_input_in_errors=True,  # inputs may be secrets; errors name the path instead
        serialize_by_alias=True,
    )


def _boolean_too(schema: dict[str, Any]) -> None:
    """JSON Schema of a section that ``true`` turns on with its defaults and ``false`` off."""
    schema["anyOf"] = [*schema.get("anyOf", []), {"type": "boolean"}]


def _empty_entries_too(schema: dict[str, Any]) -> None:
    """JSON Schema of a list whose empty-string entries are skipped (``["${SEED:-}"]``)."""
    schema["items"] = {"anyOf": [schema["items"], {"const": "", "type": "string"}]}


def _true_means_defaults(value: Any) -> Any:
    """``key: true`` turns a section on with its defaults; ``false`` turns it off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


# --------------------------------------------------------------------------- codegen & services


class Codegen(Section):
    """Where ``msuite generate`` writes and where it looks for protos."""

    out: str = Field(
        "gen",
        description="Output package for generated code: a folder inside the manifest's folder, "
        "each part a Python identifier (e.g. `gen` or `src/gen`). msuite owns it: every "
        "`msuite generate` replaces it whole.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$",
    )
    proto_paths: tuple[str, ...] = Field(
        ("protos", "."),
        description="Proto include roots, relative to the manifest's folder "
        "(the defaults are used when they exist).",
    )


class Service(Section):
    """A gRPC service this node serves."""

    proto: str = Field(
        description="The .proto file declaring the service, relative to the manifest's folder.",
        pattern=r"\.proto$",
        examples=["protos/notes.proto"],
    )
    impl: ImportPath = Field(
        description="`module:Class` implementing the service, imported with the manifest's "
        "folder on sys.path. The class is constructed with the node as its only argument "
        "when its __init__ takes one, otherwise with none.",
    )


# --------------------------------------------------------------------------- listeners


class ServerTLS(Section):
    """TLS on a TCP listener (TLS 1.2 at least); with ``client_ca``, mutual TLS."""

    cert: str = Field(
        description="PEM file of the server's certificate (its chain may follow it), relative to the "
        "manifest's folder.",
        min_length=1,
        examples=["tls/server.pem"],
    )
    key: str = Field(
        description="PEM file of the certificate's private key (unencrypted), relative to the "
        "manifest's folder.",
        min_length=1,
        examples=["tls/server.key"],
    )
    client_ca: str | None = Field(
        None,
        description="PEM file of the CA certificates clients' certificates must chain to, relative to "
        "the manifest's folder: when set, mutual TLS, and a client without a valid certificate is "
        "refused at the handshake.",
        min_length=1,
        examples=["tls/clients-ca.pem"],
    )


class TCPListener(Section):
    """A TCP listener."""

    host: Host = Field(DEFAULT_HOST, description="Address to bind (default loopback).")
    port: Port = Field(
        50051,
        description="Port to bind; 0 picks a free port at start and reports it when ready.",
    )
    tls: ServerTLS | None = Field(None, description="Serve TLS on this port (mutual TLS with `client_ca`).")


class UnixListener(Section):
    """A Unix domain socket listener."""

    path: str = Field(
        description="Socket path, relative to the manifest's folder (at most 107 bytes once "
        "resolved), or `unix-abstract:NAME` for a Linux abstract socket.",
        min_length=1,
        examples=["/tmp/notes.sock"],
    )


class GRPC(Section):
    """The node's gRPC server: one set of services on every listener."""

    tcp: TCPListener | None = Field(None, description="Serve on TCP.")
    unix: UnixListener | None = Field(None, description="Serve on a Unix socket.")
    p2p: bool = Field(False, description="Also serve over libp2p streams (needs `p2p`).")
    health: bool = Field(True, description="Serve the standard grpc.health.v1 service.")
    reflection: bool = Field(True, description="Serve gRPC server reflection.")
    max_receive_message_size: Size = Field(
        4 * 1024 * 1024, description="Largest request message accepted, e.g. `4MiB`."
    )
    max_send_message_size: Size = Field(
        4 * 1024 * 1024, description="Largest response message sent, e.g. `4MiB`."
    )


class HTTP(Section):
    """The node's HTTP server: users' handlers, the gRPC gateway, diagnostics."""

    host: Host = Field(DEFAULT_HOST, description="Address to bind (default loopback).")
    port: Port = Field(
        8080,
        description="Port to bind; 0 picks a free port at start and reports it when ready.",
    )
    tls: ServerTLS | None = Field(None, description="Serve HTTPS on this port (mutual TLS with `client_ca`).")
    gateway: bool = Field(True, description="Serve the JSON-to-gRPC gateway for declared services.")
    cors: tuple[str, ...] = Field(
        (),
        description="Origins allowed by CORS (`*` for any), e.g. `http://localhost:3000`.",
    )
    max_body_size: Size = Field(1024 * 1024, description="Largest request body accepted, e.g. `1MiB`.")
    max_header_size: Size = Field(
        16 * 1024,
        ge=1024,
        description="Longest request line or header accepted, e.g. `16KiB` (raised to fit a token of "
        "`auth.jwt.max_token_size`); a longer one gets a JSON 431.",
    )
    access_log: bool = Field(True, description="Log one line per request.")
    header_timeout: Duration = Field(
        timedelta(seconds=10),
        description="Time a client gets to send a request's line and headers, counted from the "
        "connection's start or from the request's first byte, e.g. `10s`; a slower connection is closed.",
    )
    body_timeout: Duration = Field(
        timedelta(seconds=30),
        description="Longest wait for more of a request body the node is reading, e.g. `30s`; "
        "a connection silent for longer is closed.",
    )
    keepalive_timeout: Duration = Field(
        timedelta(seconds=75),
        description="Time an idle keep-alive connection is kept between requests, e.g. `75s` "
        "(longer than a reverse proxy's, usually 60 s).",
    )
    max_connections: Count = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Most connections open at once; lowered at start to half the open-files limit. "
        "When full, a new connection closes the longest-waiting one that is not in a request, "
        "or is answered 503 when all are.",
    )

    @field_validator("header_timeout", "body_timeout", "keepalive_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the timeout must be longer than 0")
        return value

    @field_validator("cors")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not (
                origin.startswith(("http://", "https://")) and "/" not in origin.split("://", 1)[1]
            ):
                raise ValueError(
                    "a CORS origin is '*' or scheme://host[:port] with no path, e.g. http://localhost:3000"
                )
        return value


class ProtocolLimits(Section):
    """Limits of the request/response protocols between peers (``node.protocols``)."""

    max_message: Size = Field(
        4 * 1024 * 1024,
        ge=1,
        description="Largest request or response, e.g. `4MiB`; a larger one is refused, never truncated.",
    )
    inbound_limit: Count = Field(
        64,
        ge=1,
        le=100_000,
        description="Requests of one protocol handled at once; another is answered BUSY.",
    )
    timeout: Duration = Field(
        timedelta(seconds=15),
        description="Default deadline of a request, and the time a receiver gives one, e.g. `15s`.",
    )

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the protocol timeout must be longer than 0")
        return value


class P2P(Section):
    """The node's libp2p host."""

    host: Host = Field(DEFAULT_HOST, description="Address to listen on (default loopback).")
    port: Port = Field(4001, description="TCP port of the libp2p host; 0 picks a free port.")
    key: str | None = Field(
        None,
        description="Private key file (libp2p protobuf encoding), relative to the manifest's "
        "folder; default: keys/node.key in the repository, created on first start and kept.",
    )
    bootstrap: tuple[Multiaddr, ...] = Field(
        (),
        json_schema_extra=_empty_entries_too,
        description="Peers to dial at start and keep connected, as multiaddrs with /p2p/ IDs. An "
        'empty entry is skipped, so `["${SEED:-}"]` works with and without `SEED`.',
    )
    protocols: ProtocolLimits = Field(
        default_factory=ProtocolLimits, description="Limits of request/response protocols between peers."
    )
    channel: str | None = Field(
        None,
        description="The application's channel on the mesh: event topics are "
        "`msuite/<channel>/events/<Event>`, so nodes of one application (services that exchange "
        "events) set the same channel, and two applications on one mesh never mix. "
        "Default: the node's `name`.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        examples=["notes"],
    )

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _skip_empty(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(entry for entry in value if entry != "")
        return value


# --------------------------------------------------------------------------- auth


JWTAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"
]

KeyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$", examples=["2026-12"])]
"""A key id (``kid``): 1-128 letters, digits, ``.``, ``_``, ``:`` or ``-``."""


def _check_secret_length(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value().encode("utf-8", "surrogatepass")) < 32:
        raise ValueError("the JWT secret must be at least 32 bytes long")
    return value


class JWTKey(Section):
    """One key of ``auth.jwt.keys``: a shared secret, a public key or a private key (exactly one)."""

    kid: KeyId = Field(
        description="Key id: a token names its key in its `kid` header; issued tokens carry it."
    )
    secret: SecretStr | None = Field(
        None, description="HMAC secret, at least 32 bytes; usually `${ENV_VAR}`. Signs and verifies."
    )
    public_key: str | None = Field(
        None, description="PEM file of an RSA, EC (P-256/384/521) or Ed25519 public key: verifies only."
    )
    private_key: str | None = Field(
        None,
        description="PEM file of an RSA, EC or Ed25519 private key: signs, and verifies with its "
        "public half.",
    )

    _secret_length = field_validator("secret")(_check_secret_length)


class JWT(Section):
    """JSON Web Tokens: shared secrets, public keys and key sets, selected by `kid`."""

    secret: SecretStr | None = Field(
        None,
        description="HMAC secret, at least 32 bytes; usually `${ENV_VAR}`. Never printed. "
        "A key without a kid; `keys` holds more, for rotation.",
    )
    keys: tuple[JWTKey, ...] = Field(
        (),
        max_length=64,
        description="Keys by `kid`: tokens naming a kid are checked with that key only. Rotate by "
        "adding the new key, signing with it (`sign_with`), and removing the old one once its "
        "tokens have expired.",
    )
    jwks: str | None = Field(
        None, description="JWKS file of public keys (verify only); read again when it changes."
    )
    jwks_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="JWKS URL of public keys, fetched at start and every `jwks_refresh` in the "
        "background (never while a request waits).",
    )
    jwks_refresh: Duration = Field(
        timedelta(minutes=10), description="How often `jwks` and `jwks_url` are checked for new keys."
    )
    jwks_timeout: Duration = Field(timedelta(seconds=5), description="Timeout of one `jwks_url` fetch.")
    sign_with: KeyId | None = Field(
        None,
        description="Kid of the key that signs issued tokens; default: `secret` when set, else the "
        "first of `keys` with a secret or private key.",
    )
    ttl: Duration = Field(timedelta(hours=24), description="Lifetime of issued tokens, e.g. `24h`.")
    algorithms: tuple[JWTAlgorithm, ...] = Field(
        ("HS256", "RS256", "ES256", "ES384", "ES512", "EdDSA"),
        min_length=1,
        description="Accepted algorithms; `none` never is. The key decides, never the token: a secret "
        "verifies the HS ones listed, an RSA key the RS ones, an EC key its curve's ES one, an "
        "Ed25519 key EdDSA; a key signs with the first listed of its kind.",
    )
    issuer: str | None = Field(None, description="`iss` claim to issue and require.")
    audience: str | None = Field(None, description="`aud` claim to issue and require.")
    leeway: Duration = Field(timedelta(0), description="Clock skew tolerated when checking expiry.")
    max_token_size: Size = Field(8192, description="Longest token accepted, e.g. `8KiB`.")

    _secret_length = field_validator("secret")(_check_secret_length)


class Outgoing(Section):
    """The credential this node presents when it calls other nodes' services by name."""

    role: RoleName | None = Field(
        None,
        description="Mint a token for this node with this role: signed with `auth.jwt`'s signing key, "
        "subject the node's name, renewed before it expires.",
    )
    ttl: Duration = Field(
        timedelta(minutes=5), description="Lifetime of a minted token, e.g. `5m` (at least `10s`)."
    )
    token: SecretStr | None = Field(
        None, description='A token to present as it is; usually `"${ENV_VAR}"`. Never printed.'
    )

    @field_validator("ttl")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=10):
            raise ValueError("must be at least 10s")
        return value


class Auth(Section):
    """Authentication and access control."""

    jwt: JWT | None = Field(None, description="Verify (and issue) JWT bearer tokens.")
    roles: tuple[RoleName, ...] = Field(
        ("public_read", "public_write", "authenticated_read", "authenticated_write", "admin"),
        max_length=64,
        description="The role ladder, lowest first: a token's role may use what any lower role may. "
        "`none`, the role of a caller without a token, is always below the first and is not listed.",
    )
    outgoing: Outgoing | None = Field(
        None,
        description="What this node presents when it calls services by name (`node.grpc.client`): "
        "a token it mints (`role`) or a fixed `token`.",
    )
    acl: dict[str, str] = Field(
        default_factory=dict,
        description="Minimum role per resource (a role of `roles`, or `none` for open): a gRPC full "
        "method (`/pkg.Service/Method`) or an HTTP path (a key ending in `/` covers the paths under "
        "it). Resources not listed are open.",
    )

    @field_validator("roles")
    @classmethod
    def _ladder(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        Roles(value)  # empty, 'none' listed, a role twice: ValueError saying which
        return value

    @property
    def ladder(self) -> Roles:
        """``roles`` as a :class:`~msuite.spec.Roles`, ``none`` first."""
        return Roles(self.roles)


# --------------------------------------------------------------------------- storage


class SharedStore(Section):
    """A CRDT key-value store replicated between nodes over p2p."""

    channel: str = Field(
        description="Pubsub channel; nodes on the same channel share data.",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
    )
    batch_delay: Duration = Field(
        timedelta(milliseconds=10),
        description="Local writes made within this time of the first unsent one go out as one "
        "delta, e.g. `10ms` (`0s`: one delta per loop turn). Longer means fewer, larger deltas.",
    )
    batch_max: Count = Field(
        1000, ge=1, le=100_000, description="Most writes in one delta; a full batch goes out at once."
    )
    rebroadcast: Duration = Field(
        timedelta(seconds=5),
        description="How often the current heads are sent again, so late or healed nodes catch up, "
        "e.g. `5s`.",
    )
    walk_concurrency: Count = Field(
        64, ge=1, le=1024, description="Missing deltas asked of peers at once while catching up."
    )
    walk_limit: Count = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Most deltas fetched in one round of catching up; the next round goes on from there.",
    )
    walk_timeout: Duration = Field(
        timedelta(seconds=30),
        description="Longest round of catching up, and the longest wait for one missing delta, e.g. `30s`.",
    )

    @field_validator("rebroadcast", "walk_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be more than 0")
        return value

    @field_validator("batch_delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0) or value > timedelta(seconds=10):
            raise ValueError("must be between 0s and 10s")
        return value


class Storage(Section):
    """The node's key-value store."""

    kv: Literal["leveldb", "memory"] | None = Field(
        None,
        description="Backend: `leveldb` (the default with an on-disk repo) or `memory` "
        '(the default, and the only choice, with `repo: ":memory:"`).',
    )
    sync: bool = Field(
        True, description="Flush each write to disk before acknowledging it (survives a crash)."
    )
    shared: SharedStore | None = Field(None, description="CRDT store shared by all nodes (needs `p2p`).")


class Files(Section):
    """IPFS-style file sharing (`node.files`): UnixFS files in the repository, Bitswap between peers."""

    timeout: Duration = Field(
        timedelta(seconds=60),
        description="Longest `get`, `cat` and `stat` wait for a block no peer delivers (per call).",
    )
    sync: bool = Field(
        False,
        description="Flush each block to disk before it counts as stored (survives power loss; "
        "slower). Without it a block is still whole or absent after the process is killed.",
    )
    provide: bool = Field(
        True, description="Advertise added files on the DHT (with `discovery.dht`), as IPFS nodes do."
    )


# --------------------------------------------------------------------------- locks & tasks


class LockerTLS(Section):
    """TLS settings for the lock server connection."""

    ca_file: str | None = Field(None, description="CA bundle to verify the server (default: system CAs).")
    cert_file: str | None = Field(None, description="Client certificate, for mutual TLS.")
    key_file: str | None = Field(None, description="Client private key, for mutual TLS.")


class Locker(Section):
    """Distributed locks."""

    backend: Literal["memory", "redis", "zookeeper"] = Field(
        "memory", description="`memory` (one process), `redis` or `zookeeper`."
    )
    url: SecretURL | None = Field(
        None,
        description="Redis URL, e.g. `redis://127.0.0.1:6379/0` (needed by `redis`). "
        "A password inside it is never printed.",
    )
    password: SecretStr | None = Field(None, description="Redis password, if not in the URL.")
    hosts: str | None = Field(
        None,
        description="ZooKeeper connection string, e.g. `127.0.0.1:2181` (needed by `zookeeper`).",
        pattern=r"^[^,\s]+(,[^,\s]+)*$",
    )
    tls: LockerTLS | None = Field(
        None, description="Connect to the lock server over TLS.", json_schema_extra=_boolean_too
    )
    ttl: Duration = Field(timedelta(seconds=8), description="Lease lifetime, renewed while held (redis).")
    session_timeout: Duration = Field(timedelta(seconds=10), description="Session timeout (zookeeper).")
    prefix: str = Field("msuite/locks", description="Namespace of lock keys on the server.", min_length=1)

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_flag(cls, value: Any) -> Any:
        return _true_means_defaults(value)


class Tasks(Section):
    """The task manager's worker pool."""

    min_workers: Count = Field(1, ge=0, le=10_000, description="Workers kept even when idle.")
    max_workers: Count = Field(20, ge=1, le=10_000, description="Most tasks running at once.")
    idle_timeout: Duration = Field(
        timedelta(seconds=15), description="An extra idle worker stops after this long."
    )


# --------------------------------------------------------------------------- discovery & diagnostics


class ClientTLS(Section):
    """TLS of the node's channels to ``discovery.static`` TCP addresses."""

    ca: str | None = Field(
        None,
        description="PEM file of the CA certificates servers' certificates must chain to, relative to "
        "the manifest's folder (default: the system's CAs).",
        min_length=1,
        examples=["tls/ca.pem"],
    )
    cert: str | None = Field(
        None,
        description="PEM file of this node's client certificate, for servers that require mutual TLS "
        "(with `key`).",
        min_length=1,
    )
    key: str | None = Field(
        None, description="PEM file of the client certificate's private key (with `cert`).", min_length=1
    )


class Discovery(Section):
    """How this node finds the services it calls."""

    static: dict[ServiceName, str] = Field(
        default_factory=dict,
        description="Fixed addresses by full service name: `host:port`, `[::1]:port`, "
        "`unix:/path` or `unix-abstract:NAME`. Tried before anything else.",
    )
    tls: ClientTLS | None = Field(
        None,
        description="Dial every `host:port` address of `static` over TLS (`true` for the system's CAs); "
        "Unix sockets stay plaintext.",
        json_schema_extra=_boolean_too,
    )
    mdns: bool = Field(False, description="Find peers on the local network by mDNS (needs `p2p`).")
    dht: bool = Field(False, description="Advertise and find services in the Kademlia DHT (needs `p2p`).")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_flag(cls, value: Any) -> Any:
        return _true_means_defaults(value)


class Metrics(Section):
    """Prometheus metrics at `GET /metrics`."""

    latency: bool = Field(False, description="Also record a latency histogram per gRPC method.")


class Otlp(Section):
    """Where OpenTelemetry spans go: an OTLP receiver (a collector, Jaeger, Tempo, a vendor's endpoint)."""

    endpoint: str = Field(
        "http://127.0.0.1:4318",
        description="The receiver's URL: `http://` or `https://`, host and port. With `protocol: http` "
        "a URL without a path gets the standard `/v1/traces`; with `grpc` the path must be empty "
        "(default: a local collector's OTLP/HTTP port; OTLP/gRPC's is 4317).",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        examples=["http://127.0.0.1:4318", "https://otlp.example.com:4317"],
    )
    protocol: Literal["http", "grpc"] = Field(
        "http", description="`http` (OTLP/HTTP, protobuf body) or `grpc` (OTLP/gRPC)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers (gRPC metadata) sent with every export, such as a vendor's API key: "
        'write secrets as `"${ENV}"`. Never logged.',
    )
    ca: str | None = Field(
        None,
        description="PEM file of the CA certificates an `https://` receiver's certificate must chain to, "
        "relative to the manifest's folder (default: the system's CAs).",
        min_length=1,
    )
    timeout: Duration = Field(
        timedelta(seconds=10), description="Longest one export (with its retries) may take."
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
        return value


class Tracing(Section):
    """Distributed tracing: Jaeger over UDP (OpenTracing), or OpenTelemetry to an OTLP receiver."""

    jaeger: str | None = Field(
        None,
        description="Jaeger agent `host:port` to send spans to (UDP, Jaeger's thrift; OpenTracing "
        "`uber-trace-id` headers). The default exporter when `otlp` is not set.",
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$",
    )
    otlp: Otlp | None = Field(
        None,
        description="Export spans with OpenTelemetry to an OTLP receiver and propagate W3C "
        "`traceparent` headers (`true` for a local collector's defaults). Not with `jaeger`.",
        json_schema_extra=_boolean_too,
    )
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, allow_inf_nan=False, description="Fraction of traces recorded."
    )

    @field_validator("jaeger")
    @classmethod
    def _jaeger_port(cls, value: str | None) -> str | None:
        if value is not None and not 0 < int(value.rsplit(":", 1)[1]) <= 65535:
            raise ValueError("the port must be 1-65535")
        return value

    @field_validator("otlp", mode="before")
    @classmethod
    def _otlp_flag(cls, value: Any) -> Any:
        return _true_means_defaults(value)


class Diagnostics(Section):
    """Status, metrics, profiling and tracing (status and the debug pages use the HTTP server)."""

    status: bool = Field(True, description="Serve `GET /status`.")
    profiling: bool = Field(False, description="Serve profiling pages under `/debug/`.")
    metrics: Metrics | None = Field(
        None,
        description="Serve Prometheus metrics at `GET /metrics` (`true` for defaults).",
        json_schema_extra=_boolean_too,
    )
    tracing: Tracing | None = Field(
        None, description="Record and export traces (`true` for defaults).", json_schema_extra=_boolean_too
    )

    @field_validator("metrics", "tracing", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        return _true_means_defaults(value)


class Logging(Section):
    """Log output."""

    level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Lowest level logged."
    )
    format: Literal["text", "json"] = Field("text", description="`text` lines or JSON lines.")

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Shutdown(Section):
    """How the node stops."""

    grace: Duration = Field(
        timedelta(seconds=10),
        description="Time in-flight requests and tasks get to finish after SIGTERM.",
    )


# --------------------------------------------------------------------------- the manifest


class Manifest(Section):
    """A whole node: what it serves, how, and with which subsystems.

    Sections left out (or ``null``) are off, except ``tasks``, ``logging``,
    ``shutdown``, ``storage``, ``codegen`` and ``diagnostics``, which are
    always on with their defaults.
    """

    api_version: Literal["msuite/v1"] = Field(
        "msuite/v1", alias="apiVersion", description="Manifest format version."
    )
    name: str = Field(
        description="Node name; also its default service name.",
        pattern=NAME_PATTERN,
        examples=["notes"],
    )
    repo: str = Field(
        ".msuite",
        description="Repository root, relative to the manifest's folder; `:memory:` keeps "
        "everything in memory.",
        min_length=1,
    )
    codegen: Codegen = Field(default_factory=Codegen, description="Code generation settings.")
    services: dict[ServiceName, Service] = Field(
        default_factory=dict, description="gRPC services this node serves, by full proto name."
    )
    grpc: GRPC | None = Field(None, description="gRPC server listeners and options.")
    http: HTTP | None = Field(None, description="HTTP server (handlers, gateway, diagnostics).")
    p2p: P2P | None = Field(
        None, description="libp2p host (`true` for defaults).", json_schema_extra=_boolean_too
    )
    auth: Auth | None = Field(None, description="JWT authentication and ACLs.")
    storage: Storage = Field(default_factory=Storage, description="Key-value store settings.")
    files: Files | None = Field(
        None,
        description="IPFS-style file sharing (needs `p2p`; `true` for defaults).",
        json_schema_extra=_boolean_too,
    )
    events: dict[EventName, dict[FieldName, str]] = Field(
        default_factory=dict,
        description="Typed events over pubsub (needs `p2p`): event name -> field -> type, "
        "one of str int float bool bytes datetime, list[T], T | None.",
    )
    locker: Locker | None = Field(None, description="Distributed locks.")
    tasks: Tasks = Field(default_factory=Tasks, description="Task manager settings.")
    discovery: Discovery = Field(default_factory=Discovery, description="Service discovery.")
    diagnostics: Diagnostics = Field(
        default_factory=Diagnostics, description="Status, metrics, profiling and tracing."
    )
    logging: Logging = Field(default_factory=Logging, description="Log level and format.")
    shutdown: Shutdown = Field(default_factory=Shutdown, description="Shutdown behaviour.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="The application's own settings, free-form: `node.config`."
    )

    _source: SourceMap | None = PrivateAttr(default=None)
    _base_dir: FilePath | None = PrivateAttr(default=None)

    @field_validator("p2p", "files", mode="before")
    @classmethod
    def _p2p_flag(cls, value: Any) -> Any:
        return _true_means_defaults(value)

    @model_validator(mode="after")
    def _semantic_checks(self, info: ValidationInfo) -> Manifest:
        """Cross-field rules for manifests built in Python (the loader runs them itself,
        with positions). Raises :class:`ManifestError`, which pydantic lets through."""
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        from .checks import check_manifest
        from .diagnostics import Diagnostic, ManifestError

        problems = check_manifest(self)
        if problems:
            raise ManifestError([Diagnostic("<python>", 0, 0, p.path_text, p.message) for p in problems])
        return self

    # -- where it came from

    @property
    def source(self) -> SourceMap | None:
        """Positions of every key and value, when loaded from a file (else None)."""
        return self._source

    @property
    def base_dir(self) -> FilePath:
        """Folder that relative paths are relative to: the manifest's folder, or the cwd."""
        return self._base_dir if self._base_dir is not None else FilePath.cwd()

    def resolve(self, relative: str) -> FilePath:
        """A path from the manifest, made absolute against :attr:`base_dir`."""
        return (self.base_dir / relative).resolve() if relative else self.base_dir

    def _attach(self, source: SourceMap | None, base_dir: FilePath | None) -> None:
        self._source = source
        self._base_dir = base_dir

    # -- derived settings

    @property
    def in_memory(self) -> bool:
        """True when the repository lives in memory (``repo: ":memory:"``)."""
        return self.repo == MEMORY_REPO

    @property
    def kv_backend(self) -> Literal["leveldb", "memory"]:
        """The store backend in force, defaults applied."""
        if self.storage.kv is not None:
            return self.storage.kv
        return "memory" if self.in_memory else "leveldb"
