"""``GET /realtime/stream``: the session's event log as Server-Sent Events, for
clients without WebSockets; a reconnect with ``Last-Event-ID`` replays what it missed."""

from __future__ import annotations

import json
import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request

from voxrelay import metrics
from voxrelay.auth import Device
from voxrelay.errors import invalid, not_found
from voxrelay.eventlog import Cursor, ReplayGap, sse_frame
from voxrelay.exceptions import InvalidTool
from voxrelay.openapi import AUTHENTICATED, errors
from voxrelay.providers.base import SessionOptions
from voxrelay.revocation import Revocations
from voxrelay.sessions import LiveSession
from voxrelay.transports._sse import EventStreamResponse, Write
from voxrelay.transports.http._common import (
    DirectoryDep,
    SampleRate,
    StreamDeviceDep,
    TurnDetectionName,
    declared_tools,
)

router = APIRouter(tags=["streaming"])

_EVENTS = {
    "description": "The session's events, one SSE frame each (`id:`, `event:`, `data:` JSON),"
    " until the session ends.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.get(
    "/realtime/stream",
    response_class=EventStreamResponse,
    responses={200: _EVENTS, **errors(*AUTHENTICATED, 404, 409, 422, 429, 502, 503)},
)
async def stream(
    request: Request,
    directory: DirectoryDep,
    device: StreamDeviceDep,
    conversationId: str | None = None,
    sessionId: str | None = None,
    inputSampleRate: SampleRate = 24000,
    outputSampleRate: SampleRate = 24000,
    language: str | None = None,
    voice: str | None = None,
    instructions: str | None = None,
    turnDetection: TurnDetectionName = "server_vad",
    tools: str | None = None,
    lastEventId: Annotated[int | None, Query(ge=0)] = None,
    userId: str | None = None,
) -> EventStreamResponse:
    """The session's events as Server-Sent Events: starts a session (or joins the
    conversation's active one, or `sessionId`); a reconnect with `Last-Event-ID` (or
    `lastEventId`) replays what it missed."""
    user_id = device.acting_user(userId)
    header = request.headers.get("last-event-id")
    if header is not None:
        if not header.strip().isdigit():
            raise invalid("Last-Event-ID must be an event id (an integer)")
        lastEventId = int(header)
    session: LiveSession | None
    if sessionId is not None:
        session = await directory.session(sessionId, user_id)
        if session is None or conversationId not in (None, session.conversation_id):
            raise not_found("active session")
        is_new = False
    else:
        options = SessionOptions(
            instructions=instructions,
            voice=voice,
            language=language,
            turn_detection=turnDetection,
            tools=_query_tools(tools),
        )
        session, is_new = await directory.start(
            user_id,
            conversationId,
            input_rate=inputSampleRate,
            output_rate=outputSampleRate,
            options=options,
            join_active=True,
            device=device.token_id,
        )
    settings = request.app.state.settings
    last_event_id = None if is_new else lastEventId
    live = session

    revocations: Revocations = request.app.state.revocations

    async def produce(write: Write) -> None:
        await _write_events(live, last_event_id, write, fresh=is_new, watch=(revocations, device))

    return EventStreamResponse(
        produce,
        keepalive=settings.keepalive_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _write_events(
    session: LiveSession,
    last_event_id: int | None,
    write: Write,
    *,
    fresh: bool,
    watch: tuple[Revocations, Device],
) -> None:
    """Project the session's log onto an SSE stream, from the right place, until the
    session ends or the device's token is revoked."""
    streams = metrics.ACTIVE_STREAMS.labels(transport="sse")
    # A stream that started its session reads it all; a reconnect, from its id on;
    # a listener joining a live session, from now on (None).
    after = 0 if fresh else last_event_id
    with session.attached(reads="replays", after=after), streams.track_inprogress():
        cursor = session.log.cursor(after)
        if after is None:
            # No old audio for it, but the opening event, numbered as the latest one
            # it has seen.
            opening = session.opening
            await write(sse_frame(cursor.next_id - 1, opening.type, opening.json))
        revoked = False

        def on_revoked() -> None:
            nonlocal revoked
            revoked = True
            cursor.stop()

        revocations, device = watch
        with revocations.watch(device, on_revoked):
            await _follow(cursor, write)
        if revoked:
            await write(sse_frame(cursor.next_id - 1, "error", _REVOKED))


def _query_tools(text: str | None) -> tuple[dict[str, object], ...]:
    """``?tools=``: the client's function tools as a JSON array."""
    if text is None:
        return ()
    try:
        raw = orjson.loads(text)
    except ValueError:
        raise InvalidTool("tools must be a JSON array of function tools") from None
    return declared_tools(raw)


_REVOKED = b'{"code":"unauthorized","message":"the device token was revoked"}'


def _frames(cursor: Cursor, audio_times: list[float]) -> bytes:
    """The pending events as SSE frames, in one piece. A function of its own so that
    nothing of the batch is held while the listener waits for the next events."""
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
        if item.id <= cursor.head:
            metrics.REPLAYED_EVENTS.inc()
        elif item.type == "audio":
            audio_times.append(item.at)
        frames.append(item.sse)
    return frames[0] if len(frames) == 1 else b"".join(frames)


async def _follow(cursor: Cursor, write: Write) -> None:
    latency = metrics.DOWNSTREAM_LATENCY["sse"]
    audio_times: list[float] = []
    while await cursor.wait():
        # Whatever is pending goes out in one write: a listener that fell
        # behind catches up with one send instead of one per event.
        await write(_frames(cursor, audio_times))
        # The frames are written (handed to the server's transport).
        if audio_times:
            now = time.monotonic()
            for at in audio_times:
                latency.observe(now - at)
            audio_times.clear()
