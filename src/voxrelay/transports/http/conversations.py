"""Stored conversations over REST: list them, read one with its messages, delete one."""

from __future__ import annotations

import statistics
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from voxrelay.errors import invalid
from voxrelay.openapi import AUTHENTICATED, errors
from voxrelay.store import ConversationSummary, InvalidCursor, Message, ToolCall
from voxrelay.transports.http._common import DeviceDep, DirectoryDep, StoreDep, time_json
from voxrelay.transports.http.usage import usage_json

router = APIRouter(tags=["conversations"])


@router.get("/conversations", responses=errors(*AUTHENTICATED, 422))
async def list_conversations(
    device: DeviceDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: str | None = None,
    userId: str | None = None,
) -> dict[str, Any]:
    """The user's conversations, newest first, `limit` at a time; `before` (the last
    id of a page, or an ISO-8601 time) pages on."""
    try:
        summaries = await store.list_conversations(
            device.acting_user(userId), limit=limit, before=before
        )
    except InvalidCursor:
        raise invalid(
            "before must be a conversation id from this list or an ISO-8601 time"
        ) from None
    return {"conversations": [_summary_json(s) for s in summaries]}


@router.get("/conversations/{conversation_id}", responses=errors(*AUTHENTICATED, 404))
async def get_conversation(
    conversation_id: str,
    device: DeviceDep,
    store: StoreDep,
    directory: DirectoryDep,
    userId: str | None = None,
) -> dict[str, Any]:
    """One conversation with its messages, oldest first, its answers' latency and its
    usage; its tool calls (`toolCalls`), when it has any, in their own list."""
    conversation = await directory.conversation(conversation_id, device.acting_user(userId))
    messages = await store.list_messages(conversation_id)
    calls = await store.list_tool_calls(conversation_id)
    # Usage outlives a deleted conversation: none of an earlier one that had this id.
    usage = await store.usage(
        user_id=conversation.user_id,
        conversation_id=conversation_id,
        since=conversation.created_at,
    )
    body: dict[str, Any] = {
        "id": conversation.id,
        "createdAt": time_json(conversation.created_at),
        "updatedAt": time_json(conversation.updated_at),
        "messages": [_message_json(m) for m in messages],
        "latency": _latency_json(messages),
        "usage": usage_json(usage),
    }
    if calls:
        body["toolCalls"] = [_tool_call_json(call, messages) for call in calls]
    return {"conversation": body}


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    responses=errors(*AUTHENTICATED, 404, 503),
)
async def delete_conversation(
    conversation_id: str,
    device: DeviceDep,
    store: StoreDep,
    directory: DirectoryDep,
    userId: str | None = None,
) -> Response:
    """Delete a conversation and its messages, ending its active session first."""
    await directory.end(conversation_id, device.acting_user(userId), "client_end")
    await store.delete_conversation(conversation_id)
    return Response(status_code=204)


def _message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "createdAt": time_json(message.created_at),
        **({"latency": message.meta} if message.meta else {}),
    }


def _tool_call_json(call: ToolCall, messages: list[Message]) -> dict[str, Any]:
    before = [m.id for m in messages if m.position < call.position]
    return {
        "id": call.id,
        "callId": call.call_id,
        "name": call.name,
        "arguments": call.arguments if call.arguments is not None else {},
        "output": call.output,
        "status": call.status,
        "error": call.error,
        "runBy": call.run_by,
        "createdAt": time_json(call.created_at),
        "afterMessageId": before[-1] if before else None,
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
        "createdAt": time_json(summary.created_at),
        "updatedAt": time_json(summary.updated_at),
        "messageCount": summary.message_count,
        "lastMessage": _message_json(last) if last is not None else None,
    }
