"""The credential a node presents on its own calls to other nodes (``auth.outgoing``).

``node.grpc.client(name)`` channels carry ``authorization: Bearer <token>``:

- with ``auth.outgoing.role``, a token the node mints for itself with
  ``auth.jwt``'s signing key: subject the node's name, that role, lifetime
  ``ttl``; a new one is minted when a third of the lifetime is left, so a call
  never leaves with a token about to expire (the receiving nodes must accept
  that key: share the secret, or give them the public key);
- with ``auth.outgoing.token``, that token as it is (say ``"${NOTES_TOKEN}"``).

A call that already has ``authorization`` metadata (user code passing its
caller's token on) keeps it. The channel the HTTP gateway uses to reach the
node's own gRPC server never carries the node's credential: a gateway request
is the HTTP caller's, with the HTTP caller's token or none. Calls over TCP,
Unix sockets and gRPC over libp2p are treated alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc.aio

from msuite.runtime.grpc.every_call import EveryCallInterceptor

if TYPE_CHECKING:
    from msuite.spec import Outgoing

    from .jwt import JWTAuth

__all__ = ["Credential", "OutgoingAuth"]

RENEW_AT = 2 / 3
"""A minted token is replaced once this share of its lifetime has passed."""


class Credential:
    """The ``Authorization`` header value of the node's own calls (see the module)."""

    def __init__(
        self,
        outgoing: Outgoing,
        subject: str,
        jwt: Callable[[], JWTAuth],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._role = outgoing.role
        self._ttl = outgoing.ttl.total_seconds()
        self._subject = subject
        self._jwt = jwt
        self._clock = clock
        self._header = f"Bearer {outgoing.token.get_secret_value()}" if outgoing.token is not None else None
        self._renew_at = float("inf") if outgoing.token is not None else 0.0
        self.minted = 0
        """Tokens minted so far."""

    def header(self) -> str:
        """``Bearer <token>``, minting a new token when the current one is two thirds through."""
        now = self._clock()
        if self._header is None or now >= self._renew_at:
            assert self._role is not None
            token = self._jwt().issue(self._subject, self._role, ttl=self._ttl)
            self._header = f"Bearer {token}"
            self._renew_at = now + self._ttl * RENEW_AT
            self.minted += 1
        return self._header

    def __repr__(self) -> str:
        kind = f"minted, role {self._role}" if self._role is not None else "fixed"
        return f"Credential({kind})"  # never the token


class OutgoingAuth(EveryCallInterceptor):
    """Adds the node's credential to each call that has no ``authorization`` metadata."""

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def _details(self, details: Any) -> Any:
        given = details.metadata or ()
        if any(key.lower() == "authorization" for key, _value in given):
            return details
        return details._replace(
            metadata=grpc.aio.Metadata(*given, ("authorization", self._credential.header()))
        )

    async def _call(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)
