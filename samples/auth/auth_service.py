"""The auth.v1.Auth service of the auth node.

Users live in the shared store (see ``accounts.py``), so any auth node answers for any
user. Writes that must not race (registration, verification, profile changes, deletion)
run under the Redis lock of the user's email, around ``sync`` (catch up with the other
nodes), the check, the write and ``flush`` (send it now): the next holder of the lock,
on any node, sees the write. Reads that miss an item ``sync`` once and look again, so a
user registered on one node a moment ago is found on another.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from accounts import (
    CODE_ATTEMPTS,
    CODE_TTL,
    MIN_PASSWORD,
    EmailIndex,
    User,
    check_password,
    hash_code,
    hash_password,
    new_code,
    normalize_email,
    valid_email,
)

# Written by `msuite generate` from protos/auth.proto and the manifest's events.
from gen import auth_pb2, auth_pb2_grpc
from gen.events import UserRegistered

# Copied by update_clients.py from ../notifications/protos/notifications.proto.
from notifications_client import notifications_pb2, notifications_pb2_grpc

from msuite.runtime.auth import current_principal
from msuite.runtime.locks import LockError
from msuite.runtime.shared.shared import SyncTimeout
from msuite.runtime.store import NotFound

log = logging.getLogger("samples.auth")

NOTIFICATIONS = "notifications.v1.Notifications"
LOCK_TIMEOUT = 5.0  # seconds to wait for an email's lock
SYNC_TIMEOUT = 3.0  # seconds to catch up with the other nodes
FIND_TIMEOUT = 2.0  # seconds to wait for a notifications node to be known
SEND_TIMEOUT = 5.0  # seconds for the Send call
REFUSED = "wrong email or password"  # one message for an unknown email and a wrong password

Context = grpc.aio.ServicerContext[Any, Any]


class Auth(auth_pb2_grpc.AuthServicer):
    """Accounts on the shared store; tokens from the node's JWT key (``auth.jwt``)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        admins = str(node.config.get("admins") or "")
        self.admins = frozenset(normalize_email(e) for e in admins.split(",") if e.strip())

    async def on_start(self) -> None:
        # One shared namespace, ``users``, holds both item classes (User, and EmailIndex under
        # its own item namespace ``emails``): a batch writes to one store, and registration
        # writes the user and its email together.
        self.store = self.node.shared("users")

    # ------------------------------------------------------------------ open methods

    async def Register(self, request: auth_pb2.RegisterRequest, context: Context) -> auth_pb2.RegisterReply:
        email = normalize_email(request.email)
        if not valid_email(email):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid email address")
        if len(request.password) < MIN_PASSWORD:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the password needs {MIN_PASSWORD} characters or more"
            )
        password_hash = await hash_password(request.password)  # before the lock: it takes ~50 ms
        user_id = secrets.token_hex(16)
        code = new_code()
        async with self._locked(email, context):
            if await self.store.exists(EmailIndex, email):
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{email} is already registered")
            user = User(
                id=user_id,
                email=email,
                name=request.name.strip(),
                password_hash=password_hash,
                code_hash=hash_code(user_id, code),
                code_expires=datetime.now(UTC) + CODE_TTL,
            )
            async with self.store.batch() as batch:  # one delta: both or neither, on every node
                batch.create(user)
                batch.create(EmailIndex(id=email, user_id=user_id))
            await self.store.flush()
        log.info("registered %s (%s)", user_id, email)
        try:
            await self.node.events.publish(UserRegistered(user_id=user_id, email=email, name=user.name))
        except Exception:
            log.exception("UserRegistered of %s was not published", user_id)
        await self._send_code(user, code)
        return auth_pb2.RegisterReply(user_id=user_id)

    async def Verify(self, request: auth_pb2.VerifyRequest, context: Context) -> auth_pb2.VerifyReply:
        email = normalize_email(request.email)
        async with self._locked(email, context):
            user = await self._by_email(email)
            if user is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"{email} is not registered")
            if user.verified:
                return auth_pb2.VerifyReply()
            expired = user.code_expires is None or user.code_expires < datetime.now(UTC)
            if expired or user.code_attempts >= CODE_ATTEMPTS:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the code has expired: ask an admin to delete the account",
                )
            if not secrets.compare_digest(user.code_hash, hash_code(user.id or "", request.code.strip())):
                await self.store.update(user.model_copy(update={"code_attempts": user.code_attempts + 1}))
                await self.store.flush()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "wrong code")
            changes = {"verified": True, "code_hash": "", "code_expires": None, "code_attempts": 0}
            await self.store.update(user.model_copy(update=changes))
            await self.store.flush()
        return auth_pb2.VerifyReply()

    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, context: Context) -> auth_pb2.Token:
        user = await self._by_email(normalize_email(request.email))
        if not await check_password(request.password, None if user is None else user.password_hash):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        assert user is not None
        if not user.verified:  # verified on another node a moment ago? catch up once
            with contextlib.suppress(SyncTimeout):
                await self.store.sync(SYNC_TIMEOUT)
            user = await self._user(user.id or "") or user
        if not user.verified:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "verify your email address first")
        return self._token(user)

    # ------------------------------------------------------------------ a user's own

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Context) -> auth_pb2.Token:
        return self._token(await self._caller(context))

    async def GetProfile(self, request: auth_pb2.GetProfileRequest, context: Context) -> auth_pb2.Profile:
        return self._profile(await self._caller(context))

    async def UpdateProfile(
        self, request: auth_pb2.UpdateProfileRequest, context: Context
    ) -> auth_pb2.Profile:
        caller = await self._caller(context)
        async with self._locked(caller.email, context):
            user = await self._caller(context)  # again, under the lock
            user = await self.store.update(user.model_copy(update={"name": request.name.strip()}))
            await self.store.flush()
        return self._profile(user)

    # ------------------------------------------------------------------ admin

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Context
    ) -> auth_pb2.ListUsersReply:
        await self._sync(context)
        users = await self.store.list(User, limit=0)
        return auth_pb2.ListUsersReply(users=[self._profile(user) for user in users])

    async def DeleteUser(
        self, request: auth_pb2.DeleteUserRequest, context: Context
    ) -> auth_pb2.DeleteUserReply:
        user = await self._user(request.user_id)
        if user is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no user {request.user_id}")
        async with self._locked(user.email, context):
            # again under the lock: another admin may have deleted it, and the email may now
            # belong to a newer account, whose index entry must stay
            if await self._user(request.user_id) is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no user {request.user_id}")
            index = await self._index(user.email)
            async with self.store.batch() as batch:
                batch.delete(User, request.user_id)
                if index is not None and index.user_id == request.user_id:
                    batch.delete(EmailIndex, user.email)
            await self.store.flush()
        log.info("deleted %s (%s)", request.user_id, user.email)
        return auth_pb2.DeleteUserReply()

    # ------------------------------------------------------------------ helpers

    @contextlib.asynccontextmanager
    async def _locked(self, email: str, context: Context) -> AsyncIterator[None]:
        """The email's lock, then every other node's acknowledged writes applied here."""
        key = "auth/email/" + hashlib.sha256(email.encode()).hexdigest()
        try:
            lease = await self.node.locker.try_lock(key, LOCK_TIMEOUT)
        except LockError as exc:
            log.warning("lock %s: %s", key, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "busy: try again")
        try:
            await self._sync(context)
            yield
        finally:
            await lease.release()

    async def _sync(self, context: Context) -> None:
        try:
            await self.store.sync(SYNC_TIMEOUT)
        except SyncTimeout as exc:
            log.warning("sync: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "other auth nodes did not answer: try again")

    async def _user(self, user_id: str) -> User | None:
        """The user, from this node's copy (the writes that must be seen sync first: _locked).

        A miss never asks the other nodes: anybody could make every node wait with made-up
        emails, and an unknown email would answer slower than a wrong password."""
        if not user_id:
            return None
        with contextlib.suppress(NotFound):
            return await self.store.read(User, user_id)  # type: ignore[no-any-return]
        return None

    async def _by_email(self, email: str) -> User | None:
        index = await self._index(email)
        return None if index is None else await self._user(index.user_id)

    async def _index(self, email: str) -> EmailIndex | None:
        with contextlib.suppress(NotFound):
            return await self.store.read(EmailIndex, email)  # type: ignore[no-any-return]
        return None

    async def _caller(self, context: Context) -> User:
        """The user the caller's token names (a deleted user's token is refused)."""
        user = await self._user(current_principal().subject or "")
        if user is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no such user")
        return user

    def _role(self, user: User) -> str:
        return "admin" if user.email in self.admins else "user"

    def _token(self, user: User) -> auth_pb2.Token:
        role = self._role(user)
        jwt = self.node.auth.jwt
        token = jwt.issue(user.id, role)
        return auth_pb2.Token(access_token=token, expires_in=int(jwt.ttl), role=role)

    def _profile(self, user: User) -> auth_pb2.Profile:
        return auth_pb2.Profile(
            user_id=user.id or "",
            email=user.email,
            name=user.name,
            verified=user.verified,
            role=self._role(user),
            created=user.created.isoformat() if user.created else "",
        )

    async def _send_code(self, user: User, code: str) -> None:
        """Mail the code through notifications (with the node's service token). A failure is
        logged and registration stands: the account can be deleted by an admin and made again."""
        try:
            await self.node.p2p.find_service(NOTIFICATIONS, FIND_TIMEOUT)
            stub = notifications_pb2_grpc.NotificationsStub(self.node.grpc.client(NOTIFICATIONS))
            request = notifications_pb2.SendRequest(
                user_id=user.id or "",
                to=user.email,
                subject="Your verification code",
                body=f"Your verification code is {code}. It expires in {CODE_TTL.seconds // 60} minutes.",
            )
            await stub.Send(request, timeout=SEND_TIMEOUT)
        except Exception as exc:  # unreachable, refused, timed out: registration still stands
            log.error("the verification code for %s was not sent: %s", user.email, exc)
