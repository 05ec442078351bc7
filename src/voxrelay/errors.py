"""Every 4xx/5xx answers JSON: ``{"error": {"code", "message"}}``, never a trace.

The one place the core's errors (``exceptions``) become HTTP statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from voxrelay import exceptions

log = logging.getLogger(__name__)

_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    426: "upgrade_required",
    429: "too_many_requests",
    500: "internal_error",
    502: "upstream_unavailable",
    503: "upstream_unavailable",
}


class ApiError(Exception):
    """An HTTP answer a route chooses itself (a body too large, the wrong content type)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


_STATUS: dict[type[exceptions.VoxrelayError], int] = {
    exceptions.Unauthorized: 401,
    exceptions.Forbidden: 403,
    exceptions.InvalidRequest: 400,
    exceptions.InvalidTool: 422,
    exceptions.AlreadyAnswered: 409,
    exceptions.TooLarge: 413,
    exceptions.TooManySessions: 429,
    exceptions.QuotaExceeded: 429,
    exceptions.AudioTooFast: 429,
    exceptions.RequestTimeout: 408,
    exceptions.NotFound: 404,
    exceptions.ConversationBusy: 409,
    exceptions.NoActiveSession: 409,
    exceptions.ServerClosing: 503,
    exceptions.UpstreamUnavailable: 502,
    exceptions.OwnerUnavailable: 503,
}


def http_status(error: exceptions.VoxrelayError) -> int:
    for kind in type(error).__mro__:
        status = _STATUS.get(kind)
        if status is not None:
            return status
    return 500


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == 408:
        # The rest of the body may still come, any time: the connection is done.
        headers = {"Connection": "close"}
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def code_for(status: int) -> str:
    """The error code of an HTTP status that no more precise code names."""
    return _CODES.get(status, "error")


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message)

    async def core_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, exceptions.VoxrelayError)
        return error_response(http_status(exc), exc.code, exc.message)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = code_for(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        response = error_response(exc.status_code, code, message)
        # The exception's own headers belong to its answer (a 405's ``Allow``).
        response.headers.update(exc.headers or {})
        return response

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", describe_validation(exc.errors()))

    async def disconnected(request: Request, exc: Exception) -> JSONResponse:
        # The client went away mid-body: nobody reads this answer, and nothing failed.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client went away")

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed to answer this request")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(exceptions.VoxrelayError, core_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, unexpected)


def install_not_found(app: FastAPI) -> None:
    """A WebSocket upgrade to a path nothing serves answers 404 JSON, as an HTTP
    request there does (Starlette would refuse it with a bare 403)."""
    http_not_found = app.router.not_found

    async def not_found_anywhere(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await http_not_found(scope, receive, send)
            return
        response = error_response(404, "not_found", "nothing is served at this path")
        await WebSocket(scope, receive, send).send_denial_response(response)

    app.router.default = not_found_anywhere


def describe_validation(errors: object) -> str:
    parts = []
    for error in errors if isinstance(errors, list | tuple) else []:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"
