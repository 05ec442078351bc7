"""REST routes and HTTP streaming (SSE out, chunked upload in) for clients
without WebSockets, such as watchOS. The routes translate; the session decides."""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from voxrelay import logs, metrics
from voxrelay.auth import Device, authenticate, bearer_token
from voxrelay.config import SAMPLE_RATES
from voxrelay.errors import ApiError, describe_validation, invalid, not_found
from voxrelay.eventlog import ReplayGap, sse_frame
from voxrelay.hub import SessionHub
from voxrelay.providers.base import SessionOptions
from voxrelay.session import LiveSession, SessionEnded
from voxrelay.store import ConversationSummary, Message, SessionRecord, Store
from voxrelay.transports._sse import EventStreamResponse, Write

log = logging.getLogger(__name__)
router = APIRouter()

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


def _check_rate(rate: int) -> int:
    if rate not in SAMPLE_RATES:
        raise ValueError(f"sample rate must be one of {', '.join(map(str, SAMPLE_RATES))}")
    return rate


SampleRate = Annotated[int, AfterValidator(_check_rate)]
TurnDetectionName = Literal["server_vad", "manual"]
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_AUDIO_TYPES = ("application/octet-stream", "audio/pcm", "audio/l16", "audio/x-pcm")


# -- dependencies ------------------------------------------------------------------------


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _hub(request: Request) -> SessionHub:
    hub: SessionHub = request.app.state.hub
    return hub


async def _device(request: Request) -> Device:
    transport = "upload" if request.scope["path"] == "/realtime/upload" else "http"
    return await _authenticated(request, bearer_token(request), transport)


async def _stream_device(request: Request) -> Device:
    # Browsers' EventSource cannot set headers: the stream alone takes ?access_token=.
    return await _authenticated(request, bearer_token(request, allow_query=True), "sse")


async def _authenticated(request: Request, token: str | None, transport: str) -> Device:
    try:
        device = await authenticate(_store(request), token)
    except ApiError as error:
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
StoreDep = Annotated[Store, Depends(_store)]
HubDep = Annotated[SessionHub, Depends(_hub)]


# -- request bodies ----------------------------------------------------------------------


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


class TextRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversationId: str
    text: str
    userId: str | None = None


class EndRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversationId: str | None = None
    userId: str | None = None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"content": schema, "required": False}}


async def _read_json(request: Request, model: type[_M]) -> _M:
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
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as error:
            raise invalid(f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, "invalid_request", describe_validation(error.errors())) from None


# -- projections -------------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _session_json(session: LiveSession | SessionRecord) -> dict[str, Any]:
    if isinstance(session, SessionRecord):
        rates = (session.input_sample_rate, session.output_sample_rate)
    else:
        rates = (session.input_rate, session.output_rate)
    return {
        "id": session.id,
        "conversationId": session.conversation_id,
        "status": session.status,
        "createdAt": _time(session.created_at),
        "inputSampleRate": rates[0],
        "outputSampleRate": rates[1],
        "turnDetection": session.turn_detection,
    }


def _message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "createdAt": _time(message.created_at),
        **({"latency": message.meta} if message.meta else {}),
    }


def _latency_json(messages: list[Message]) -> dict[str, Any]:
    """The conversation's answers' ``firstAudioMs``: how many, median (nearest rank) and max."""
    values = [
        float(m.meta["firstAudioMs"])
        for m in messages
        if m.meta and isinstance(m.meta.get("firstAudioMs"), int | float)
    ]
    return {
        "turns": len(values),
        "firstAudioMsP50": statistics.median_low(values) if values else None,
        "firstAudioMsMax": max(values) if values else None,
    }


def _summary_json(summary: ConversationSummary) -> dict[str, Any]:
    last = summary.last_message
    return {
        "id": summary.id,
        "createdAt": _time(summary.created_at),
        "updatedAt": _time(summary.updated_at),
        "messageCount": summary.message_count,
        "lastMessage": _message_json(last) if last is not None else None,
    }


# -- shared steps ------------------------------------------------------------------------


def _check_id(value: str, name: str) -> str:
    if not _ID.match(value):
        raise invalid(f"{name} must be 1-64 letters, digits or _.:-")
    return value


