"""Acl: lookups (exact, prefix, longest prefix, unlisted), changes, validation, persistence."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from msuite.runtime.auth import Acl
from msuite.runtime.repo import Repo
from msuite.runtime.store import Memory
from msuite.runtime.store.kv import Snapshot
from msuite.spec import Role

A, R = Role.ADMIN, Role.PUBLIC_READ


class RecordingKV:
    """A memory KV that records each write and the thread it ran in."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.writes: list[tuple[list[tuple[bytes, bytes]], list[bytes]]] = []
        self.threads: list[threading.Thread] = []

    def get(self, key: bytes) -> bytes | None:
        return self.memory.get(key)

    def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
        self.writes.append((list(puts), list(deletes)))
        self.threads.append(threading.current_thread())
        self.memory.write(puts, deletes)

    def snapshot(self) -> Snapshot:
        return self.memory.snapshot()

    def close(self) -> None:
        pass


async def acl_of(entries: dict[str, Role]) -> Acl:
    acl = Acl()
    await acl.load_manifest(entries)
    return acl


# --------------------------------------------------------------------------- required()


async def test_exact_prefix_and_unlisted() -> None:
    acl = await acl_of(
        {
            "/pkg.Notes/Delete": A,
            "/pkg.Admin/": A,
            "/v1/": R,
            "/v1/rooms/": Role.AUTHENTICATED_WRITE,
            "/v1/rooms/lobby": Role.NONE,
            "/status": Role.AUTHENTICATED_READ,
        }
    )
    assert acl.required("/pkg.Notes/Delete") == A  # exact
    assert acl.required("/pkg.Notes/Create") is None  # unlisted: open
    assert acl.required("/pkg.Admin/Reset") == A  # a service's methods
    assert acl.required("/pkg.Admin") is None  # not under the prefix
    assert acl.required("/pkg.AdminX/Reset") is None  # a longer name, not a child
    assert acl.required("/v1/rooms/7") == Role.AUTHENTICATED_WRITE  # the longest prefix wins
    assert acl.required("/v1/rooms/7/messages/9") == Role.AUTHENTICATED_WRITE
    assert acl.required("/v1/rooms/") == Role.AUTHENTICATED_WRITE  # the prefix key itself
    assert acl.required("/v1/rooms") == R  # no trailing slash: only /v1/ covers it
    assert acl.required("/v1/rooms/lobby") == Role.NONE  # an exact entry beats a prefix
    assert acl.required("/v1/rooms/lobby/x") == Role.AUTHENTICATED_WRITE  # exact is exact
    assert acl.required("/v1/users") == R
    assert acl.required("/v2/users") is None
    assert acl.required("/status") == Role.AUTHENTICATED_READ
    assert acl.required("/status/more") is None
    assert acl.required("/") is None
    assert acl.required("") is None


async def test_the_root_prefix_covers_everything() -> None:
    acl = await acl_of({"/": R, "/admin/": A})
    assert acl.required("/anything/at/all") == R
    assert acl.required("/pkg.S/M") == R
    assert acl.required("/admin/x") == A


async def test_the_query_string_is_ignored() -> None:
    acl = await acl_of({"/admin": A, "/v1/rooms/": R})
    assert acl.required("/admin?x=1") == A
    assert acl.required("/admin?") == A
    assert acl.required("/v1/rooms/7?a=/b/") == R
    assert acl.required("/other?/admin") is None


@pytest.mark.parametrize(
    "path",
    ["//admin/x", "/admin//x", "/public/../admin/x", "/admin/./x", "/%61dmin/x", "/admin%2Fx", "/./admin/x"],
)
async def test_other_spellings_of_a_path_get_at_least_its_protection(path: str) -> None:
    acl = await acl_of({"/admin/": A, "/public/": R})
    assert acl.required(path) == A


async def test_canonical_spellings_do_not_loosen_or_tighten_others() -> None:
    acl = await acl_of({"/admin/": A, "/public/": R, "/.well-known/": Role.NONE})
    assert acl.required("/admin/../public/x") == A  # as given: under /admin/; the stricter applies
    assert acl.required("/public/x%20y") == R
    assert acl.required("/.well-known/openid") == Role.NONE
    assert acl.required("/pkg.S/M") is None


