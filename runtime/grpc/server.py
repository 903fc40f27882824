"""The node's gRPC server (component ``grpc``): one grpc.aio server on every listener.

- The declared services, each ``impl`` constructed once, are registered once
  and served on ``grpc.tcp`` and ``grpc.unix`` at the same time.
- ``grpc.so_reuseport`` is off: a taken port is an error naming the port and
  its manifest line, never a silent split of traffic with another process.
  A Unix socket another live server answers on is refused the same way (grpc
  would otherwise unlink it and steal the path); a stale socket file is replaced.
- The standard health service (``grpc.health.v1.Health``) and server
  reflection are on unless the manifest turns them off. Health reports
  SERVING once started and NOT_SERVING from the moment the node drains, and
  while a part of the node it depends on is down (:meth:`GrpcServer.set_problem`:
  the p2p host or one of its services).
- Servicer methods must be ``async def``; a method the ``impl`` does not
  define answers UNIMPLEMENTED and is named in a startup warning.
- ``grpc.tcp.tls`` serves TLS on the TCP port (mutual TLS with ``client_ca``);
  the Unix socket stays plaintext. The node's own channel (the gateway's,
  ``node.grpc.client`` of its own services) never dials the TLS port: without
  ``grpc.unix`` the server also listens on a private Unix socket in a folder
  only this user may open, removed at stop.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import itertools
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool

from msuite.spec import GRPC, Manifest

from ..components import HookList
from ..errors import NodeError, where
from ..ports import bind_error
from .interceptors import CallHook, NodeInterceptor
from .lifecycle import start_impls, stop_impls

if TYPE_CHECKING:
    from msuite.runtime.auth import Auth
    from msuite.runtime.wiring import ServiceBinding

    from .tls import ServerMaterial

__all__ = ["GrpcServer", "Listener"]

log = logging.getLogger("msuite.grpc")

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
_PRIVATE = itertools.count(1)

METADATA_LIMIT = 32 * 1024
"""Largest request metadata (headers) accepted, in bytes; larger is RESOURCE_EXHAUSTED."""


class Listener:
    """One bound address of the server, for readiness lines and ``/status``."""

    def __init__(self, kind: str, address: str, target: str, tls: str | None = None) -> None:
        self.kind = kind
        self.address = address
        """As printed: ``127.0.0.1:50051`` or ``unix:/abs/path.sock``."""
        self.target = target
        """What a grpc client dials to reach it."""
        self.tls = tls
        """``tls``, ``mtls`` (clients present a certificate), or None for plaintext."""
        self.state = "bound"

    def as_dict(self) -> dict[str, str]:
        shown = {"kind": self.kind, "address": self.address, "state": self.state}
        if self.tls is not None:
            shown["tls"] = self.tls
        return shown


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_host(host: str) -> str:
    """Where a local client reaches a server bound on ``host`` (wildcards become loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _unix_in_use(path: str) -> bool:
    """Whether a live server accepts on the Unix socket at ``path`` (a stale file: False)."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    finally:
        probe.close()
    return True


def _methods_of(service: str) -> list[str]:
    return [m.name for m in descriptor_pool.Default().FindServiceByName(service).methods]


def _check_servicer(manifest: Manifest, binding: ServiceBinding, servicer: Any) -> dict[str, str]:
    """Methods ``servicer`` leaves to its generated base class; refuses sync overrides."""
    missing: dict[str, str] = {}
    impl = manifest.services[binding.name].impl
    for name in _methods_of(binding.name):
        owner = next((k for k in type(servicer).__mro__ if name in vars(k)), None)
        generated = owner is not None and owner.__module__.endswith("_pb2_grpc")
        if owner is None or generated:
            missing[f"/{binding.name}/{name}"] = impl
            continue
        function = getattr(servicer, name)
        if not (inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)):
            raise NodeError(
                f"{where(manifest, 'services', binding.name, 'impl')}: {impl}.{name} must be "
                "`async def` (msuite serves with grpc.aio)"
            )
    return missing


class GrpcServer:
    """Component ``grpc``: the node's grpc.aio server."""

    name = "grpc"

    def __init__(
        self,
        manifest: Manifest,
        bindings: Sequence[ServiceBinding],
        *,
        make_servicers: Callable[[], Mapping[str, Any]],
        auth: Callable[[], Auth] | None = None,
        tls: ServerMaterial | None = None,
        requires: tuple[str, ...] = (),
    ) -> None:
        """``make_servicers`` builds the ``impl`` instances when the server starts; ``auth``
        returns the started auth (called once, at start) for the authentication and ACL step;
        ``tls`` is ``grpc.tcp.tls``'s material, read and checked at build."""
        assert manifest.grpc is not None
        self.manifest = manifest
        self.settings: GRPC = manifest.grpc
        self.bindings = list(bindings)
        self.servicers: dict[str, Any] = {}
        self.requires = requires
        self.listeners: list[Listener] = []
        self.server: grpc.aio.Server | None = None
        self.state = "new"
        self._make_servicers = make_servicers
        self._tls = tls
        self._private_dir: str | None = None
        self._auth = auth
        self._hooks: HookList[CallHook] = HookList("gRPC call hooks")
        self.unimplemented: list[str] = []
        """Full names of the methods the ``impl`` classes leave out (they answer UNIMPLEMENTED)."""
        self._health: Any = None
        self._started_impls: list[str] = []
        self._problems: dict[str, str] = {}

    @property
    def hooks(self) -> HookList[CallHook]:
        """Call hooks (metrics, tracing) run around every call; add them before start (after, it raises)."""
        return self._hooks

    @property
    def local_target(self) -> str:
        """What a client in this process dials to reach this server (Unix socket preferred)."""
        for kind in ("unix", "private", "tcp"):
            for listener in self.listeners:
                if listener.kind == kind:
                    return listener.target
        raise NodeError("the gRPC server has no listener this process can dial")

    async def start(self) -> None:
        self.servicers = dict(self._make_servicers())
        unimplemented: dict[str, str] = {}
        for binding in self.bindings:
            unimplemented.update(_check_servicer(self.manifest, binding, self.servicers[binding.name]))
        for method, impl in unimplemented.items():
            log.warning("%s does not implement %s: calls answer UNIMPLEMENTED", impl, method)
        self.unimplemented = sorted(unimplemented)
        self._started_impls = await start_impls(self.manifest, self.bindings, self.servicers)
        try:
            await self._serve(unimplemented)
        except BaseException:
            await stop_impls(self.manifest, self._started_impls, self.servicers, quiet=True)
            self._started_impls = []
            raise

    async def _serve(self, unimplemented: dict[str, str]) -> None:
        self._hooks.freeze()
        auth = self._auth() if self._auth is not None else None
        interceptor = NodeInterceptor(auth, self._hooks, unimplemented)
        options = [
            ("grpc.so_reuseport", 0),
            # one metadata limit, no random zone: gRPC's default rejects requests between a soft
            # (8 KiB) and a hard limit at random; up to 32 KiB reaches auth, which refuses
            # tokens over auth.jwt.max_token_size with a clear UNAUTHENTICATED
            ("grpc.max_metadata_size", METADATA_LIMIT),
            ("grpc.absolute_max_metadata_size", METADATA_LIMIT),
            ("grpc.max_receive_message_length", self.settings.max_receive_message_size),
            ("grpc.max_send_message_length", self.settings.max_send_message_size),
        ]
        server = grpc.aio.server(interceptors=[interceptor], options=options)
        for binding in self.bindings:
            binding.add_to_server(self.servicers[binding.name], server)
        names = [b.name for b in self.bindings]
        if self.settings.health:
            from grpc_health.v1 import health_pb2_grpc
            from grpc_health.v1.health import aio as health_aio

            self._health = health_aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            names.append(HEALTH_SERVICE)
        if self.settings.reflection:
            from grpc_reflection.v1alpha import reflection

            names.append(REFLECTION_SERVICE)
            reflection.enable_server_reflection(names, server)
        try:
            self._bind(server)
        except BaseException:
            # a grpc.aio server releases the ports it bound only once started
            if self.listeners:
                await server.start()
            await server.stop(None)
            self.listeners = []
            self._remove_private_dir()
            raise
        try:
            await server.start()
        except BaseException:
            await server.stop(None)
            self._remove_private_dir()
            raise
        self.server = server
        self.state = "serving"
        for listener in self.listeners:
            listener.state = "serving"
        if self._health is not None:
            from grpc_health.v1 import health_pb2

            for service in ["", *(b.name for b in self.bindings)]:
                await self._health.set(service, self._serving(health_pb2))

    def _serving(self, health_pb2: Any) -> Any:
        response = health_pb2.HealthCheckResponse
        return response.NOT_SERVING if self._problems else response.SERVING

    async def set_problem(self, source: str, problem: str | None) -> None:
        """``source`` (a part of the node, such as ``p2p``) is down because of ``problem``, or up
        again (None): health answers NOT_SERVING while any part is down (``/status`` says why)."""
        problems = {k: v for k, v in self._problems.items() if k != source}
        if problem is not None:
            problems[source] = problem
        self._problems = problems
        if problem is not None:
            log.error("gRPC health: NOT_SERVING: %s", problem)
        if self._health is not None and self.state == "serving":
            from grpc_health.v1 import health_pb2

            for service in ["", *(b.name for b in self.bindings)]:
                await self._health.set(service, self._serving(health_pb2))
            if not problems:
                log.warning("gRPC health: SERVING again")

    def _unix_target(self) -> str | None:
        """The Unix listener's target, checked before anything binds (None without one)."""
        unix = self.settings.unix
        if unix is None:
            return None
        if unix.path.startswith("unix-abstract:"):
            return unix.path
        path = str(self.manifest.resolve(unix.path))
        at = where(self.manifest, "grpc", "unix", "path")
        if _unix_in_use(path):
            raise NodeError(f"{at}: {path} is in use by another running server")
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeError(f"{at}: cannot create {Path(path).parent}: {exc.strerror or exc}") from None
        return f"unix:{path}"

    def _bind(self, server: grpc.aio.Server) -> None:
        """Bind every listener; raises before binding anything when it can tell in advance."""
        self.listeners = []
        tcp = self.settings.tcp
        unix_target = self._unix_target()
        if tcp is not None:
            address = _host_port(tcp.host, tcp.port)
            refused = bind_error(tcp.host or "0.0.0.0", tcp.port)
            if refused is not None:  # said before grpc's C core tries, and logs its own error
                raise NodeError(
                    f"{where(self.manifest, 'grpc', 'tcp', 'port')}: cannot listen on {address}: "
                    f"{refused.strerror or refused}"
                )
            port = self._add_port(
                server,
                address,
                ("tcp", "port"),
                "(the port is in use, or the address is not on this machine)",
                tls=self._tls,
            )
            bound = _host_port(tcp.host, port)
            mode = self._tls.mode if self._tls is not None else None
            self.listeners.append(Listener("tcp", bound, _host_port(_dial_host(tcp.host), port), mode))
        if unix_target is not None:
            self._add_port(server, unix_target, ("unix", "path"))
            self.listeners.append(Listener("unix", unix_target, unix_target))
        elif self.settings.p2p:
            # libp2p streams are piped into a Unix socket: a private one when the manifest names none
            private = f"unix-abstract:msuite-{self.manifest.name}-{os.getpid()}-{next(_PRIVATE)}"
            self._add_port(server, private, ("p2p",))
            self.listeners.append(Listener("private", private, private))
        elif self._tls is not None:
            # the node's own channel (the gateway's) has no certificate to present: it dials a Unix
            # socket in a folder only this user may open (mkdtemp: 0700), never an abstract one,
            # which any local process could dial past mutual TLS
            self._private_dir = tempfile.mkdtemp(prefix="msuite-grpc-")
            private = f"unix:{self._private_dir}/grpc.sock"
            self._add_port(server, private, ("tcp", "tls"))
            self.listeners.append(Listener("private", private, private))

    def _add_port(
        self,
        server: grpc.aio.Server,
        target: str,
        key: tuple[str, ...],
        why: str = "",
        *,
        tls: ServerMaterial | None = None,
    ) -> int:
        """Bind ``target`` (over TLS with ``tls``); a failure names ``grpc.<key>`` and its line."""
        try:
            if tls is not None:
                port = server.add_secure_port(target, tls.grpc_credentials())
            else:
                port = server.add_insecure_port(target)
        except RuntimeError:
            port = 0
        if port == 0:
            raise NodeError(f"{where(self.manifest, 'grpc', *key)}: cannot listen on {target} {why}".rstrip())
        return port

    async def draining(self) -> None:
        """Health turns NOT_SERVING at once; calls are still served until ``stop``."""
        self.state = "draining"
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace``, then close."""
        if self.server is None:
            return
        self.state = "stopping"
        await self.server.stop(grace)
        self.server = None
        self.state = "stopped"
        for listener in self.listeners:
            listener.state = "closed"
            if listener.kind == "unix" and listener.target.startswith("unix:"):
                with contextlib.suppress(OSError):
                    os.unlink(listener.target[len("unix:") :])
        self._remove_private_dir()
        started, self._started_impls = self._started_impls, []
        await stop_impls(self.manifest, started, self.servicers)

    def _remove_private_dir(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def addresses(self) -> list[tuple[str, str]]:
        """``("grpc.tcp" | "grpc.unix", address)`` of each listener users dial (readiness lines);
        a TLS listener's address ends with `` (tls)`` or `` (mtls)``."""
        return [
            (f"grpc.{listener.kind}", listener.address + (f" ({listener.tls})" if listener.tls else ""))
            for listener in self.listeners
            if listener.kind != "private"
        ]

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "services": [b.name for b in self.bindings],
            "listeners": [listener.as_dict() for listener in self.listeners],
            "unimplemented": self.unimplemented,
            "health": self.settings.health,
            "health_problems": dict(self._problems),
            "reflection": self.settings.reflection,
        }
