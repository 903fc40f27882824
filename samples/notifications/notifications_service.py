"""The notifications.v1.Notifications service of the notifications node.

Subscriptions and notifications live in the store shared by every node of the
channel `samples` (``node.shared``), so any notifications node answers for all:

- shared namespace ``subscriptions``: one item per (channel, user), id
  ``<channel>/<user_id>``, so a channel's subscribers are one prefix scan;
- shared namespace ``notifications``: one item per mail, id ``<user_id>/<new id>``,
  kept whether or not the provider delivered it (``error`` says why not).

Who may do what (the ACL in msuite.yaml admits the roles; the rest is here):
Subscribe and List act on the caller (the token's subject) by default; another
user's subscription needs the ``service`` role, another user's notifications
``admin``. Send needs ``service`` (the auth sample mails with a token it mints).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from typing import Any, ClassVar, NoReturn

import grpc

# gen: written by `msuite generate` from msuite.yaml and protos/notifications.proto
from gen import notifications_pb2 as pb
from gen import notifications_pb2_grpc
from gen.events import UserRegistered
from mailer import DeliveryError, Mail, build_mailer
from pydantic import BaseModel

from msuite.runtime.auth import current_principal
from msuite.runtime.store import AlreadyExists, Sort, new_id

log = logging.getLogger("notifications")

WELCOME_SUBJECT = "Welcome to the msuite samples"
CHANNEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
ADDRESS = re.compile(r"[^@\s]+@[^@\s]+")
MAX_BODY = 64 * 1024


class Subscription(BaseModel):
    """A user's subscription to a channel, and where its mail goes."""

    store_namespace: ClassVar[str] = "subscriptions"
    id: str | None = None
    user_id: str
    channel: str
    email: str


class Notification(BaseModel):
    """One mail, as sent (or not: ``error``)."""

    store_namespace: ClassVar[str] = "notifications"
    id: str | None = None
    user_id: str
    channel: str = ""
    to: str
    subject: str
    body: str
    provider: str
    error: str = ""
    """Empty when the provider took the mail; else why it could not."""
    created: datetime | None = None

    def to_proto(self) -> pb.Notification:
        created = self.created.isoformat().replace("+00:00", "Z") if self.created else ""
        return pb.Notification(
            id=self.id or "",
            user_id=self.user_id,
            channel=self.channel,
            to=self.to,
            subject=self.subject,
            body=self.body,
            created=created,
            provider=self.provider,
        )


class Invalid(ValueError):
    """A request that can never succeed as it is: INVALID_ARGUMENT."""