async def _owned_conversation(store: Store, conversation_id: str, user_id: str) -> None:
    conversation = await store.get_conversation(conversation_id)
    # Another user's conversation looks exactly like one that does not exist.
    if conversation is None or conversation.user_id != user_id:
        raise not_found("conversation")


async def _live_session(
    store: Store, hub: SessionHub, conversation_id: str | None, user_id: str
) -> LiveSession:
    if not conversation_id:
        raise invalid("conversationId is required")
    session = await hub.find_for_conversation(conversation_id)
    if session is not None and session.user_id == user_id and session.active:
        logs.bind(conversation_id=session.conversation_id, session_id=session.id)
        return session
    await _owned_conversation(store, conversation_id, user_id)
    raise ApiError(409, "no_active_session", "the conversation has no active session; start one")


async def start_session(
    store: Store,
    hub: SessionHub,
    user_id: str,
    conversation_id: str | None,
    input_rate: int,
    output_rate: int,
    options: SessionOptions,
    *,
    join_active: bool,
) -> tuple[LiveSession, bool]:
    """Start (or with ``join_active`` join) the session of a conversation,
    creating the conversation when it does not exist yet. Returns whether the
    session is new."""
    if conversation_id is None:
        conversation_id = (await store.create_conversation(user_id, hub.new_conversation_id())).id
    else:
        existing = await store.get_conversation(_check_id(conversation_id, "conversationId"))
        if existing is None:
            from voxrelay.store import ConversationExists

            try:
                await store.create_conversation(user_id, conversation_id)
            except ConversationExists:
                await _owned_conversation(store, conversation_id, user_id)
        elif existing.user_id != user_id:
            raise not_found("conversation")
    session, is_new = await hub.start_anywhere(
        user_id=user_id,
        conversation_id=conversation_id,
        input_rate=input_rate,
        output_rate=output_rate,
        options=options,
        join_active=join_active,
    )
    logs.bind(conversation_id=session.conversation_id, session_id=session.id)
    return session, is_new


# -- REST --------------------------------------------------------------------------------


@router.post("/realtime/session", status_code=201, openapi_extra=_body_schema(SessionRequest))
async def create_session(
    request: Request, device: DeviceDep, store: StoreDep, hub: HubDep
) -> JSONResponse:
    body = await _read_json(request, SessionRequest)
    user_id = device.acting_user(body.userId)
    options = SessionOptions(
        instructions=body.instructions,
        voice=body.voice,
        language=body.language,
        turn_detection=body.turnDetection,
    )
    session, _ = await start_session(
        store,
        hub,
        user_id,
        body.conversationId,
        body.inputSampleRate,
        body.outputSampleRate,
        options,
        join_active=False,
    )
    return JSONResponse({"session": _session_json(session)}, status_code=201)


@router.get("/realtime/session/{session_id}")
async def get_session(
    session_id: str, device: DeviceDep, store: StoreDep, hub: HubDep
) -> dict[str, Any]:
    user_id = device.acting_user()
    live = await hub.find(session_id)
    if live is not None and live.user_id == user_id:
        return {"session": _session_json(live)}
    record = await store.get_session(session_id)
    if record is None or record.user_id != user_id:
        raise not_found("session")
    return {"session": _session_json(record)}


@router.get("/conversations")
async def list_conversations(
    device: DeviceDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: str | None = None,
    userId: str | None = None,
) -> dict[str, Any]:
    from voxrelay.store import InvalidCursor

    try:
        summaries = await store.list_conversations(
            device.acting_user(userId), limit=limit, before=before
        )
    except InvalidCursor:
        raise invalid(
            "before must be a conversation id from this list or an ISO-8601 time"
        ) from None
    return {"conversations": [_summary_json(s) for s in summaries]}


