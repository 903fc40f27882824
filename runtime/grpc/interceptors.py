"""The node's gRPC server interceptor: one fixed chain around every method.

Order, outermost first (the same for unary and all three streaming kinds):

1. **Recovery**: an exception escaping the handler becomes INTERNAL with the
   message ``internal error``; the stack is logged server-side (logger
   ``msuite.grpc``) and never sent to the client.
2. **Call hooks** (metrics and tracing, filled in by diagnostics): each hook's
   ``begin`` runs before the call and the callback it returns gets the final
   status code.
3. **Authentication**: the ``authorization`` metadata (``Bearer <token>``) is
   verified; a present but invalid token is UNAUTHENTICATED.
4. **ACL**: the method's minimum role against the caller's role
   (UNAUTHENTICATED without a token, PERMISSION_DENIED with too low a role).

The chain is built once per method (the first call) and cached, so a call
pays one dict lookup to find it. Methods the ``impl`` leaves out answer
UNIMPLEMENTED (the node warns about them at start).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
import grpc.aio

from msuite.runtime.auth import AuthError, SeveralCredentials, set_principal

if TYPE_CHECKING:
    from msuite.runtime.auth import Auth

__all__ = ["KIND_NAMES", "Begin", "CallHook", "End", "NodeInterceptor"]

log = logging.getLogger("msuite.grpc")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


End: TypeAlias = Callable[[grpc.StatusCode, float], None]
"""Called once when a call ends, with its final status code and its seconds."""
Begin: TypeAlias = Callable[[Context], End]
"""Called as a call begins (in the call's own task, so it may set context variables)."""

KIND_NAMES: dict[tuple[bool, bool], str] = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
"""(request streaming, response streaming) -> the method's kind, as hooks receive it."""


class CallHook(Protocol):
    """Observes every call (metrics, tracing).

    ``prepare(method, kind)`` runs once per method, when its chain is built (the
    place to resolve labels); it returns the ``begin`` function run before every
    call of that method, which returns the callback for the call's end. A hook
    whose ``prepare`` raises is logged and left out for that method; one whose
    ``begin`` raises fails the call with INTERNAL, like a handler.
    """

    def prepare(self, method: str, kind: str) -> Begin: ...


def _authorization(context: Context) -> str | None:
    """The one ``authorization`` metadata value (None without one); several are refused."""
    found: str | None = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            if found is not None:
                raise SeveralCredentials()
            found = value if isinstance(value, str) else value.decode("latin-1")
    return found


def _final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    code: Any = context.code()  # None until the handler sets one
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if isinstance(error, grpc.aio.AbortError) else grpc.StatusCode.INTERNAL


class _Chain:
    """The steps around one method: ``enter`` before the user's handler, ``finish`` after it."""

    def __init__(self, method: str, auth: Auth | None, begins: Sequence[Begin]) -> None:
        self.method = method
        self.auth = auth
        self.begins = tuple(begins)

    async def enter(self, context: Context) -> list[End]:
        ends: list[End] = []
        try:
            for begin in self.begins:
                ends.append(begin(context))
        except Exception as exc:  # end what began (a span left open would never be reported)
            self.finish(ends, context, exc, time.perf_counter(), grpc.StatusCode.INTERNAL)
            raise
        if self.auth is not None:
            try:
                principal = self.auth.authorize(self.method, _authorization(context))
            except AuthError as exc:
                self.finish(ends, context, None, time.perf_counter(), exc.grpc_code)
                await context.abort(exc.grpc_code, str(exc))
            set_principal(principal)
        return ends

    def finish(
        self,
        ends: list[End],
        context: Context,
        error: BaseException | None,
        started: float,
        code: grpc.StatusCode | None = None,
    ) -> None:
        if not ends:
            return
        final = code or _final_code(context, error)
        elapsed = time.perf_counter() - started
        for end in ends:
            try:
                end(final, elapsed)
            except Exception:
                log.exception("a call hook failed for %s", self.method)

    async def recover(self, context: Context, error: Exception) -> None:
        log.error("%s raised %s", self.method, type(error).__name__, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def _unary_response(chain: _Chain, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        ends: list[End] = []
        error: BaseException | None = None
        try:
            ends = await chain.enter(context)
            return await behavior(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError) as exc:
            error = exc
            raise
        except Exception as exc:
            error = exc
            await chain.recover(context, exc)
        finally:
            chain.finish(ends, context, error, started)

    return call


def _stream_response(chain: _Chain, behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            ends: list[End] = []
            error: BaseException | None = None
            try:
                ends = await chain.enter(context)
                async for response in behavior(request, context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit) as exc:
                error = exc
                raise
            except Exception as exc:
                error = exc
                await chain.recover(context, exc)
            finally:
                chain.finish(ends, context, error, started)

        return stream
    return _unary_response(chain, behavior)  # writes with context.write(), returns None


def _unimplemented(method: str, impl: str) -> Callable[..., Awaitable[None]]:
    async def call(request: Any, context: Context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by {impl}")

    return call


# (request streaming, response streaming) -> how to build the handler, and its behaviour attribute
_KINDS: dict[tuple[bool, bool], tuple[Callable[..., Any], str]] = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


class NodeInterceptor(grpc.aio.ServerInterceptor):
    """Recovery, call hooks, authentication and ACL, in that order, around every method."""

    def __init__(
        self,
        auth: Auth | None = None,
        hooks: Sequence[CallHook] = (),
        unimplemented: Mapping[str, str] | None = None,
    ) -> None:
        self._auth = auth
        self._hooks = tuple(hooks)
        self._unimplemented = dict(unimplemented or {})
        self._chains: dict[str, Handler] = {}

    @property
    def hooks(self) -> tuple[CallHook, ...]:
        """The call hooks, fixed when the interceptor is made (the chains built from them are cached)."""
        return self._hooks

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._chains.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED; nothing cached
            return None
        wrapped = self._wrap(method, handler)
        self._chains[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        shape = (handler.request_streaming, handler.response_streaming)
        begins: list[Begin] = []
        for hook in self._hooks:
            try:
                begins.append(hook.prepare(method, KIND_NAMES[shape]))
            except Exception:
                log.exception("call hook %r failed to prepare %s; left out for this method", hook, method)
        chain = _Chain(method, self._auth, begins)
        missing = self._unimplemented.get(method)
        make, kind = _KINDS[shape]
        behavior = _unimplemented(method, missing) if missing else getattr(handler, kind)
        if handler.response_streaming and not missing:
            call = _stream_response(chain, behavior)
        else:
            call = _unary_response(chain, behavior)
        result: Handler = make(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return result
