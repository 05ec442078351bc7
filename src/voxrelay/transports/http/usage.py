"""``GET /usage``: the user's usage summed over a time range, and the JSON shape of usage
that ``GET /conversations/{id}`` shares."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from voxrelay.errors import ApiError
from voxrelay.openapi import AUTHENTICATED, errors
from voxrelay.store import Usage
from voxrelay.transports.http._common import DeviceDep, StoreDep, time_json

router = APIRouter(tags=["usage"])


@router.get("/usage", responses=errors(*AUTHENTICATED, 422))
async def usage(
    device: DeviceDep,
    store: StoreDep,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    userId: str | None = None,
) -> dict[str, Any]:
    """The user's usage in `[from, to)`: ISO-8601 dates or date-times (UTC when they name
    no zone), both optional; a date as `to` includes that whole day. A service token
    names the user with `userId`."""
    user_id = device.acting_user(userId)
    since = _bound(from_, "from", end=False)
    until = _bound(to, "to", end=True)
    if since is not None and until is not None and since >= until:
        raise ApiError(422, "invalid_request", "from must be earlier than to")
    summed = await store.usage(user_id=user_id, since=since, until=until)
    return {
        "usage": usage_json(summed),
        "from": None if since is None else time_json(since),
        "to": None if until is None else time_json(until),
    }


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "inputAudioTokens": usage.input_audio_tokens,
        "inputTextTokens": usage.input_text_tokens,
        "inputCachedTokens": usage.input_cached_tokens,
        "outputAudioTokens": usage.output_audio_tokens,
        "outputTextTokens": usage.output_text_tokens,
        "transcriptionInputTokens": usage.transcription_input_tokens,
        "transcriptionOutputTokens": usage.transcription_output_tokens,
        "transcriptionSeconds": round(usage.transcription_seconds, 3),
        "audioInSeconds": round(usage.audio_in_seconds, 3),
        "audioOutSeconds": round(usage.audio_out_seconds, 3),
        "sessionSeconds": round(usage.session_seconds, 3),
        "responses": usage.responses,
        "cost": None if usage.cost is None else round(usage.cost, 6),
    }


def _bound(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A query bound as an aware UTC time; a date is its midnight (as ``to``: the next)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if "T" in text and " " in text:
        text = text.replace(" ", "+")  # an offset's "+" left unencoded in the query
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "invalid_request", f"{name} must be an ISO-8601 date or date-time, not {value!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