@router.get("/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str, device: DeviceDep, store: StoreDep, userId: str | None = None
) -> dict[str, Any]:
    user_id = device.acting_user(userId)
    conversation = await store.get_conversation(conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise not_found("conversation")
    messages = await store.list_messages(conversation_id)
    return {
        "conversation": {
            "id": conversation.id,
            "createdAt": _time(conversation.created_at),
            "updatedAt": _time(conversation.updated_at),
            "messages": [_message_json(m) for m in messages],
            "latency": _latency_json(messages),
        }
    }


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, device: DeviceDep, store: StoreDep, hub: HubDep, userId: str | None = None
) -> Response:
    await _owned_conversation(store, conversation_id, device.acting_user(userId))
    live = await hub.find_for_conversation(conversation_id)
    if live is not None:
        await live.end("client_end")
    await store.delete_conversation(conversation_id)
    return Response(status_code=204)


# -- HTTP streaming --------------------------------------------------------------------------


@router.get("/realtime/stream", response_class=EventStreamResponse)
async def stream(
    request: Request,
    store: StoreDep,
    hub: HubDep,
    device: Annotated[Device, Depends(_stream_device)],
    conversationId: str | None = None,
    sessionId: str | None = None,
    inputSampleRate: SampleRate = 24000,
    outputSampleRate: SampleRate = 24000,
    language: str | None = None,
    voice: str | None = None,
    instructions: str | None = None,
    turnDetection: TurnDetectionName = "server_vad",
    lastEventId: int | None = None,
    userId: str | None = None,
) -> EventStreamResponse:
    user_id = device.acting_user(userId)
    header = request.headers.get("last-event-id")
    if header is not None:
        if not header.strip().isdigit():
            raise invalid("Last-Event-ID must be an event id (an integer)")
        lastEventId = int(header)
    if sessionId is not None:
        found = await hub.find(sessionId)
        if found is None or found.user_id != user_id or not found.active:
            raise not_found("active session")
        if conversationId is not None and conversationId != found.conversation_id:
            raise not_found("active session")
        session, is_new = found, False
    else:
        options = SessionOptions(
            instructions=instructions, voice=voice, language=language, turn_detection=turnDetection
        )
        session, is_new = await start_session(
            store,
            hub,
            user_id,
            conversationId,
            inputSampleRate,
            outputSampleRate,
            options,
            join_active=True,
        )
    settings = request.app.state.settings
    last_event_id = None if is_new else lastEventId

    async def produce(write: Write) -> None:
        await _write_events(session, last_event_id, write, fresh=is_new)

    return EventStreamResponse(
        produce,
        keepalive=settings.keepalive_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _write_events(
    session: LiveSession, last_event_id: int | None, write: Write, *, fresh: bool
) -> None:
    """Project the session's log onto an SSE stream, from the right place."""
    log = session.log
    latency = metrics.DOWNSTREAM_LATENCY["sse"]
    streams = metrics.ACTIVE_STREAMS.labels(transport="sse")
    with session.attached(reads="replays"), streams.track_inprogress():
        if last_event_id is not None:
            after = min(last_event_id, log.last_id)
        elif fresh:
            after = 0
        else:
            # A listener joining a live session starts now, not with old audio:
            # it gets the opening event, numbered as the latest one it has seen.
            after = log.last_id
            first = log.get(1)
            if first is not None:
                await write(sse_frame(after, first.type, first.json))
        head = log.last_id
        cursor = log.cursor(after)
        audio_times: list[float] = []
        while await cursor.wait():
            # Whatever is pending goes out in one write: a listener that fell
            # behind catches up with one send instead of one per event.
            frames: list[bytes] = []
            for item in cursor.take():
                if isinstance(item, ReplayGap):
                    message = (
                        f"events {item.requested_after + 1}..{item.resumed_at - 1} are no"
                        f" longer held; resuming at {item.resumed_at}"
                    )
                    data = json.dumps({"code": "replay_gap", "message": message}).encode()
                    frames.append(sse_frame(item.resumed_at - 1, "error", data))
                    continue
                if item.id <= head:
                    metrics.REPLAYED_EVENTS.inc()
                elif item.type == "audio":
                    audio_times.append(item.at)
                frames.append(item.sse)
            await write(frames[0] if len(frames) == 1 else b"".join(frames))
            # The frames are written (handed to the server's transport).
            if audio_times:
                now = time.monotonic()
                for at in audio_times:
                    latency.observe(now - at)
                audio_times.clear()


@router.post("/realtime/upload")
async def upload(
    request: Request,
    device: DeviceDep,
    store: StoreDep,
    hub: HubDep,
    conversationId: str | None = None,
    sampleRate: SampleRate | None = None,
    seq: Annotated[int | None, Query(ge=0)] = None,
    userId: str | None = None,
) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _AUDIO_TYPES:
        raise ApiError(
            415, "unsupported_media_type", "send raw PCM16 as application/octet-stream or audio/pcm"
        )
    session = await _live_session(store, hub, conversationId, device.acting_user(userId))
    limit: int = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"one upload may carry at most {limit} bytes")
    answer: dict[str, Any] = {"conversationId": session.conversation_id}
    if seq is not None:
        answer["seq"] = seq
        taken = session.seqs_taken.get(seq)
        if taken is not None:
            # A retry of a chunk already forwarded: same answer, nothing sent twice.
            return {**answer, "bytesReceived": taken}
        session.seqs_taken[seq] = 0
    received = 0
    rate = sampleRate or session.input_rate
    audio_in = metrics.AUDIO_IN["upload"]
    try:
        with (
            session.attached(reads="no_audio"),
            metrics.ACTIVE_STREAMS.labels(transport="upload").track_inprogress(),
        ):
            async for chunk in request.stream():
                if not chunk:
                    continue
                received_at = time.monotonic()
                received += len(chunk)
                if received > limit:
                    raise ApiError(
                        413, "payload_too_large", f"one upload may carry at most {limit} bytes"
                    )
                audio_in.inc(len(chunk))
                await session.send_audio(chunk, rate, transport="upload", received_at=received_at)
    except SessionEnded:
        raise ApiError(409, "no_active_session", "the session ended during the upload") from None
    except BaseException:
        if seq is not None and received == 0:
            session.seqs_taken.pop(seq, None)
        raise
    if seq is not None:
        session.seqs_taken[seq] = received
    return {**answer, "bytesReceived": received}