class Notifications(notifications_pb2_grpc.NotificationsServicer):
    """Subscriptions, sending and each user's notifications; a welcome mail per new user."""

    def __init__(self, node: Any) -> None:
        self.mailer = build_mailer(node.config)
        self.roles = node.auth.roles
        self.subscriptions = node.shared("subscriptions")
        self.notifications = node.shared("notifications")
        node.events.on(UserRegistered, self.welcome)

    # ------------------------------------------------------------------ gRPC

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Subscription:
        try:
            user_id = self._acting_for(request.user_id, "service", "subscribe another user")
            channel = _channel(request.channel)
            email = _address(request.email, "email")
        except (Invalid, PermissionError) as exc:
            await _abort(context, exc)
        item = Subscription(id=f"{channel}/{user_id}", user_id=user_id, channel=channel, email=email)
        try:
            await self.subscriptions.create(item)
        except AlreadyExists:  # subscribed already: the new address replaces the old one
            await self.subscriptions.update(item)
        return pb.Subscription(user_id=user_id, channel=channel, email=email)

    async def Send(
        self, request: pb.SendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendReply:
        try:
            mails = await self._recipients(request)
        except Invalid as exc:
            await _abort(context, exc)
        sent = await asyncio.gather(
            *(self.deliver(user_id, mail, request.channel) for user_id, mail in mails)
        )
        errors = [error for _, error in sent if error is not None]
        if errors:
            permanent = all(error.permanent for error in errors)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT if permanent else grpc.StatusCode.UNAVAILABLE,
                f"{len(errors)} of {len(sent)} mails not delivered (each kept as a notification "
                f"with its error): {errors[0]}",
            )
        return pb.SendReply(ids=[item.id or "" for item, _ in sent])

    async def List(
        self, request: pb.ListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListReply:
        try:
            user_id = self._acting_for(request.user_id, "admin", "list another user's notifications")
        except PermissionError as exc:
            await _abort(context, exc)
        items = await self.notifications.list(
            Notification,
            prefix=f"{user_id}/",
            filter=lambda n: n.user_id == user_id,  # a user id may hold "/": the prefix only narrows
            sort=Sort.CREATED_DESC,
        )
        return pb.ListReply(notifications=[item.to_proto() for item in items])

    # ------------------------------------------------------------------ events

    async def welcome(self, event: UserRegistered) -> None:
        """Mail a new user (auth publishes ``UserRegistered`` once the account exists)."""
        try:
            to = _address(event.email, "email")
        except Invalid as exc:
            log.warning("no welcome mail for user %s: %s", event.user_id, exc)
            return
        body = (
            f"Hello {event.name or 'there'},\n\n"
            "welcome to the msuite samples: your account is ready.\n\n"
            "-- the notifications node\n"
        )
        item, error = await self.deliver(event.user_id, Mail(to, WELCOME_SUBJECT, body))
        if error is not None:
            log.warning("welcome mail %s to user %s not delivered: %s", item.id, event.user_id, error)

    # ------------------------------------------------------------------ the work

    async def deliver(
        self, user_id: str, mail: Mail, channel: str = ""
    ) -> tuple[Notification, DeliveryError | None]:
        """Hand ``mail`` to the provider, then keep it as a notification of ``user_id``, with
        the provider's error when it failed; returns the notification and that error."""
        error: DeliveryError | None = None
        try:
            await self.mailer.send(mail)
        except DeliveryError as exc:
            error = exc
        item = await self.notifications.create(
            Notification(
                id=f"{user_id}/{new_id()}",
                user_id=user_id,
                channel=channel,
                to=mail.to,
                subject=mail.subject,
                body=mail.body,
                provider=self.mailer.name,
                error="" if error is None else str(error),
            )
        )
        return item, error

    async def _recipients(self, request: pb.SendRequest) -> list[tuple[str, Mail]]:
        """(user id, mail) for each address ``request`` reaches."""
        if "\r" in request.subject or "\n" in request.subject:
            raise Invalid("subject: a single line, please")
        if not request.subject:
            raise Invalid("subject: empty")
        if len(request.body) > MAX_BODY:
            raise Invalid(f"body: longer than {MAX_BODY} characters")
        if request.channel:
            if request.to or request.user_id:
                raise Invalid("give channel (every subscriber) or user_id and to (one address), not both")
            channel = _channel(request.channel)
            subscribers = await self.subscriptions.list(Subscription, prefix=f"{channel}/")
            return [(s.user_id, Mail(s.email, request.subject, request.body)) for s in subscribers]
        if not request.user_id:
            raise Invalid("user_id: empty (a direct mail belongs to a user; or give channel)")
        return [(request.user_id, Mail(_address(request.to, "to"), request.subject, request.body))]

    def _acting_for(self, user_id: str, role: str, what: str) -> str:
        """The user a call acts for: ``user_id``, or the caller when empty; another user's
        needs ``role`` (PermissionError otherwise)."""
        principal = current_principal()
        subject = principal.subject or ""
        if not user_id or user_id == subject:
            if not subject:
                raise PermissionError("this call needs a token with a subject")
            return subject
        if not self.roles.allows(principal.role, role):
            raise PermissionError(f"the {role} role is needed to {what}")
        return user_id


def _channel(channel: str) -> str:
    if not CHANNEL.fullmatch(channel):
        raise Invalid(f"channel: {channel!r} is not 1-64 of [A-Za-z0-9._-]")
    return channel


def _address(address: str, field: str) -> str:
    if len(address) > 254 or not ADDRESS.fullmatch(address):
        raise Invalid(f"{field}: {address!r} is not an email address")
    return address


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    denied = isinstance(exc, PermissionError)
    await context.abort(
        grpc.StatusCode.PERMISSION_DENIED if denied else grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    )
    raise AssertionError("context.abort returned")
