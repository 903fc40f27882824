"""Errors of authentication and access control, with their gRPC and HTTP codes.

Every message is short and safe to send to the client that made the request:
it never contains the token, a secret or a traceback. Transports answer with
``str(error)`` and the error's ``grpc_code`` or ``http_status``:

- :class:`Unauthenticated`: no usable identity (a token that is malformed,
  forged, expired or of a disallowed algorithm, a header that is not
  ``Bearer <token>``, or no token on a resource that needs one):
  ``UNAUTHENTICATED`` / 401.
- :class:`PermissionDenied`: a valid token whose role is too low for the
  resource: ``PERMISSION_DENIED`` / 403.

``grpc_code`` imports grpc when first read, so an HTTP-only node does not need
grpc installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from msuite import MsuiteError

if TYPE_CHECKING:
    import grpc

__all__ = ["AuthError", "PermissionDenied", "SeveralCredentials", "Unauthenticated"]


class _GrpcCode:
    """A class attribute holding a ``grpc.StatusCode``, resolved (importing grpc) when read."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type[AuthError]) -> grpc.StatusCode: ...
    @overload
    def __get__(self, instance: AuthError, owner: type[AuthError]) -> grpc.StatusCode: ...
    def __get__(self, instance: AuthError | None, owner: type[AuthError]) -> grpc.StatusCode:
        import grpc

        return grpc.StatusCode[self.name]


class AuthError(MsuiteError):
    """A request was refused by authentication or the ACL; the message is safe for clients."""

    grpc_code = _GrpcCode("UNAUTHENTICATED")
    """The gRPC status code to answer with."""
    grpc_number: int = 16
    """Its number, for answers written without importing grpc (HTTP error bodies)."""
    http_status: int = 401
    """The HTTP status code to answer with."""


class Unauthenticated(AuthError):
    """No valid identity: a bad, expired or refused token, or none where one is needed."""

    grpc_code = _GrpcCode("UNAUTHENTICATED")
    grpc_number = 16
    http_status = 401


class SeveralCredentials(Unauthenticated):
    """More than one ``Authorization`` header (or ``authorization`` metadata entry): refused
    whatever they hold, as RFC 6750 asks, so no credential can hide behind another one."""

    http_status = 400

    def __init__(self) -> None:
        super().__init__("send one Authorization credential, not several")


class PermissionDenied(AuthError):
    """A valid token, but its role ranks below what the resource needs."""

    grpc_code = _GrpcCode("PERMISSION_DENIED")
    grpc_number = 7
    http_status = 403