async def test_lookups_stop_at_the_longest_prefix_key() -> None:
    acl = await acl_of({"/a/": R})
    deep = "/a/" + "x/" * 5000
    assert acl.required(deep) == R
    assert acl.required("/b/" + "x/" * 5000) is None


# --------------------------------------------------------------------------- changes


async def test_go_msuite_acl_lifecycle() -> None:
    # go-msuite TestACLLifecycle, on this API
    acl = Acl()
    assert acl.required("dummyresource") is None  # unconfigured: open to role none
    with pytest.raises(ValueError, match="unknown role 'invalidACL'"):
        await acl.allow("/dummyresource", "invalidACL")
    assert acl.list() == {}
    await acl.allow("/dummyresource", Role.ADMIN)
    required = acl.required("/dummyresource")
    assert required == Role.ADMIN
    assert not Role.AUTHENTICATED_WRITE.allows(required)
    assert Role.ADMIN.allows(required)
    await acl.allow("/dummyresource", "public_write")
    required = acl.required("/dummyresource")
    assert required == Role.PUBLIC_WRITE
    assert Role.AUTHENTICATED_WRITE.allows(required)
    assert not Role.PUBLIC_READ.allows(required)
    assert [r for r in Role if r.allows(required)] == [
        Role.PUBLIC_WRITE,
        Role.AUTHENTICATED_READ,
        Role.AUTHENTICATED_WRITE,
        Role.ADMIN,
    ]
    assert await acl.remove("/dummyresource") is True
    assert acl.required("/dummyresource") is None  # delete reopens
    assert await acl.remove("/dummyresource") is False


async def test_changes_take_effect_at_once_and_list_is_sorted() -> None:
    acl = await acl_of({"/z": A})
    await acl.allow("/m/", R)
    await acl.allow("/a", Role.AUTHENTICATED_READ)
    assert list(acl.list()) == ["/a", "/m/", "/z"]
    assert acl.list() == {"/a": Role.AUTHENTICATED_READ, "/m/": R, "/z": A}
    assert acl.required("/m/x") == R
    await acl.allow("/m/", A)  # replaced
    assert acl.required("/m/x") == A
    await acl.remove("/m/")
    assert acl.required("/m/x") is None
    assert len(acl) == 2
    assert acl.source("/z") == "manifest" and acl.source("/a") == "runtime" and acl.source("/m/") is None
    assert acl.status() == {"entries": 2, "manifest": 1, "runtime": 1}


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("", "starting with '/'"),
        ("admin", "starting with '/'"),
        ("pkg.S/M", "starting with '/'"),
        ("/admin?x=1", "without its query string"),
        ("/a b", "no whitespace"),
        ("/a\tb", "no whitespace"),
        ("/a\n", "no whitespace"),
        ("/a\x00", "control characters"),
        ("/" + "a" * 5000, "longer than 4096"),
    ],
)
async def test_invalid_resources_are_refused(resource: str, message: str) -> None:
    acl = Acl()
    with pytest.raises(ValueError, match=message):
        await acl.allow(resource, Role.ADMIN)
    with pytest.raises(ValueError, match=message):
        await acl.load_manifest({resource: Role.ADMIN})
    with pytest.raises(ValueError, match=message):
        await acl.remove(resource)
    assert acl.list() == {}


async def test_an_invalid_manifest_entry_changes_nothing() -> None:
    kv = RecordingKV()
    acl = Acl(kv)
    with pytest.raises(ValueError, match="unknown role 'root'"):
        await acl.load_manifest({"/a": Role.ADMIN, "/b": "root"})
    assert acl.list() == {} and kv.writes == []


async def test_roles_as_text_are_accepted_and_checked() -> None:
    acl = Acl()
    await acl.allow("/a", "authenticated_read")
    assert acl.required("/a") == Role.AUTHENTICATED_READ
    for bad in ("Admin", "root", ""):
        with pytest.raises(ValueError, match="roles, lowest first: none, public_read"):
            await acl.allow("/a", bad)
    with pytest.raises(ValueError, match="unknown role"):
        await acl.allow("/a", 3)  # type: ignore[arg-type]


