"""Translation of events between the two dialects.

Translation is pure: events in, events out. A server event may become several (beta's
``conversation.item.created`` of a finished item is GA's ``conversation.item.added`` then
``conversation.item.done``) or none (GA events the beta protocol has no word for). Fields
the target dialect does not know are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voxrelay.openai_realtime.item_shapes import (
    convert_item,
    response_params_to_beta,
    response_params_to_ga,
    response_to_beta,
    response_to_ga,
)
from voxrelay.openai_realtime.protocol import (
    BETA_SERVER_EVENTS,
    GA_SERVER_EVENTS,
    SERVER_BETA_TO_GA,
    SERVER_GA_TO_BETA,
    Dialect,
)
from voxrelay.openai_realtime.session_shapes import convert_session


def client_event(
    event: Mapping[str, Any], source: Dialect, target: Dialect
) -> dict[str, Any] | None:
    """A client event of dialect ``source`` as dialect ``target`` speaks it; None when the
    target has no such event (beta's ``transcription_session.update`` in GA). Events of
    unknown type pass unchanged, for the receiver to judge."""
    out = dict(event)
    if source == target:
        return out
    kind = event.get("type")
    if kind == "transcription_session.update":
        return None
    if kind == "session.update" and isinstance(event.get("session"), Mapping):
        out["session"] = convert_session(event["session"], source, target, update=True)
    elif kind == "conversation.item.create" and isinstance(event.get("item"), Mapping):
        out["item"] = convert_item(event["item"], source, target)
    elif kind == "response.create" and isinstance(event.get("response"), Mapping):
        convert = response_params_to_beta if target == "beta" else response_params_to_ga
        out["response"] = convert(event["response"])
    return out


def server_event(
    event: Mapping[str, Any], source: Dialect, target: Dialect
) -> list[dict[str, Any]]:
    """A server event of dialect ``source`` as the events dialect ``target`` sends for it
    (usually one, sometimes two or none)."""
    if source == target:
        return [dict(event)]
    kind = str(event.get("type"))
    out = dict(event)
    if target == "beta":
        if kind not in BETA_SERVER_EVENTS and kind not in SERVER_GA_TO_BETA:
            return []  # GA only: conversation.item.done, mcp_*, timeouts, segments, DTMF
        out["type"] = SERVER_GA_TO_BETA.get(kind, kind)
    else:
        if kind not in GA_SERVER_EVENTS and kind not in SERVER_BETA_TO_GA:
            return []  # beta only: transcription_session.updated
        out["type"] = SERVER_BETA_TO_GA.get(kind, kind)
    if "item" in event:
        out["item"] = convert_item(event["item"], source, target)
    if "response" in event and isinstance(event["response"], Mapping):
        convert = response_to_beta if target == "beta" else response_to_ga
        out["response"] = convert(event["response"])
    if kind in ("session.created", "session.updated") and isinstance(event.get("session"), Mapping):
        out["session"] = convert_session(event["session"], source, target)
    if target == "beta":
        if kind.startswith("conversation.item.input_audio_transcription."):
            out.pop("languages", None)
        elif kind == "response.function_call_arguments.done":
            out.pop("name", None)
        return [out]
    if kind == "response.function_call_arguments.done":
        out.setdefault("name", "")
    if kind == "conversation.item.created" and isinstance(out.get("item"), Mapping):
        out.setdefault("previous_item_id", None)
        if out["item"].get("status") == "completed":
            return [out, _item_done(out, event)]
    if kind == "response.output_item.done" and isinstance(out.get("item"), Mapping):
        # GA also says the conversation's item is done once its response item is.
        return [out, _item_done({"item": out["item"], "previous_item_id": None}, event)]
    return [out]


def _item_done(added: Mapping[str, Any], original: Mapping[str, Any]) -> dict[str, Any]:
    done: dict[str, Any] = {
        "type": "conversation.item.done",
        "previous_item_id": added.get("previous_item_id"),
        "item": added["item"],
    }
    if "event_id" in original:
        done = {"event_id": f"{original['event_id']}_done", **done}
    return done
