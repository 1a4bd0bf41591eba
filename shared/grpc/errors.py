"""The one mapping between the project's typed errors (``shared.errors``) and gRPC status codes.

Servicers raise ``InvalidInput``/``NotFound``/``TooLarge``/... and never call ``context.abort`` for them;
``ErrorInterceptor`` turns them into the status code with the error's own message (which says what was
expected). Anything unexpected becomes INTERNAL with a generic message; the traceback goes to the log,
not to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import sqlalchemy.exc as sa_exc

from shared.errors import FashionError, InvalidInput, NotFound, TooLarge, Unauthenticated, Unavailable
from shared.grpc._handlers import split_method, wrap_handler

log = logging.getLogger("fashion.grpc")

# Most specific first: isinstance picks the first match (DataFormatError is an InvalidInput, ...).
_TYPED_CODES: tuple[tuple[type[FashionError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
)
# Client side: a status code back to the typed error a caller can catch.
_CODE_ERRORS: dict[grpc.StatusCode, type[FashionError]] = {code: cls for cls, code in _TYPED_CODES}
_CODE_ERRORS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable

INTERNAL_MESSAGE = "internal error while handling {method}; the server log has the details"


def status_for(exc: BaseException, method: str = "the request") -> tuple[grpc.StatusCode, str]:
    """The status code and caller-facing message for an exception raised by a servicer."""
    if isinstance(exc, FashionError):
        for cls, code in _TYPED_CODES:
            if isinstance(exc, cls):
                return code, _message(exc)
        return grpc.StatusCode.FAILED_PRECONDITION, _message(exc)
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        # A downstream call failed: pass its status on (UNKNOWN would only hide it).
        code = exc.code()
        if code in (None, grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
            code = grpc.StatusCode.INTERNAL
        return code, exc.details() or code.name
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, _message(exc)
    if isinstance(exc, sa_exc.OperationalError) or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        # The database went away or restarted (pooled connections are not pinged before use): the pool drops
        # the dead connection, so a retry gets a fresh one.
        return grpc.StatusCode.UNAVAILABLE, "the database is unreachable or just restarted; expected it back, retry"
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE.format(method=method)


def error_from_rpc(err: grpc.RpcError) -> FashionError:
    """The typed error for a failed call (client side), so callers handle one family of exceptions."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = err.details() if isinstance(err, grpc.Call) else str(err)
    cls = _CODE_ERRORS.get(code)
    if cls is None:
        return FashionError(f"{code.name}: {details}")
    return cls(details)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _abort(exc: Exception, context: grpc.ServicerContext, method: str) -> None:
    if context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # the servicer already chose a status (context.abort): keep it
    code, message = status_for(exc, method)
    if code is grpc.StatusCode.INTERNAL and not isinstance(exc, grpc.RpcError):
        log.error("unhandled exception in %s", method, exc_info=exc, extra={"grpc_method": method})
    elif code is grpc.StatusCode.FAILED_PRECONDITION:
        log.warning("%s failed: %s", method, message, extra={"grpc_method": method})
    context.abort(code, message)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions escaping a servicer to status codes (see ``status_for``)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        service, name = split_method(handler_call_details.method)
        method = f"{service}/{name}"

        def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            if streaming:

                def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    try:
                        yield from behavior(request, context)
                    except Exception as exc:
                        _abort(exc, context, method)

                return guarded_stream

            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behavior(request, context)
                except Exception as exc:
                    _abort(exc, context, method)

            return guarded

        return wrap_handler(continuation(handler_call_details), wrap)