async def test_concurrent_changes_all_land() -> None:
    acl = Acl(RecordingKV())
    await asyncio.gather(*(acl.allow(f"/r{i}", Role.ADMIN) for i in range(20)))
    assert len(acl.list()) == 20


# --------------------------------------------------------------------------- storage


async def test_writes_are_batched_and_off_the_event_loop() -> None:
    kv = RecordingKV()
    acl = Acl(kv)
    await acl.load_manifest({"/a": A, "/b/": R, "/c": Role.NONE})
    assert len(kv.writes) == 1 and len(kv.writes[0][0]) == 3  # one batch
    await acl.allow("/d", A)
    await acl.remove("/d")
    await acl.remove("/absent")  # nothing to write
    assert len(kv.writes) == 3
    assert all(t is not threading.main_thread() for t in kv.threads)


async def test_a_failed_write_changes_nothing() -> None:
    class Failing(RecordingKV):
        def write(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes] = ()) -> None:
            raise OSError("disk full")

    acl = Acl(Failing())
    with pytest.raises(OSError, match="disk full"):
        await acl.allow("/a", A)
    assert acl.required("/a") is None and acl.list() == {}


async def test_memory_only_without_kv() -> None:
    acl = Acl()
    await acl.load_manifest({"/a": A})
    await acl.allow("/b", R)
    assert Acl().list() == {}


async def test_entries_persist_in_leveldb_and_the_manifest_wins(tmp_path: Path) -> None:
    repo = Repo.open(tmp_path / "repo")
    try:
        acl = Acl(repo.space("acl"))
        assert acl.list() == {}
        await acl.load_manifest({"/admin/": A, "/pkg.S/Delete": A, "/old": R})
        await acl.allow("/v1/rooms/", Role.AUTHENTICATED_WRITE)  # added at run time
        await acl.allow("/admin/", R)  # a run-time change to a manifest entry
        await acl.allow("/gone", R)
        await acl.remove("/gone")
    finally:
        repo.close()

    repo = Repo.open(tmp_path / "repo")
    try:
        acl = Acl(repo.space("acl"))
        # everything as it was left, before the manifest is loaded again
        assert acl.list() == {
            "/admin/": R,
            "/old": R,
            "/pkg.S/Delete": A,
            "/v1/rooms/": Role.AUTHENTICATED_WRITE,
        }
        assert acl.source("/admin/") == "runtime"
        assert acl.required("/v1/rooms/7") == Role.AUTHENTICATED_WRITE
        # the manifest overwrites stored entries; /old left the manifest, so it goes
        await acl.load_manifest({"/admin/": A, "/pkg.S/Delete": Role.AUTHENTICATED_WRITE})
        assert acl.list() == {
            "/admin/": A,
            "/pkg.S/Delete": Role.AUTHENTICATED_WRITE,
            "/v1/rooms/": Role.AUTHENTICATED_WRITE,
        }
        assert repo.kv.get(b"/admin/") is None  # kept in its own key space
    finally:
        repo.close()

    repo = Repo.open(tmp_path / "repo")
    try:
        acl = Acl(repo.space("acl"))
        assert acl.required("/admin/x") == A
        assert acl.required("/old") is None
        assert acl.source("/admin/") == "manifest" and acl.source("/v1/rooms/") == "runtime"
        # a run-time entry stays even when the manifest is empty
        await acl.load_manifest({})
        assert acl.list() == {"/v1/rooms/": Role.AUTHENTICATED_WRITE}
    finally:
        repo.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"/a", b"admin"),
        (b"/a", b'{"role": 7, "source": "runtime"}'),
        (b"/a", b'{"role": "", "source": "runtime"}'),
        (b"/a", b'{"role": "admin", "source": "elsewhere"}'),
        (b"/a", b'{"role": "admin"}'),
        (b"not-a-path", b'{"role": "admin", "source": "runtime"}'),
        (b"/\xff", b'{"role": "admin", "source": "runtime"}'),
    ],
)
def test_an_unreadable_stored_entry_fails_loudly(key: bytes, value: bytes) -> None:
    kv = Memory()
    kv.write([(b"/ok", b'{"role":"admin","source":"runtime"}'), (key, value)])
    with pytest.raises(ValueError, match=r"ACL store: the entry .* cannot be read"):
        Acl(kv)
