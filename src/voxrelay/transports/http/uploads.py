"""``POST /realtime/upload``: audio in over plain HTTP, as one long chunked body
forwarded as it arrives, or as many short POSTs numbered with ``seq``.

A retried ``seq`` that was already taken answers the same again and is not
forwarded twice. Which numbers were taken is kept by the process that owns the
session (an owner call, ``Directory.at_owner``), so a retry that reaches another
worker than the first try is still recognised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from voxrelay import metrics
from voxrelay.errors import ApiError
from voxrelay.exceptions import SessionEnded, Unauthorized, VoxrelayError
from voxrelay.openapi import AUTHENTICATED, BODY, errors
from voxrelay.revocation import Revocations
from voxrelay.sessions import Directory, LiveSession, Registry
from voxrelay.transports.http._common import DeviceDep, DirectoryDep, SampleRate

log = logging.getLogger(__name__)
router = APIRouter(tags=["streaming"])

_AUDIO_TYPES = ("application/octet-stream", "audio/pcm", "audio/l16", "audio/x-pcm")
_LEDGER = "upload_seq"
_PCM = {"schema": {"type": "string", "format": "binary"}}
# audio/l16 and audio/x-pcm are taken too, as aliases; the contract names these two.
_BODY = {
    "requestBody": {
        "required": True,
        "description": "Raw PCM16 little-endian mono, at `sampleRate` (the session's input"
        " rate by default); sent chunked, it is forwarded as it arrives.",
        "content": {"application/octet-stream": _PCM, "audio/pcm": _PCM},
    }
}


class SeqLedger:
    """The upload ``seq`` numbers each session of this process has taken, with the
    bytes each one forwarded (0 while it is still arriving; what it forwarded until
    it stopped, when it failed midway)."""

    def __init__(self) -> None:
        self._taken: dict[str, dict[int, int]] = {}

    async def answer(self, args: dict[str, Any]) -> int | None:
        """``claim`` (the bytes of a ``seq`` already taken, or None once it is now
        claimed), ``settle`` with its byte count, or ``release`` an upload that forwarded
        nothing."""
        seq = int(args["seq"])
        if args["do"] == "claim":
            taken = self._taken.setdefault(str(args["session"]), {})
            if seq in taken:
                return taken[seq]
            taken[seq] = 0
            return None
        # Nothing to record for a session that ended meanwhile (``forget``).
        taken = self._taken.get(str(args["session"]), {})
        if args["do"] == "settle":
            taken[seq] = int(args["bytes"])
        else:
            taken.pop(seq, None)
        return None

    def forget(self, session: LiveSession) -> None:
        self._taken.pop(session.id, None)


def serve_uploads(directory: Directory, registry: Registry) -> None:
    """Keep the ``seq`` ledger of this process's sessions, for uploads reaching any worker."""
    ledger = SeqLedger()
    directory.serve(_LEDGER, ledger.answer)
    registry.on_ended.append(ledger.forget)


async def _ledger(
    directory: Directory, session: LiveSession, do: str, seq: int, received: int = 0
) -> int | None:
    args = {"do": do, "session": session.id, "seq": seq, "bytes": received}
    answer: int | None = await directory.at_owner(session.conversation_id, _LEDGER, args)
    return answer


@router.post(
    "/realtime/upload",
    openapi_extra=_BODY,
    responses=errors(*AUTHENTICATED, 404, *BODY, 409, 429, 503),
)
async def upload(
    request: Request,
    device: DeviceDep,
    directory: DirectoryDep,
    conversationId: str | None = None,
    sampleRate: SampleRate | None = None,
    seq: Annotated[int | None, Query(ge=0)] = None,
    userId: str | None = None,
) -> dict[str, Any]:
    """Audio for the conversation's active session: one long chunked body, or many
    short ones numbered with `seq` (a retried `seq` answers the same and is not sent
    twice)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _AUDIO_TYPES:
        raise ApiError(
            415, "unsupported_media_type", "send raw PCM16 as application/octet-stream or audio/pcm"
        )
    session = await directory.live(conversationId, device.acting_user(userId))
    limit: int = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"one upload may carry at most {limit} bytes")
    answer: dict[str, Any] = {"conversationId": session.conversation_id}
    if seq is not None:
        answer["seq"] = seq
        taken = await _ledger(directory, session, "claim", seq)
        if taken is not None:
            # A retry of a chunk already forwarded: same answer, nothing sent twice.
            return {**answer, "bytesReceived": taken}
    received = forwarded = 0
    rate = sampleRate or session.input_rate
    audio_in = metrics.AUDIO_IN["upload"]
    revocations: Revocations = request.app.state.revocations
    handler = asyncio.current_task()
    revoked = False

    def on_revoked() -> None:
        nonlocal revoked
        revoked = True
        if handler is not None:
            handler.cancel()

    try:
        with (
            revocations.watch(device, on_revoked),
            session.attached(reads="nothing"),
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
                forwarded += len(chunk)
            if forwarded:
                # The answer comes after the audio is in the session: a commit sent next,
                # to whichever node, cannot overtake it.
                await session.audio_received()
    except asyncio.CancelledError:
        if not revoked or handler is None:
            raise
        handler.uncancel()  # this request's own answer, not a cancelled server
        await _settle(directory, session, seq, forwarded)
        raise Unauthorized("the device token was revoked during the upload") from None
    except BaseException as error:
        await _settle(directory, session, seq, forwarded)
        if isinstance(error, SessionEnded):
            raise SessionEnded("the session ended during the upload") from None
        raise
    await _settle(directory, session, seq, forwarded)
    return {**answer, "bytesReceived": forwarded}


async def _settle(directory: Directory, session: LiveSession, seq: int | None, sent: int) -> None:
    """Record what an upload with ``seq`` forwarded, however it ended: a retry answers
    the same, and is not forwarded again. One that forwarded nothing may be sent again."""
    if seq is None:
        return
    try:
        if sent:
            await _ledger(directory, session, "settle", seq, sent)
        else:
            await _ledger(directory, session, "release", seq)
    except VoxrelayError as error:
        # The owner went away meanwhile: the ledger went with it.
        log.warning("could not record upload seq %d: %s", seq, error.message)
