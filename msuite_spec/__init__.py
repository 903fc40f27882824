"""msuite.spec: the manifest (``msuite.yaml``) as typed, frozen models.

Load a file with :func:`load_manifest`, or build a :class:`Manifest` in
Python; both give the same validated object. Errors are
:class:`ManifestError`, each problem a :class:`Diagnostic` located at
``file:line:col`` with its dotted path.

This package imports only pydantic and ruamel.yaml, so validating manifests
(in CI, in editors) stays fast.
"""

from ._types import (
    DEFAULT_ROLES,
    Duration,
    Host,
    ImportPath,
    Multiaddr,
    Port,
    Role,
    Roles,
    SecretURL,
    ServiceName,
    Size,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from .checks import EVENT_SCALAR_TYPES, Issue, check_event_type, check_files, check_manifest
from .diagnostics import Diagnostic, ManifestError, OutputFormat, render
from .interpolate import InterpolationError, interpolate
from .loader import MAX_MANIFEST_BYTES, UncheckedValues, load_manifest, loads_manifest, position_of
from .models import (
    API_VERSION,
    GRPC,
    HTTP,
    JWT,
    P2P,
    Auth,
    Codegen,
    Diagnostics,
    Discovery,
    Locker,
    LockerTLS,
    Logging,
    Manifest,
    Metrics,
    ProtocolLimits,
    Service,
    SharedStore,
    Shutdown,
    Storage,
    Tasks,
    TCPListener,
    Tracing,
    UnixListener,
)
from .schema import manifest_schema, manifest_schema_text
from .source import Path, Position, SourceMap, format_path, parse_path

__all__ = [
    "API_VERSION",
    "DEFAULT_ROLES",
    "EVENT_SCALAR_TYPES",
    "GRPC",
    "HTTP",
    "JWT",
    "MAX_MANIFEST_BYTES",
    "P2P",
    "Auth",
    "Codegen",
    "Diagnostic",
    "Diagnostics",
    "Discovery",
    "Duration",
    "Host",
    "ImportPath",
    "InterpolationError",
    "Issue",
    "Locker",
    "LockerTLS",
    "Logging",
    "Manifest",
    "ManifestError",
    "Metrics",
    "Multiaddr",
    "OutputFormat",
    "Path",
    "Port",
    "Position",
    "ProtocolLimits",
    "Role",
    "Roles",
    "SecretURL",
    "Service",
    "ServiceName",
    "SharedStore",
    "Shutdown",
    "Size",
    "SourceMap",
    "Storage",
    "TCPListener",
    "Tasks",
    "Tracing",
    "UncheckedValues",
    "UnixListener",
    "check_event_type",
    "check_files",
    "check_manifest",
    "format_duration",
    "format_path",
    "format_size",
    "interpolate",
    "load_manifest",
    "loads_manifest",
    "manifest_schema",
    "manifest_schema_text",
    "parse_duration",
    "parse_path",
    "parse_size",
    "position_of",
    "render",
]
