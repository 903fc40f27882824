"""``on_start`` and ``on_stop`` of service impls: where an impl does its async setup and teardown.

::

    class Notes(notes_pb2_grpc.NotesServicer):
        def __init__(self, node: Node) -> None:
            self.node = node

        async def on_start(self) -> None:      # before the server takes its first call
            self.cache = await load_cache(self.node.store)
            self.node.tasks.start(self.refresh, name="notes-refresh", restart=True)

        async def on_stop(self) -> None:       # after the last call finished (or the grace ran out)
            await self.cache.flush()

Rules:

- ``on_start`` of every impl runs, in manifest order, when the ``grpc``
  component starts: after every component before it (repo, tasks, locker,
  p2p...) started, before the server binds its listeners, so no call reaches
  an impl that is not ready. Either method may be ``async def`` or plain.
- An ``on_start`` that raises fails the node's start with the impl's manifest
  position and the user's own frames; the impls started before it get their
  ``on_stop`` (in reverse), and nothing is served.
- ``on_stop`` runs in reverse manifest order when the ``grpc`` component stops,
  after the server has stopped (in-flight calls finished or cut at the grace).
  Every ``on_stop`` runs even when one raises; the errors are raised together
  (``node.stop()`` raises them in its ExceptionGroup).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from msuite.runtime.errors import NodeError, where
from msuite.runtime.loading import user_frames

if TYPE_CHECKING:
    from msuite.runtime.wiring import ServiceBinding
    from msuite.spec import Manifest

__all__ = ["start_impls", "stop_impls"]

log = logging.getLogger("msuite.grpc")


async def _call(servicer: Any, hook: str) -> None:
    method = getattr(servicer, hook, None)
    if method is None:
        return
    result = method()
    if inspect.isawaitable(result):
        await result


async def start_impls(
    manifest: Manifest, bindings: Sequence[ServiceBinding], servicers: Mapping[str, Any]
) -> list[str]:
    """Run every impl's ``on_start`` in manifest order; the names started (all of them).

    On a failure, stop those started (reverse) and raise a located :class:`NodeError`."""
    started: list[str] = []
    for binding in bindings:
        try:
            await _call(servicers[binding.name], "on_start")
        except Exception as exc:
            await stop_impls(manifest, started, servicers, quiet=True)
            frames = user_frames(manifest, exc)
            raise NodeError(
                f"{where(manifest, 'services', binding.name, 'impl')}: "
                f"{manifest.services[binding.name].impl}.on_start() raised {type(exc).__name__}: {exc}"
                + (f"\n{frames}" if frames else "")
            ) from exc
        started.append(binding.name)
    return started


async def stop_impls(
    manifest: Manifest, started: Sequence[str], servicers: Mapping[str, Any], *, quiet: bool = False
) -> None:
    """Run ``on_stop`` of the impls in ``started``, in reverse; every one runs.

    Raises the located error, or an ExceptionGroup of several (``quiet``: log them instead)."""
    errors: list[Exception] = []
    for name in reversed(started):
        try:
            await _call(servicers[name], "on_stop")
        except Exception as exc:
            error = NodeError(
                f"{where(manifest, 'services', name, 'impl')}: "
                f"{manifest.services[name].impl}.on_stop() raised {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            if quiet:
                log.error("%s", error, exc_info=exc)
            else:
                errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("service impls failed to stop", errors)
