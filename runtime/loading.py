"""Importing a node's generated code and its ``impl`` classes from the manifest's folder.

Several nodes may share one process (a test starting three nodes of one
manifest, or nodes of different manifests), and two things there are
process-wide (docs/multi-node.md):

``sys.modules``
    Nodes import their generated package (``codegen.out``, usually ``gen``)
    and their impls by plain top-level names, and impl code says ``from gen
    import hello_pb2``. So each folder a node loads from gets its own *module
    set*: the top-level modules found directly in that folder, with their
    submodules. Before importing for a folder, other node folders' modules of
    the names it provides are taken out of ``sys.modules`` (and kept), and its
    own, if imported before, are put back. A folder's modules are imported
    once per process, and a node's impl always gets its own ``gen``, whichever
    node was loaded last. Modules found anywhere else (libraries, msuite
    itself) are never touched.

protobuf's default descriptor pool
    Generated ``_pb2`` modules register their proto files there, for good,
    and it holds one file per name and one definition per full name. The same
    proto loaded by two nodes is registered once; a *different* file under a
    name already taken, or a second file defining a taken full name, cannot
    be loaded. That is refused with an error at the manifest key, naming the
    code that registered the name first, instead of protobuf's TypeError.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from msuite.spec import Manifest

from .errors import NodeError, where

if TYPE_CHECKING:
    from .wiring import ServiceBinding

__all__ = ["construct", "import_from", "load_bindings", "load_impl", "load_wiring", "user_frames"]


_MODULE_SETS: dict[Path, dict[str, ModuleType]] = {}
"""Per folder nodes imported code from: the modules found directly in it, with their submodules."""

_MANIFESTS: dict[Path, Manifest] = {}
"""Per such folder, the manifest last loaded from it (named when its protos clash with another's)."""


def _from_folder(module: ModuleType, top: str, folder: Path) -> bool:
    """Whether top-level module ``top`` was found directly in ``folder`` (not a subfolder)."""
    candidates = {folder / top / "__init__.py", folder / f"{top}.py"}
    location = getattr(module, "__file__", None)
    if location is not None and Path(location).resolve() in candidates:
        return True
    return any(Path(p).resolve() == folder / top for p in list(getattr(module, "__path__", []) or []))


def _provided(folder: Path) -> set[str]:
    """Top-level names ``folder`` may provide: its ``*.py`` files and its subfolders."""
    names: set[str] = set()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return names
    for entry in entries:
        if entry.name.endswith(".py"):
            names.add(entry.name[:-3])
        elif entry.is_dir():
            names.add(entry.name)
    return {name for name in names if name.isidentifier()}


def _tree(top: str) -> dict[str, ModuleType]:
    """``top`` and its submodules, as ``sys.modules`` holds them now."""
    return {n: m for n, m in list(sys.modules.items()) if n == top or n.startswith(top + ".")}


def _swap_in(folder: Path, names: set[str]) -> None:
    """Make ``sys.modules`` hold ``folder``'s own modules under the top-level ``names``."""
    for top in names:
        current = sys.modules.get(top)
        if current is not None:
            if _from_folder(current, top, folder):
                continue
            owner = next((f for f in _MODULE_SETS if f != folder and _from_folder(current, top, f)), None)
            if owner is None:
                continue  # not from a node folder (a library, msuite itself): never touched
            for name, module in _tree(top).items():
                _MODULE_SETS[owner][name] = module
                del sys.modules[name]
        own = {n: m for n, m in _MODULE_SETS[folder].items() if n == top or n.startswith(top + ".")}
        sys.modules.update(own)


def _remember(folder: Path, names: set[str]) -> None:
    """Record the modules ``folder`` provided, so they can be put back after another node's."""
    for top in names:
        module = sys.modules.get(top)
        if module is not None and _from_folder(module, top, folder):
            _MODULE_SETS[folder].update(_tree(top))


def import_from(folder: Path, name: str) -> ModuleType:
    """Import module ``name`` with ``folder`` first on ``sys.path``, as that folder's node sees it.

    Other node folders' modules of the names ``folder`` provides are swapped out
    of ``sys.modules`` first, and ``folder``'s own swapped back in.
    """
    folder = folder.resolve()
    _MODULE_SETS.setdefault(folder, {})
    names = _provided(folder) | {name.split(".", 1)[0]}
    _swap_in(folder, names)
    text = str(folder)
    if text in sys.path:
        sys.path.remove(text)
    sys.path.insert(0, text)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    finally:
        _remember(folder, names)


def load_wiring(manifest: Manifest) -> ModuleType:
    """The generated ``wiring`` module of ``manifest`` (``<codegen.out>/wiring.py``)."""
    package = manifest.codegen.out.replace("/", ".")
    _MANIFESTS[manifest.base_dir.resolve()] = manifest
    try:
        return import_from(manifest.base_dir, f"{package}.wiring")
    except ImportError as exc:
        raise NodeError(
            f"{where(manifest, 'codegen', 'out')}: cannot import the generated code "
            f"{package}.wiring ({exc}); run `msuite generate`"
        ) from None
    except TypeError as exc:
        clash = _pool_clash(manifest, exc)
        if clash is None:
            raise
        raise NodeError(clash) from None


def load_impl(manifest: Manifest, service: str) -> type[Any]:
    """The class named by ``services.<service>.impl``; import errors name the manifest line."""
    text = manifest.services[service].impl
    module_name, _, class_name = text.partition(":")
    at = where(manifest, "services", service, "impl")
    _MANIFESTS[manifest.base_dir.resolve()] = manifest
    try:
        module = import_from(manifest.base_dir, module_name)
    except Exception as exc:
        clash = _pool_clash(manifest, exc, at=("services", service, "impl"))
        if clash is not None:
            raise NodeError(clash) from None
        # where in the user's own files it went wrong (a SyntaxError names its line itself)
        frames = traceback.extract_tb(exc.__traceback__)
        base = manifest.base_dir.resolve()
        origin = next(
            (
                f" ({f.filename}:{f.lineno})"
                for f in reversed(frames)
                if Path(f.filename).is_relative_to(base)
            ),
            "",
        )
        raise NodeError(f"{at}: cannot import {module_name!r}: {type(exc).__name__}: {exc}{origin}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise NodeError(f"{at}: module {module_name!r} has no {class_name!r}")
    if not isinstance(cls, type):
        raise NodeError(f"{at}: {text} is not a class")
    return cls


def user_frames(manifest: Manifest, error: BaseException) -> str:
    """The frames of ``error``'s traceback in the user's own files (under the manifest's folder),
    as lines ``  File "...", line N, in f`` plus the source line, outermost first ("" when none)."""
    base = manifest.base_dir.resolve()
    lines: list[str] = []
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).is_relative_to(base):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
    return "\n".join(lines)


def construct(cls: type[Any], node: object) -> Any:
    """An instance of ``cls``: given the node when its ``__init__`` takes a positional argument."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return cls()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind in positional or p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return cls(node)
    return cls()


# ----------------------------------------------------------------- descriptor pool clashes

_TAKEN_FILE = re.compile(r"duplicate file name (?P<file>\S+)")
_TAKEN_SYMBOL = re.compile(
    r"duplicate symbol '(?P<symbol>[^']+)'|(?P<symbol2>[\w.]+) is already defined in file"
)


def _pool_clash(manifest: Manifest, exc: BaseException, *, at: tuple[str, ...] = ()) -> str | None:
    """The located message for a generated module protobuf's pool refused, or None for other errors.

    Located at the ``services.<name>.proto`` key of the clashing proto when it is
    one, else at ``at`` (the ``services`` key by default).
    """
    if not isinstance(exc, TypeError):
        return None
    detail = str(exc)
    taken_file = _TAKEN_FILE.search(detail)
    taken_symbol = _TAKEN_SYMBOL.search(detail)
    if taken_file is None and taken_symbol is None:
        return None
    failing = _failing_pb2(exc.__traceback__)
    if taken_file is not None:
        registered = taken_file["file"]
        what = f"a different proto file named {registered}"
    else:
        assert taken_symbol is not None
        symbol = taken_symbol["symbol"] or taken_symbol["symbol2"]
        registered = _file_defining(symbol)
        what = f"a definition of {symbol} (in proto file {registered})"
    holder = _holder(registered, failing)
    path: tuple[str, ...] = at or ("services",)
    subject = "its generated code"
    example = "hello/v1/hello.proto for package hello.v1"
    service = _service_of(manifest, failing)
    if service is not None:
        path = ("services", service, "proto")
        subject = manifest.services[service].proto
        package = service.rpartition(".")[0]
        if package:
            example = f"{package.replace('.', '/')}/{Path(subject).name} for package {package}"
    elif failing is not None:
        subject = os.path.relpath(failing, manifest.base_dir)
    return (
        f"{where(manifest, *path, prefer_key=not at and service is None)}: {subject} cannot be "
        f"loaded: this process already holds {what}{holder}; protobuf keeps one file per name "
        "and one definition per full name in a process: give each proto a path matching its "
        f"package ({example}), give different definitions different packages, or run these "
        f"nodes in separate processes (docs/multi-node.md; protobuf: {detail})"
    )


def _failing_pb2(tb: TracebackType | None) -> Path | None:
    """The generated ``_pb2`` module whose registration failed (the innermost one in ``tb``)."""
    pb2 = [f.filename for f in traceback.extract_tb(tb) if f.filename.endswith("_pb2.py")]
    return Path(pb2[-1]).resolve() if pb2 else None


def _file_defining(symbol: str) -> str:
    from google.protobuf import descriptor_pool

    try:
        return str(descriptor_pool.Default().FindFileContainingSymbol(symbol).name)
    except KeyError:
        return "?"


def _holder(registered: str, failing: Path | None) -> str:
    """``, from <module file> (node <name>, <manifest>)``: who registered proto file
    ``registered``, as far as it can be found."""
    from google.protobuf.descriptor import FileDescriptor

    modules = [m for found in _MODULE_SETS.values() for m in found.values()]
    modules += list(sys.modules.values())
    for module in modules:
        descriptor = getattr(module, "DESCRIPTOR", None)
        location = getattr(module, "__file__", None)
        if not isinstance(descriptor, FileDescriptor) or descriptor.name != registered or not location:
            continue
        path = Path(location).resolve()
        if path == failing:
            continue
        folders = [f for f in _MANIFESTS if path.is_relative_to(f)]
        if not folders:
            return f", from {path}"
        owner = _MANIFESTS[max(folders, key=lambda f: len(f.parts))]  # the innermost
        source = owner.source.file if owner.source is not None else owner.base_dir
        return f", from {path} (node {owner.name}, {source})"
    return ""


def _service_of(manifest: Manifest, generated: Path | None) -> str | None:
    """The service whose ``proto`` generated module ``generated``, if one did."""
    if generated is None:
        return None
    out = (manifest.base_dir / manifest.codegen.out).resolve()
    roots = [(manifest.base_dir / p).resolve() for p in manifest.codegen.proto_paths]
    for name, service in manifest.services.items():
        proto = (manifest.base_dir / service.proto).resolve()
        root = next((r for r in roots if proto.is_relative_to(r)), None)  # protoc's first match
        if root is None:
            continue
        module = proto.relative_to(root).as_posix()[: -len(".proto")].replace("-", "_")
        if (out / f"{module}_pb2.py").resolve() == generated:
            return name
    return None


def load_bindings(
    manifest: Manifest, wiring: ModuleType | None
) -> tuple[ModuleType | None, list[ServiceBinding]]:
    """The wiring module (``wiring``, or imported from ``codegen.out``) and its service bindings,
    which must be the manifest's services in its order (else: run ``msuite generate``)."""
    if not manifest.services:
        return wiring, []
    if wiring is None:
        wiring = load_wiring(manifest)
    bindings: list[ServiceBinding] = list(wiring.SERVICES)
    generated = [b.name for b in bindings]
    if generated != list(manifest.services):
        raise NodeError(
            f"{where(manifest, 'services', prefer_key=True)}: the generated code serves "
            f"{', '.join(generated) or 'nothing'}, the manifest declares "
            f"{', '.join(manifest.services)}; run `msuite generate`"
        )
    return wiring, bindings
