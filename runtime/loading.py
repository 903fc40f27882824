"""Importing a node's generated wiring and its ``impl`` classes from the manifest's folder.

Modules are imported with the manifest's folder first on ``sys.path``. A
module of the same name already imported from another folder (two nodes'
``gen`` packages in one test process) is dropped from ``sys.modules`` first,
so each node gets its own code, never a neighbour's.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from msuite.spec import Manifest

from .errors import NodeError, where

__all__ = ["construct", "import_from", "load_impl", "load_wiring"]


_NODE_FOLDERS: set[Path] = set()
"""Folders nodes of this process imported their code from."""


def _from_folder(module: ModuleType, top: str, folder: Path) -> bool:
    """Whether top-level module ``top`` was found directly in ``folder`` (not a subfolder)."""
    candidates = {folder / top / "__init__.py", folder / f"{top}.py"}
    location = getattr(module, "__file__", None)
    if location is not None and Path(location).resolve() in candidates:
        return True
    return any(Path(p).resolve() == folder / top for p in list(getattr(module, "__path__", []) or []))


def _evict_foreign(name: str, folder: Path) -> None:
    """Drop ``name``'s top package (and its submodules) when another node's folder provided it.

    Only modules found directly in a folder another node was loaded from are dropped:
    a library, msuite itself or anything else imported from elsewhere is never touched.
    """
    top = name.split(".", 1)[0]
    module = sys.modules.get(top)
    if module is None or _from_folder(module, top, folder):
        return
    if not any(_from_folder(module, top, other) for other in _NODE_FOLDERS if other != folder):
        return
    for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[loaded]


def import_from(folder: Path, name: str) -> ModuleType:
    """Import module ``name`` with ``folder`` first on ``sys.path``."""
    folder = folder.resolve()
    _evict_foreign(name, folder)
    _NODE_FOLDERS.add(folder)
    text = str(folder)
    if text in sys.path:
        sys.path.remove(text)
    sys.path.insert(0, text)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def load_wiring(manifest: Manifest) -> ModuleType:
    """The generated ``wiring`` module of ``manifest`` (``<codegen.out>/wiring.py``)."""
    package = manifest.codegen.out.replace("/", ".")
    try:
        return import_from(manifest.base_dir, f"{package}.wiring")
    except ImportError as exc:
        raise NodeError(
            f"{where(manifest, 'codegen', 'out')}: cannot import the generated code "
            f"{package}.wiring ({exc}); run `msuite generate`"
        ) from None


def load_impl(manifest: Manifest, service: str) -> type[Any]:
    """The class named by ``services.<service>.impl``; import errors name the manifest line."""
    text = manifest.services[service].impl
    module_name, _, class_name = text.partition(":")
    at = where(manifest, "services", service, "impl")
    try:
        module = import_from(manifest.base_dir, module_name)
    except Exception as exc:
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
