"""What the HTTP routes share: who is asking, reading a JSON body, and the JSON
shapes of sessions and messages."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from voxrelay import logs
from voxrelay.auth import Device, authenticate, bearer_token
from voxrelay.config import SAMPLE_RATES
from voxrelay.errors import ApiError, describe_validation, invalid
from voxrelay.exceptions import Unauthorized
from voxrelay.openapi import ACCESS_TOKEN, BEARER
from voxrelay.sessions import Directory, LiveSession
from voxrelay.store import SessionRecord, Store
from voxrelay.tools import client_tools

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)


def _check_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        raise ValueError(f"sample rate must be one of {', '.join(map(str, SAMPLE_RATES))}")
    return rate


SampleRate = Annotated[
    int, AfterValidator(_check_rate), Field(json_schema_extra={"enum": list(SAMPLE_RATES)})
]
TurnDetectionName = Literal["server_vad", "manual"]


# -- dependencies ------------------------------------------------------------------------


# Coroutines, not plain functions: FastAPI runs a plain dependency in its thread pool,
# a thread hop per request for a lookup.
async def _store(request: Request) -> Store:
    return _app_store(request)


def _app_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _directory(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


# Named for the document only (they never refuse a request): voxrelay.auth reads the token.
_Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
_AccessToken = Annotated[str | None, Security(ACCESS_TOKEN)]


async def _device(request: Request, _bearer: _Bearer) -> Device:
    transport = "upload" if request.scope["path"] == "/realtime/upload" else "http"
    return await _authenticated(request, bearer_token(request), transport)


async def _stream_device(request: Request, _bearer: _Bearer, _query: _AccessToken) -> Device:
    # Browsers' EventSource cannot set headers: the stream alone takes ?access_token=.
    return await _authenticated(request, bearer_token(request, allow_query=True), "sse")


async def _authenticated(request: Request, token: str | None, transport: str) -> Device:
    try:
        device = await authenticate(_app_store(request), token, request.app.state.revocations.known)
    except Unauthorized as error:
        client = request.client.host if request.client else None
        log.warning(
            "authentication refused: %s",
            error.message,
            extra={"transport": transport, "client": client},
        )
        raise
    logs.bind(transport=transport, device=device.name)
    return device


DeviceDep = Annotated[Device, Depends(_device)]
StreamDeviceDep = Annotated[Device, Depends(_stream_device)]
StoreDep = Annotated[Store, Depends(_store)]
DirectoryDep = Annotated[Directory, Depends(_directory)]


# -- request bodies ----------------------------------------------------------------------


def body_schema(model: type[BaseModel], *, required: bool = False) -> dict[str, Any]:
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"content": schema, "required": required}}


async def read_json(request: Request, model: type[_M]) -> _M:
    """Parse a JSON body with clear errors for each way it can be wrong."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    if not body.strip():
        data: Any = {}
    else:
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type.split(";")[0]:
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        try:
            # orjson refuses lone surrogates and bounds the nesting it parses.
            data = orjson.loads(body)
        except ValueError as error:
            raise invalid(f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    depth_limit: int = request.app.state.settings.max_json_depth
    if _depth(data, depth_limit) > depth_limit:
        raise invalid(f"the body is nested deeper than {depth_limit} levels")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, "invalid_request", describe_validation(error.errors())) from None


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (stops counting past ``limit``)."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return depth


def declared_tools(raw: Any) -> tuple[dict[str, Any], ...]:
    """The function tools a client declares (``tools``), as the upstream is told them;
    ``InvalidTool`` (422 ``invalid_tool``) says what is wrong with them."""
    return tuple(tool.upstream() for tool in client_tools(raw))


# -- projections -------------------------------------------------------------------------


def time_json(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def session_json(session: LiveSession | SessionRecord) -> dict[str, Any]:
    if isinstance(session, SessionRecord):
        rates = (session.input_sample_rate, session.output_sample_rate)
    else:
        rates = (session.input_rate, session.output_rate)
    return {
        "id": session.id,
        "conversationId": session.conversation_id,
        "status": session.status,
        "createdAt": time_json(session.created_at),
        "inputSampleRate": rates[0],
        "outputSampleRate": rates[1],
        "turnDetection": session.turn_detection,
    }
