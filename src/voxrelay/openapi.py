"""What ``/openapi.json`` says about the HTTP routes, kept true to what they answer:
the bearer scheme every route but the operational ones needs, the one error shape of
API.md §2, and a pointer to the transports OpenAPI cannot describe.

Routes declare their statuses with :func:`errors`; :func:`describe` installs the few
document-wide parts. Nothing here takes part in answering a request."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.security import APIKeyQuery, HTTPBearer
from pydantic import BaseModel

DESCRIPTION = """\
Every route but `/healthz`, `/readyz`, `/metrics` and `/openapi.json` takes a device \
(or service) token as `Authorization: Bearer <token>`; `GET /realtime/stream` also \
takes it as `?access_token=`. Every 4xx/5xx answers JSON `{"error": {"code", "message"}}`.

Two more transports reach the same conversations and cannot be described here: \
the OpenAI-Realtime-compatible WebSocket at `/v1/realtime`, and Socket.IO at \
`/socket.io/` (namespace `/realtime`). See `docs/clients.md` in the source tree \
(sections "Flutter: Socket.IO" and "Any OpenAI SDK: /v1/realtime") for both, and \
for the SSE + upload flow these routes serve."""

TAGS = [
    {"name": "sessions", "description": "Start, steer and end a live voice session."},
    {
        "name": "streaming",
        "description": "The session's events as Server-Sent Events and its audio as uploads,"
        " for clients without WebSockets (docs/clients.md, 'watchOS and plain HTTP').",
    },
    {"name": "conversations", "description": "Stored conversations and their messages."},
    {"name": "usage", "description": "What a user used: tokens, audio, time, cost."},
    {"name": "operations", "description": "Liveness, readiness and Prometheus metrics."},
]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer (API.md §2)."""

    error: ErrorDetail


class NotReady(ErrorBody):
    """``/readyz`` when a dependency does not answer: which one, as ``checks``."""

    checks: dict[str, str]


# Schemes only: they read the credentials to name them in the document and never
# refuse a request (auto_error=False); voxrelay.auth decides who may ask.
BEARER = HTTPBearer(
    auto_error=False, description="A device or service token (`voxrelay token create`)."
)
ACCESS_TOKEN = APIKeyQuery(
    name="access_token",
    auto_error=False,
    description="The same token, for EventSource clients that cannot set headers.",
)

_WHY = {
    400: "The request is malformed: a missing or invalid field, or a `userId` a service"
    " token must name.",
    401: "The token is missing, unknown or revoked.",
    403: "The token may not ask this: a device token naming another user.",
    404: "No such conversation or session for this user (another user's looks the same).",
    408: "The client stopped sending the body.",
    409: "The conversation already has an active session, or has none to take this.",
    413: "The body is larger than the server takes.",
    415: "The body's content type is not one this route takes.",
    422: "A field has the wrong type or is out of range.",
    429: "Too many live sessions for this device, or audio faster than it can be spoken.",
    502: "The upstream voice model could not be reached or refused the session.",
    503: "The server is shutting down, or the process that holds the session does not answer.",
}

# What any route that reads a token and an optional userId may answer.
AUTHENTICATED = (400, 401, 403)
# What a route reading a JSON or audio body may answer besides.
BODY = (408, 413, 415, 422)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that answers these error statuses."""
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in statuses}


def describe(app: FastAPI) -> None:
    """Build the document once, with its description, tags and every error answer
    shown as the JSON it really is."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
                tags=TAGS,
            )
            _errors_as_json(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors_as_json(document: dict[str, Any]) -> None:
    # FastAPI adds a 422 of its own shape to every route with parameters, and files a
    # route's error models under its success media type (text/event-stream for the
    # stream); errors.py answers every one as JSON in the error shape.
    error_body = {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, answer in operation.get("responses", {}).items():
                if status == "422" and "HTTPValidationError" in str(answer):
                    answer.update(description=_WHY[422], content={"application/json": error_body})
                elif status.isdigit() and int(status) >= 400:
                    schema = next(iter(answer.get("content", {}).values()), error_body)
                    answer["content"] = {"application/json": schema}
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
