"""The access control list (``node.auth.acl``): the minimum role per resource.

A resource is a gRPC full method name (``/pkg.Service/Method``) or an HTTP
path without its query string. An entry's key starts with ``/`` and has no
``?`` and no whitespace or control characters; a key ending in ``/`` covers
every resource under it (``/v1/rooms/`` covers ``/v1/rooms/7``, and
``/pkg.Service/`` every method of that service).

:meth:`Acl.required` answers, for each request:

1. the entry whose key equals the resource, else
2. the entry of the longest key ending in ``/`` that prefixes the resource, else
3. None: a resource that is not listed is open.

It looks up the resource's own ``/`` boundaries in a dict (no further than
the longest prefix key), so it costs a few dict lookups whatever the size of
the list. A query string in the resource is ignored. For an HTTP path that is
not in canonical form (``//``, ``.`` or ``..`` segments, ``%``-escapes) the
stricter of the answers for the path as given and for its canonical form
(decoded, slashes merged, dot segments resolved) applies, so no spelling of a
path reaches a resource with less protection than its canonical one has.

Entries are kept in a key space of the repository (``repo.space("acl")``),
each marked as coming from the manifest or from a run-time change.
:meth:`Acl.load_manifest` (at start) writes the manifest's entries over
stored ones and drops stored manifest entries the manifest no longer has;
entries added at run time (:meth:`Acl.allow`) persist across restarts until
removed. Changes are written (in a worker thread: LevelDB may fsync) before
they take effect, and take effect for the next request.

With ``storage.shared`` on, :meth:`Acl.share` (called as the shared store
starts) moves the entries added at run time into the shared namespace
``msuite.acl``, and from then on :meth:`Acl.allow` and :meth:`Acl.remove` of
run-time entries go there: a change on one node applies on every node of the
channel (as soon as the change reaches it). The manifest's entries stay each
node's own. A run-time entry wins over the manifest's entry for the same
resource on every node, until it is removed; removing it brings the
manifest's entry back.

Roles are those of the node's ladder (``auth.roles``, :class:`~msuite.spec.Roles`).
When the ladder changes, a stored manifest entry is rewritten from the manifest
at start as always; an entry added at run time whose role the ladder no longer
has fails closed: nobody may use its resources until the role is back in
``auth.roles`` or the entry is removed (a warning at start names each one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import unquote

from pydantic import BaseModel

from msuite.runtime.store.kv import KV
from msuite.runtime.store.store import NotFound
from msuite.spec import DEFAULT_ROLES, Roles

if TYPE_CHECKING:
    from msuite.runtime.shared.shared import ItemKey, SharedStore

__all__ = ["Acl", "SharedEntry", "check_resource", "check_role"]

SHARED_NAMESPACE = "msuite.acl"
"""The shared store's namespace of run-time entries (``storage.shared``)."""


class SharedEntry(BaseModel):
    """A run-time ACL entry in the shared store (id: the resource's sha-256, 32 hex digits)."""

    store_namespace: ClassVar[str] = "acl"
    id: str | None = None
    resource: str
    role: str

    @staticmethod
    def id_for(resource: str) -> str:
        return hashlib.sha256(resource.encode()).hexdigest()[:32]


Source = Literal["manifest", "runtime"]

MAX_RESOURCE_LENGTH = 4096
_log = logging.getLogger("msuite.auth")


def check_resource(resource: str) -> str:
    """``resource`` if it is a valid ACL key, else ValueError saying why."""
    if not isinstance(resource, str) or not resource.startswith("/"):
        raise ValueError(
            f"ACL resource {resource!r}: a gRPC method (/pkg.Service/Method) or an HTTP path, "
            "starting with '/'"
        )
    if len(resource) > MAX_RESOURCE_LENGTH:
        raise ValueError(f"ACL resource {resource[:40]!r}...: longer than {MAX_RESOURCE_LENGTH} characters")
    if "?" in resource:
        raise ValueError(f"ACL resource {resource!r}: an HTTP path without its query string (no '?')")
    if any(c.isspace() or not c.isprintable() for c in resource):
        raise ValueError(f"ACL resource {resource!r}: no whitespace or control characters")
    return resource


def check_role(role: str, roles: Roles = DEFAULT_ROLES) -> str:
    """``role`` as a plain string when ``roles`` has it, else ValueError with a did-you-mean."""
    return roles.check(role)


def canonical(path: str) -> str:
    """``path`` %-decoded, with empty and ``.`` segments dropped and ``..`` resolved.

    A trailing ``/`` (or a trailing ``.``/``..`` segment) is kept as a trailing ``/``.
    """
    decoded = unquote(path) if "%" in path else path
    segments: list[str] = []
    for part in decoded.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    out = "/" + "/".join(segments)
    if segments and decoded.endswith(("/", "/.", "/..")):
        out += "/"
    return out


