"""Authentication and access control (``node.auth``): JWT bearer tokens and the ACL.

::

    auth = Auth(manifest.auth, kv=repo.space("acl"))
    await auth.start()                                  # manifest ACL entries over stored ones
    token = auth.jwt.issue("alice", Role.AUTHENTICATED_WRITE)
    principal = auth.authorize("/notes.v1.Notes/Create", f"Bearer {token}")
    await auth.acl.allow("/admin/", Role.ADMIN)         # persisted, effective at once

The rules (each module's docstring has its part):

- A request without a token has role ``none`` (:attr:`Principal.ANONYMOUS`).
  A token that is present but invalid is always refused, never treated as
  no token.
- Tokens are HMAC-signed JWTs with an algorithm from the manifest's
  allow-list (never ``none``), a bounded size and a required expiry
  (:mod:`.jwt`).
- A resource is a gRPC full method or an HTTP path without its query string;
  its ACL entry is its minimum role, a key ending in ``/`` covers the
  resources under it, and an unlisted resource is open (:mod:`.acl`).
- More than one credential is refused, whatever they hold
  (:class:`SeveralCredentials`: UNAUTHENTICATED / 400).
- Refusals are :class:`Unauthenticated` (UNAUTHENTICATED / 401) or
  :class:`PermissionDenied` (PERMISSION_DENIED / 403), with messages safe to
  send to clients (:mod:`.errors`).
"""

from .acl import Acl
from .auth import Auth
from .errors import AuthError, PermissionDenied, SeveralCredentials, Unauthenticated
from .jwt import JWTAuth
from .principal import Principal, current_principal, reset_principal, set_principal

__all__ = [
    "Acl",
    "Auth",
    "AuthError",
    "JWTAuth",
    "PermissionDenied",
    "Principal",
    "SeveralCredentials",
    "Unauthenticated",
    "current_principal",
    "reset_principal",
    "set_principal",
]
