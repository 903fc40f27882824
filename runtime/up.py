"""``msuite up``: load the manifest, make sure the generated code is current, serve until a signal.

Steps, in order:

1. Load and check the manifest (problems print as ``FILE:LINE:COL: PATH: MESSAGE``; exit 1).
2. When it declares services, compare ``<codegen.out>/wiring.py`` with its
   sources (a hash in its header, no protoc run). Stale or missing: regenerate
   when the ``codegen`` extra is installed, else exit 1 printing the exact command.
3. Configure logging from ``logging:``, and raise the soft open-files limit to
   the hard one (often 1024 under a far higher hard limit; each connection
   takes a descriptor). ``/status`` shows both under ``open_files``.
4. Start the node; print one readiness line per listener on stdout:
   ``ready grpc.tcp 127.0.0.1:50051 (312 ms)``, the time counted from the
   command's start.
5. Serve until SIGINT or SIGTERM, then drain (``shutdown.grace``) and exit 0.
   A second signal while draining exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from msuite.spec import Manifest

__all__ = ["raise_open_files_limit", "up"]

EXIT_OK = 0
EXIT_FAILED = 1


def _problem(err: TextIO, text: str) -> int:
    print(text, file=err)
    return EXIT_FAILED


def _ensure_generated(manifest: Manifest, file: str, err: TextIO) -> int | None:
    """None when the generated code is current (or was regenerated), else an exit status."""
    from msuite.codegen import is_current

    if is_current(manifest):
        return None
    existed = (manifest.base_dir / manifest.codegen.out / "wiring.py").exists()
    from importlib.util import find_spec

    if find_spec("jinja2") is None or find_spec("grpc_tools") is None:
        return _problem(
            err,
            f"{file}: the generated code in {manifest.codegen.out}/ is stale or missing; run "
            f"`msuite generate {file}` (needs `pip install 'msuite[codegen]'`)",
        )
    from msuite.codegen import CodegenError, generate

    try:
        outcome = generate(manifest)
    except CodegenError as exc:
        return _problem(err, str(exc))
    if outcome.written:
        shown = os.path.relpath(outcome.out_dir)
        message = (
            f"regenerated {shown}/ (its sources changed)"
            if existed
            else f"generated {shown}/ (it was missing)"
        )
        print(message, file=err)
    return None


async def _serve(manifest: Manifest, file: str, began: float, out: TextIO, err: TextIO) -> int:
    from .errors import NodeError
    from .node import Node

    node = Node(manifest)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(number: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            print(f"{signal.Signals(number).name}: draining (again to force exit)", file=err, flush=True)
            stop.set()
        else:
            print("forced exit", file=err, flush=True)
            os._exit(EXIT_FAILED)

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal, number)
    try:
        await node.start()
    except NodeError as exc:
        return _problem(err, f"{Path(file)}: cannot start node {manifest.name}: {exc}")
    elapsed_ms = (time.perf_counter() - began) * 1000
    listeners = node.listeners()
    for listener, address in listeners:
        print(f"ready {listener} {address} ({elapsed_ms:.0f} ms)", file=out, flush=True)
    if not listeners:
        print(f"ready (no listeners) ({elapsed_ms:.0f} ms)", file=out, flush=True)
    await stop.wait()
    try:
        await node.stop()
    except ExceptionGroup as group:
        for error in group.exceptions:
            print(f"while stopping: {type(error).__name__}: {error}", file=err)
        return EXIT_FAILED
    print(f"stopped {manifest.name}", file=err, flush=True)
    return EXIT_OK


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the ``(soft, hard)`` in force after.

    An unlimited hard limit (macOS allows it, then refuses it as a soft limit) or a refusal leaves
    the soft limit where it was."""
    import logging
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (soft, resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            logging.getLogger("msuite.node").debug("cannot raise the open-files limit to %d: %s", hard, exc)
        else:
            logging.getLogger("msuite.node").debug("open-files limit raised from %d to %d", soft, hard)
            soft = hard
    return soft, hard


def up(
    file: str,
    *,
    began: float | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    overrides: Sequence[str] = (),
) -> int:
    """Run the node of manifest ``file`` until a signal; the process exit status.

    ``overrides``: ``dotted.path=value`` settings laid over the file (``--set``)."""
    from msuite.spec import ManifestError, load_manifest

    began = time.perf_counter() if began is None else began
    try:
        manifest = load_manifest(file, overrides=overrides)
    except ManifestError as exc:
        return _problem(err, str(exc))
    if manifest.services:
        status = _ensure_generated(manifest, file, err)
        if status is not None:
            return status
    from .logs import configure

    configure(manifest.logging)
    raise_open_files_limit()
    return asyncio.run(_serve(manifest, file, began, out, err))