class _Table:
    """An immutable lookup table; :class:`Acl` swaps in a new one on each change."""

    __slots__ = ("exact", "longest", "prefixes")

    def __init__(self, entries: Mapping[str, str]) -> None:
        self.exact = dict(entries)
        self.prefixes = {k: v for k, v in entries.items() if k.endswith("/")}
        self.longest = max(map(len, self.prefixes), default=0)

    def lookup(self, resource: str) -> str | None:
        role = self.exact.get(resource)
        if role is not None or not self.prefixes:
            return role
        prefixes = self.prefixes
        # the boundaries of resource[:longest], longest prefix first
        i = resource.rfind("/", 0, min(len(resource), self.longest))
        while i >= 0:
            role = prefixes.get(resource[: i + 1])
            if role is not None:
                return role
            i = resource.rfind("/", 0, i)
        return None


def _stricter(a: str | None, b: str | None, roles: Roles) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    if a not in roles or b not in roles:  # a role off the ladder is out of reach: the strictest
        return a if a not in roles else b
    return a if roles.rank(a) >= roles.rank(b) else b


class Acl:
    """Resource -> minimum role, persisted in ``kv`` (memory only when ``kv`` is None)."""

    def __init__(self, kv: KV | None = None, roles: Roles = DEFAULT_ROLES) -> None:
        self._kv = kv
        self.roles = roles
        """The role ladder entries are checked against."""
        self._roles: dict[str, str] = {}
        self._sources: dict[str, Source] = {}
        self._lock = asyncio.Lock()
        self._shared: SharedStore | None = None
        self._local: dict[str, tuple[str, Source]] = {}
        """With a shared store: the entries of this node's own key space (the manifest's)."""
        self._remote: dict[str, str] = {}
        """With a shared store: its run-time entries."""
        if kv is not None:
            self._load(kv)
        self._table = _Table(self._roles)

    def _load(self, kv: KV) -> None:
        snapshot = kv.snapshot()
        try:
            for key, value in snapshot.scan(b""):
                resource, role, source = _decode(key, value)
                self._sources[resource] = source
                if role in self.roles:
                    self._roles[resource] = role
                elif source == "runtime":
                    self._roles[resource] = role
                    _log.warning(
                        "ACL entry %s needs role %r, which auth.roles does not have: nobody may use it "
                        "until the role is back in the ladder or the entry is removed (node.auth.acl.remove)",
                        resource,
                        role,
                    )
                # a manifest entry off the ladder is rewritten or dropped by load_manifest at start
        finally:
            snapshot.close()

    # ----------------------------------------------------------------------- lookups

    def required(self, resource: str) -> str | None:
        """The minimum role for ``resource`` (None: open). Runs on every request."""
        table = self._table
        if "?" in resource:
            resource = resource[: resource.index("?")]
        role = table.lookup(resource)
        if "//" in resource or "/." in resource or "%" in resource:
            role = _stricter(role, table.lookup(canonical(resource)), self.roles)
        return role

    def list(self) -> dict[str, str]:
        """Every entry, sorted by resource."""
        return dict(sorted(self._roles.items()))

    def source(self, resource: str) -> Source | None:
        """Where an entry came from: ``manifest``, ``runtime``, or None when not listed."""
        return self._sources.get(resource)

    def __len__(self) -> int:
        return len(self._roles)

    def status(self) -> dict[str, Any]:
        """Entry counts for status pages."""
        manifest = sum(1 for s in self._sources.values() if s == "manifest")
        return {"entries": len(self._roles), "manifest": manifest, "runtime": len(self._roles) - manifest}

    # ----------------------------------------------------------------------- changes

    async def load_manifest(self, entries: Mapping[str, str]) -> None:
        """Write the manifest's entries over stored ones, in one batch; drop stale manifest entries.

        Entries added at run time and not in the manifest are kept. Raises
        ValueError (before changing anything) for an invalid resource or role.
        """
        checked = {check_resource(resource): self.roles.check(role) for resource, role in entries.items()}
        async with self._lock:
            stale = [r for r, s in self._sources.items() if s == "manifest" and r not in checked]
            puts = [(_key(r), _value(role, "manifest")) for r, role in checked.items()]
            await self._write(puts, [_key(r) for r in stale])
            roles, sources = dict(self._roles), dict(self._sources)
            for resource in stale:
                roles.pop(resource, None)
                del sources[resource]
            for resource, role in checked.items():
                roles[resource], sources[resource] = role, "manifest"
            self._swap(roles, sources)

    async def allow(self, resource: str, role: str) -> None:
        """Set the minimum role of ``resource`` (persisted; kept across restarts).

        ValueError for an invalid resource or a role not in the ladder.
        """
        check_resource(resource)
        checked = self.roles.check(role)
        async with self._lock:
            if self._shared is not None:
                await self._share_entry(self._shared, resource, checked)
                self._remote[resource] = checked
                self._rebuild()
                return
            await self._write([(_key(resource), _value(checked, "runtime"))], [])
            roles, sources = dict(self._roles), dict(self._sources)
            roles[resource], sources[resource] = checked, "runtime"
            self._swap(roles, sources)

    async def remove(self, resource: str) -> bool:
        """Drop the entry of ``resource`` (the resource becomes open unless a prefix covers it).

        Returns False when there was no such entry. A manifest entry comes back
        at the next start.
        """
        check_resource(resource)
        async with self._lock:
            if resource not in self._roles:
                return False
            if self._shared is not None:
                if resource in self._remote:
                    with contextlib.suppress(NotFound):
                        await self._shared.delete(SharedEntry, SharedEntry.id_for(resource))
                    del self._remote[resource]
                else:
                    await self._write([], [_key(resource)])
                    self._local.pop(resource, None)
                self._rebuild()
                return True
            await self._write([], [_key(resource)])
            roles, sources = dict(self._roles), dict(self._sources)
            del roles[resource], sources[resource]
            self._swap(roles, sources)
            return True

    # ----------------------------------------------------------------------- shared

    async def share(self, store: SharedStore) -> None:
        """Keep the run-time entries in ``store`` (the shared namespace ``msuite.acl``) from now on.

        The run-time entries of this node's own key space move there (written to the shared
        store, then removed here), the shared entries join the table, and every later change of
        the shared namespace, from any node, updates the table."""
        async with self._lock:
            moved = [r for r, source in self._sources.items() if source == "runtime"]
            for resource in moved:
                await self._share_entry(store, resource, self._roles[resource])
            await self._write([], [_key(r) for r in moved])
            self._local = {r: (self._roles[r], s) for r, s in self._sources.items() if s == "manifest"}
            self._remote = {}
            for entry in await store.list(SharedEntry):
                if self._acceptable(entry.resource, entry.role):
                    self._remote[entry.resource] = entry.role
            self._shared = store
            store.on_change(self._shared_changed)
            self._rebuild()

    async def _share_entry(self, store: SharedStore, resource: str, role: str) -> None:
        entry = SharedEntry(id=SharedEntry.id_for(resource), resource=resource, role=role)
        try:
            await store.update(entry)
        except NotFound:
            await store.create(entry)

    def _shared_changed(self, key: ItemKey, value: bytes | None, origin: str) -> None:
        if key.namespace != SharedEntry.store_namespace or origin == "local":
            return  # this node's own changes are in the table already
        if value is None:
            gone = next((r for r in self._remote if SharedEntry.id_for(r) == key.id), None)
            if gone is None:
                return
            del self._remote[gone]
        else:
            try:
                entry = SharedEntry.model_validate_json(value)
            except ValueError:
                _log.warning("shared ACL entry %s from %s does not decode: ignored", key.id, origin)
                return
            if (
                not self._acceptable(entry.resource, entry.role)
                or SharedEntry.id_for(entry.resource) != key.id
            ):
                return
            self._remote[entry.resource] = entry.role
        self._rebuild()

    def _acceptable(self, resource: str, role: str) -> bool:
        try:
            check_resource(resource)
        except ValueError as exc:
            _log.warning("shared ACL entry ignored: %s", exc)
            return False
        if role not in self.roles:
            _log.warning(
                "shared ACL entry %s needs role %r, which auth.roles does not have: nobody may use it",
                resource,
                role,
            )
        return bool(role)

    def _rebuild(self) -> None:
        roles = {r: role for r, (role, _source) in self._local.items()}
        sources: dict[str, Source] = {r: source for r, (_role, source) in self._local.items()}
        for resource, role in self._remote.items():
            roles[resource], sources[resource] = role, "runtime"
        self._swap(roles, sources)

    async def _write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes]) -> None:
        if self._kv is not None and (puts or deletes):
            await asyncio.to_thread(self._kv.write, puts, deletes)

    def _swap(self, roles: dict[str, str], sources: dict[str, Source]) -> None:
        self._roles, self._sources = roles, sources
        self._table = _Table(roles)

    def __repr__(self) -> str:
        return f"Acl({len(self._roles)} entries)"


def _key(resource: str) -> bytes:
    return resource.encode("utf-8")


def _value(role: str, source: Source) -> bytes:
    return json.dumps({"role": str(role), "source": source}, separators=(",", ":")).encode()


def _decode(key: bytes, value: bytes) -> tuple[str, str, Source]:
    """A stored entry; ValueError naming it when it cannot be read (the ACL then fails closed)."""
    try:
        resource = check_resource(key.decode("utf-8"))
        data = json.loads(value)
        role = data["role"]
        if not isinstance(role, str) or not role:
            raise ValueError(f"invalid role {role!r}")
        source = data["source"]
        if source not in ("manifest", "runtime"):
            raise ValueError(f"unknown source {source!r}")
    except Exception as exc:
        raise ValueError(
            f"ACL store: the entry {key!r} cannot be read ({exc}); remove it from the repository's "
            "'acl' key space or restore a backup"
        ) from None
    return resource, role, source
