"""The two server interceptors: authentication with the role matrix, and error mapping.

Both wrap the method handler of every ``holo.v1`` call, so a servicer never checks a token
or catches an exception itself: it reads the caller from :func:`current_claims` and raises
:class:`~holo.errors.HoloError` subclasses, which :class:`ErrorInterceptor` turns into status
codes with the error's one-line message. Anything else is logged with a reference and
returned as INTERNAL without internals. The standard health and reflection services stay
open (load balancers and grpcurl call them without tokens).

Requests of every service are parsed only after the token is checked
(:func:`holo.server.decoding.decode_late`, applied by :class:`AuthInterceptor`): a caller
without a valid token cannot make the server parse anything. What a caller can make the
server log is rate-limited (:class:`holo.server.ratelog.RateLimitedLog`).
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from typing import Any

import grpc
from grpc import aio

from holo.auth import MAX_TOKEN_TTL_S, ROLES, Claims, verify_token
from holo.errors import (
    AuthError,
    ChecksumError,
    DiskFullError,
    HoloError,
    InvalidRequestError,
    LimitError,
    NotFoundError,
    OffsetError,
    PermissionDeniedError,
    PipelineError,
    PreconditionError,
    RangeError,
    RateLimitError,
    RecordingError,
    SessionError,
    StudyError,
    UnavailableError,
    VideoError,
    disk_full,
)
from holo.server.decoding import Behavior, decode_late, wrap_handler
from holo.server.logs import bind_request, request_id
from holo.server.ratelog import RateLimitedLog

__all__ = ["METHOD_ROLES", "AuthInterceptor", "ErrorInterceptor", "current_claims", "status_of"]

logger = logging.getLogger(__name__)
#: A caller can fail calls at will (~1,800 a second): their log lines are rate-limited.
_log = RateLimitedLog(logger)

_ALL = frozenset(ROLES)
_RADIOLOGIST = frozenset({"radiologist"})
#: Who guides in a session: loads, moves, points and annotates (the session's own rules
#: then decide, e.g. only the participant in control moves a hologram).
_GUIDES = frozenset({"presenter", "expert"})
_PRESENTER = frozenset({"presenter"})

#: Which roles may call each holo.v1 method. A method missing here is refused for everyone,
#: so a new RPC cannot be left open by accident.
METHOD_ROLES: dict[str, frozenset[str]] = {
    "/holo.v1.UploadService/StartUpload": _RADIOLOGIST,
    "/holo.v1.UploadService/UploadChunk": _RADIOLOGIST,
    "/holo.v1.UploadService/GetUpload": _RADIOLOGIST,
    "/holo.v1.UploadService/CreateStudy": _RADIOLOGIST,
    "/holo.v1.UploadService/ListStudies": _ALL,
    "/holo.v1.ConversionService/StartConversion": _RADIOLOGIST,
    "/holo.v1.ConversionService/WatchJob": _RADIOLOGIST,
    "/holo.v1.ConversionService/CancelJob": _RADIOLOGIST,
    "/holo.v1.ConversionService/ListJobs": _RADIOLOGIST,
    "/holo.v1.AssetService/ListModels": _ALL,
    "/holo.v1.AssetService/GetModel": _ALL,
    "/holo.v1.SessionService/CreateSession": frozenset({"presenter", "radiologist"}),
    "/holo.v1.SessionService/FindSession": _ALL,
    "/holo.v1.SessionService/Join": _ALL,
    "/holo.v1.SessionService/LoadModel": _GUIDES,
    "/holo.v1.SessionService/CommitAnchor": _GUIDES,
    "/holo.v1.SessionService/Register": _GUIDES,
    "/holo.v1.SessionService/Drag": _GUIDES,
    "/holo.v1.SessionService/UpdateHeadPose": _GUIDES,
    "/holo.v1.SessionService/UpdatePointer": _GUIDES,
    "/holo.v1.SessionService/AddAnnotation": _GUIDES,
    "/holo.v1.SessionService/RemoveAnnotation": _GUIDES,
    "/holo.v1.SessionService/Telestrate": _GUIDES,
    "/holo.v1.SessionService/RequestControl": frozenset({"expert"}),
    "/holo.v1.SessionService/GrantControl": frozenset({"presenter"}),
    "/holo.v1.SessionService/RevokeControl": frozenset({"presenter"}),
    "/holo.v1.SessionService/Heartbeat": _ALL,
    "/holo.v1.SessionService/Leave": _ALL,
    "/holo.v1.ClockService/Sync": _ALL,
    "/holo.v1.VideoService/OpenTrack": _PRESENTER,
    "/holo.v1.VideoService/PushFrames": _GUIDES,
    "/holo.v1.VideoService/CloseTrack": _PRESENTER,
    "/holo.v1.VideoService/ListTracks": _ALL,
    "/holo.v1.VideoService/WatchVideo": _ALL,
    "/holo.v1.VideoService/StartRecording": _PRESENTER,
    "/holo.v1.VideoService/StopRecording": _PRESENTER,
    "/holo.v1.VideoService/ListRecordings": _ALL,
    "/holo.v1.VideoService/OpenReplay": _ALL,
    "/holo.v1.VideoService/ControlReplay": _ALL,
    # PACS: patient identity in every answer, and a push writes to the patient's record.
    "/holo.v1.PacsService/ListPacsNodes": _RADIOLOGIST,
    "/holo.v1.PacsService/FindPacsStudies": _RADIOLOGIST,
    "/holo.v1.PacsService/StartPull": _RADIOLOGIST,
    "/holo.v1.PacsService/WatchPull": _RADIOLOGIST,
    "/holo.v1.PacsService/CancelPull": _RADIOLOGIST,
    "/holo.v1.PacsService/PushModel": _RADIOLOGIST,
}
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

#: How often a stream re-checks its token against the revocation list, in seconds: a
#: revoked token loses its open streams within a second of its next message, at the cost
#: of one stat() a second per stream.
_RECHECK_S = 1.0
_REVOKED_MESSAGE = "this token was revoked; ask for a new one (`holo token`)"

_claims: contextvars.ContextVar[Claims] = contextvars.ContextVar("holo_claims")

#: HoloError subclass -> status code; the first match in order wins (subclasses first).
_STATUS: list[tuple[type[HoloError], grpc.StatusCode]] = [
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (OffsetError, grpc.StatusCode.FAILED_PRECONDITION),
    (ChecksumError, grpc.StatusCode.DATA_LOSS),
    (LimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DiskFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (RangeError, grpc.StatusCode.OUT_OF_RANGE),
    (SessionError, grpc.StatusCode.NOT_FOUND),
    (StudyError, grpc.StatusCode.INVALID_ARGUMENT),
    (PipelineError, grpc.StatusCode.FAILED_PRECONDITION),
    (VideoError, grpc.StatusCode.FAILED_PRECONDITION),  # a source that cannot be used
    (RecordingError, grpc.StatusCode.DATA_LOSS),  # a recording damaged or cut short
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (HoloError, grpc.StatusCode.INVALID_ARGUMENT),
]


def current_claims() -> Claims:
    """The verified caller of the call being served (set by :class:`AuthInterceptor`)."""
    return _claims.get()


def status_of(error: HoloError) -> grpc.StatusCode:
    """The status code a HoloError maps to."""
    return next(code for kind, code in _STATUS if isinstance(error, kind))


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            # Undecodable bytes become U+FFFD, which verify_token refuses as non-ASCII.
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthInterceptor(aio.ServerInterceptor):
    """Verifies the ``authorization: Bearer <token>`` of every holo.v1 call and applies
    :data:`METHOD_ROLES`; the case check is the servicer's (it knows what a request is about)."""

    def __init__(
        self,
        secret: bytes,
        *,
        max_ttl_s: int = MAX_TOKEN_TTL_S,
        revoked: Container[str] = (),
    ) -> None:
        super().__init__()
        self._secret = secret
        self._max_ttl_s = max_ttl_s
        self._revoked = revoked  # a holo.auth.RevocationList: read again when it changes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # Parsed inside the behaviour, after the token is checked (holo.server.decoding).
        handler = decode_late(handler, method)
        if method.startswith(_OPEN_PREFIXES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        # Every line logged in the call carries its request id and, once the token is
        # checked, who called (holo.server.logs).
        request = request_id(handler_call_details.invocation_metadata)
        try:
            if token is None:
                raise AuthError(
                    "the call carries no token; pass one with --token or HOLO_TOKEN "
                    "(metadata `authorization: Bearer <token>`, minted by `holo token`)"
                )
            claims = verify_token(
                self._secret, token, max_ttl_s=self._max_ttl_s, revoked=self._revoked
            )
            roles = METHOD_ROLES.get(method, frozenset())
            if claims.role not in roles:
                raise PermissionDeniedError(
                    f"role {claims.role!r} may not call {method.rsplit('/', 1)[-1]}"
                    + (f"; it is for {', '.join(sorted(roles))}" if roles else "")
                )
        except HoloError as err:
            failure = err

            def refuse(behavior: Behavior, streaming: bool) -> Behavior:
                if streaming:

                    async def refuse_stream(message: Any, context: aio.ServicerContext) -> Any:
                        bind_request(request, "")
                        await context.abort(status_of(failure), failure.message)
                        yield  # pragma: no cover  (abort raises)

                    return refuse_stream

                async def refuse_unary(message: Any, context: aio.ServicerContext) -> Any:
                    bind_request(request, "")
                    await context.abort(status_of(failure), failure.message)

                return refuse_unary

            return wrap_handler(handler, refuse)

        def with_claims(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                async def stream(message: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                    _claims.set(claims)
                    bind_request(request, claims.subject)
                    replies = behavior(message, context)
                    checked = time.monotonic()
                    try:
                        async for item in replies:
                            yield item
                            # A Join stream lasts the whole procedure: a token revoked
                            # meanwhile ends it too (checked once a second, between items).
                            if time.monotonic() - checked >= _RECHECK_S:
                                checked = time.monotonic()
                                if claims.token_id in self._revoked:
                                    await context.abort(
                                        grpc.StatusCode.UNAUTHENTICATED, _REVOKED_MESSAGE
                                    )
                    finally:
                        if hasattr(replies, "aclose"):
                            await replies.aclose()  # the servicer's cleanup runs now

                return stream

            async def unary(message: Any, context: aio.ServicerContext) -> Any:
                _claims.set(claims)
                bind_request(request, claims.subject)
                return await behavior(message, context)

            return unary

        return wrap_handler(handler, with_claims)


class ErrorInterceptor(aio.ServerInterceptor):
    """Maps HoloError to status codes; logs anything else and returns a bare INTERNAL.

    A full disk met by code that did not say so (an OSError with ENOSPC, an SQLite
    SQLITE_FULL) is a :class:`~holo.errors.DiskFullError` naming ``data_folder``, not an
    internal error.
    """

    def __init__(self, data_folder: str | os.PathLike[str] = "") -> None:
        super().__init__()
        self._data_folder = data_folder

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith("/holo."):
            return handler

        async def fail(context: aio.ServicerContext, err: Exception) -> None:
            err = disk_full(err, self._data_folder) or err
            if isinstance(err, HoloError):
                if isinstance(err, OffsetError):
                    context.set_trailing_metadata((("holo-expected-offset", str(err.expected)),))
                elif isinstance(err, RateLimitError):  # holo.server.ratelimit: when to retry
                    retry_ms = str(max(1, math.ceil(err.retry_after_s * 1000)))
                    context.set_trailing_metadata((("holo-retry-after-ms", retry_ms),))
                code = status_of(err)
                _log.log(logging.INFO, (method, code), "%s: %s", method, err.message)
                await context.abort(code, err.message)
            ref = secrets.token_hex(4)
            _log.log(
                logging.ERROR,
                (method, "internal"),
                "%s failed (ref %s)",
                method,
                ref,
                exc_info=True,
            )
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error (ref {ref}); the server log has the details, please report it",
            )

        def guard(behavior: Behavior, streaming: bool) -> Behavior:
            if streaming:

                async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except aio.AbortError:
                        raise
                    except Exception as err:
                        await fail(context, err)

                return stream

            async def unary(request: Any, context: aio.ServicerContext) -> Any:
                try:
                    return await behavior(request, context)
                except aio.AbortError:
                    raise
                except Exception as err:
                    await fail(context, err)

            return unary

        return wrap_handler(handler, guard)
