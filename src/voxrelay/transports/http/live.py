"""Live-session control over plain HTTP: start a session, read its state, and send
it a commit, a typed message, an interrupt or its end."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from voxrelay.errors import invalid, not_found
from voxrelay.openapi import AUTHENTICATED, BODY, errors
from voxrelay.providers.base import SessionOptions
from voxrelay.transports.http._common import (
    DeviceDep,
    DirectoryDep,
    SampleRate,
    StoreDep,
    TurnDetectionName,
    body_schema,
    declared_tools,
    read_json,
    session_json,
)

router = APIRouter(tags=["sessions"])


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    userId: str | None = None
    conversationId: str | None = None
    instructions: str | None = None
    voice: str | None = None
    language: str | None = None
    inputSampleRate: SampleRate = 16000
    outputSampleRate: SampleRate = 24000
    turnDetection: TurnDetectionName = "server_vad"
    # Function tools as the Realtime API declares them: the client runs their calls.
    tools: Any = Field(
        default=None,
        json_schema_extra={
            "type": "array",
            "items": {"type": "object"},
            "description": 'Function tools ({"type": "function", "name", "description",'
            ' "parameters"}) whose calls this client runs: `tool_call` events, answered'
            " with `POST /realtime/tool-result`.",
        },
    )


class ToolResultRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversationId: str
    callId: str
    # Any JSON value: what the model is given as the call's result.
    output: Any = Field(json_schema_extra={"description": "any JSON value"})
    userId: str | None = None


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversationId: str
    text: str
    userId: str | None = None


class EndRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversationId: str | None = None
    userId: str | None = None


@router.post(
    "/realtime/session",
    status_code=201,
    openapi_extra=body_schema(SessionRequest),
    responses=errors(*AUTHENTICATED, 404, *BODY, 409, 429, 502, 503),
)
async def create_session(
    request: Request, device: DeviceDep, directory: DirectoryDep
) -> JSONResponse:
    """Start a live session, in a new conversation or (with `conversationId`) an
    existing one; then send it audio over Socket.IO, `/v1/realtime` or uploads."""
    body = await read_json(request, SessionRequest)
    options = SessionOptions(
        instructions=body.instructions,
        voice=body.voice,
        language=body.language,
        turn_detection=body.turnDetection,
        tools=declared_tools(body.tools),
    )
    session, _ = await directory.start(
        device.acting_user(body.userId),
        body.conversationId,
        input_rate=body.inputSampleRate,
        output_rate=body.outputSampleRate,
        options=options,
        device=device.token_id,
    )
    return JSONResponse({"session": session_json(session)}, status_code=201)


@router.get("/realtime/session/{session_id}", responses=errors(*AUTHENTICATED, 404, 503))
async def get_session(
    session_id: str,
    device: DeviceDep,
    store: StoreDep,
    directory: DirectoryDep,
    userId: str | None = None,
) -> dict[str, Any]:
    """A session by id, live (`active`) or from the store (`ended`)."""
    user_id = device.acting_user(userId)
    live = await directory.session(session_id, user_id)
    if live is not None:
        return {"session": session_json(live)}
    record = await store.get_session(session_id)
    if record is None or record.user_id != user_id:
        raise not_found("session")
    return {"session": session_json(record)}


@router.post("/realtime/commit", responses=errors(*AUTHENTICATED, 404, 409, 503))
async def commit(
    device: DeviceDep,
    directory: DirectoryDep,
    conversationId: str | None = None,
    userId: str | None = None,
) -> dict[str, Any]:
    """End the user's turn in a `manual` session: the audio sent so far is answered.
    409 when the conversation has no active session."""
    session = await directory.live(conversationId, device.acting_user(userId))
    await session.commit()
    return {"conversationId": session.conversation_id, "status": "committed"}


@router.post(
    "/realtime/text",
    openapi_extra=body_schema(TextRequest, required=True),
    responses=errors(*AUTHENTICATED, 404, *BODY, 409, 503),
)
async def text(request: Request, device: DeviceDep, directory: DirectoryDep) -> dict[str, Any]:
    """Send a typed user message to the conversation's active session, which answers
    it as it would speech."""
    body = await read_json(request, TextRequest)
    if not body.text.strip():
        raise invalid("text must not be empty")
    session = await directory.live(body.conversationId, device.acting_user(body.userId))
    item_id = await session.send_text(body.text)
    return {"conversationId": session.conversation_id, "itemId": item_id}


@router.post(
    "/realtime/tool-result",
    openapi_extra=body_schema(ToolResultRequest, required=True),
    responses=errors(*AUTHENTICATED, 404, *BODY, 409, 503),
)
async def tool_result(
    request: Request, device: DeviceDep, directory: DirectoryDep
) -> dict[str, Any]:
    """The result of a call of one of the client's own tools (its `tool_call` event):
    404 for a call the session does not have, 409 for one that has its result already."""
    body = await read_json(request, ToolResultRequest)
    session = await directory.live(body.conversationId, device.acting_user(body.userId))
    await session.tool_result(body.callId, body.output)
    return {"ok": True}


@router.post("/realtime/interrupt", responses=errors(*AUTHENTICATED, 404, 409, 422, 503))
async def interrupt(
    device: DeviceDep,
    directory: DirectoryDep,
    conversationId: str | None = None,
    playedMs: Annotated[int | None, Query(ge=0)] = None,
    userId: str | None = None,
) -> dict[str, Any]:
    """Stop the answer being spoken; `playedMs` says how much of it the listener
    heard, so the stored text is cut there."""
    session = await directory.live(conversationId, device.acting_user(userId))
    await session.interrupt(playedMs)
    return {"conversationId": session.conversation_id, "status": "interrupted"}


@router.post(
    "/realtime/end",
    openapi_extra=body_schema(EndRequest),
    responses=errors(*AUTHENTICATED, 404, *BODY, 503),
)
async def end(
    request: Request,
    device: DeviceDep,
    store: StoreDep,
    directory: DirectoryDep,
    conversationId: str | None = None,
) -> dict[str, Any]:
    """End the conversation's active session (if any); its messages stay stored.
    `conversationId` may come in the body or the query."""
    body = await read_json(request, EndRequest)
    conversation_id = body.conversationId or conversationId
    if not conversation_id:
        raise invalid("conversationId is required")
    await directory.end(conversation_id, device.acting_user(body.userId), "client_end")
    messages = await store.list_messages(conversation_id)
    return {"conversationId": conversation_id, "status": "ended", "messageCount": len(messages)}