@router.post("/realtime/commit")
async def commit(
    device: DeviceDep,
    store: StoreDep,
    hub: HubDep,
    conversationId: str | None = None,
    userId: str | None = None,
) -> dict[str, Any]:
    session = await _live_session(store, hub, conversationId, device.acting_user(userId))
    await _ask(session.commit())
    return {"conversationId": session.conversation_id, "status": "committed"}


@router.post("/realtime/text", openapi_extra=_body_schema(TextRequest))
async def text(request: Request, device: DeviceDep, store: StoreDep, hub: HubDep) -> dict[str, Any]:
    body = await _read_json(request, TextRequest)
    if not body.text.strip():
        raise invalid("text must not be empty")
    session = await _live_session(store, hub, body.conversationId, device.acting_user(body.userId))
    item_id = await _ask(session.send_text(body.text))
    return {"conversationId": session.conversation_id, "itemId": item_id}


@router.post("/realtime/interrupt")
async def interrupt(
    device: DeviceDep,
    store: StoreDep,
    hub: HubDep,
    conversationId: str | None = None,
    playedMs: Annotated[int | None, Query(ge=0)] = None,
    userId: str | None = None,
) -> dict[str, Any]:
    session = await _live_session(store, hub, conversationId, device.acting_user(userId))
    await _ask(session.interrupt(playedMs))
    return {"conversationId": session.conversation_id, "status": "interrupted"}


@router.post("/realtime/end", openapi_extra=_body_schema(EndRequest))
async def end(
    request: Request,
    device: DeviceDep,
    store: StoreDep,
    hub: HubDep,
    conversationId: str | None = None,
) -> dict[str, Any]:
    body = await _read_json(request, EndRequest)
    conversation_id = body.conversationId or conversationId
    if not conversation_id:
        raise invalid("conversationId is required")
    user_id = device.acting_user(body.userId)
    live = await hub.find_for_conversation(conversation_id)
    if live is not None and live.user_id == user_id:
        await live.end("client_end")
    else:
        await _owned_conversation(store, conversation_id, user_id)
    messages = await store.list_messages(conversation_id)
    return {"conversationId": conversation_id, "status": "ended", "messageCount": len(messages)}


async def _ask(request: Awaitable[_T]) -> _T:
    try:
        result = await request
    except SessionEnded:
        raise ApiError(409, "no_active_session", "the session has ended") from None
    return result
