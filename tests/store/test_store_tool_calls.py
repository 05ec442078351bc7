"""Tool calls: added pending, finished with any JSON result or an error, listed in the
conversation's order, retried safely, gone with their conversation."""

from __future__ import annotations

import pytest

from voxrelay.store import ConversationNotFound, NotFound, Store


def _call(n: int, **changes: object) -> dict[str, object]:
    return {
        "tool_call_id": f"tool_{n}",
        "call_id": f"call_{n}",
        "name": "alert_caregiver",
        "arguments_text": '{"urgency": "high"}',
        "arguments": {"urgency": "high"},
        "position": n,
        "run_by": "server",
        **changes,
    }


async def test_calls_are_finished_with_any_json_and_listed_in_order(store: Store) -> None:
    conv = await store.create_conversation("u")
    await store.add_message(conv.id, role="user", text="I fell", position=0)
    later = await store.add_tool_call(conv.id, **_call(3, session_id="sess_1"))  # type: ignore[arg-type]
    first = await store.add_tool_call(conv.id, **_call(1, run_by="client"))  # type: ignore[arg-type]
    assert (first.status, first.output, first.finished_at) == ("pending", None, None)
    await store.finish_tool_call("tool_1", status="completed", output=["a", 1, None])
    await store.finish_tool_call("tool_3", status="failed", error="timed out")
    one, three = await store.list_tool_calls(conv.id)
    assert (one.id, one.output, one.status, one.run_by) == (
        "tool_1",
        ["a", 1, None],
        "completed",
        "client",
    )
    assert (three.status, three.error, three.output, three.session_id) == (
        "failed",
        "timed out",
        None,
        "sess_1",
    )
    assert three.finished_at is not None and three.created_at == later.created_at
    assert one.arguments == {"urgency": "high"} and one.arguments_text == '{"urgency": "high"}'
    # Messages and calls share the numbering.
    assert await store.next_item_position(conv.id) == 4
    assert await store.next_item_position("nothing") == 0


async def test_a_retried_add_returns_the_stored_call(store: Store) -> None:
    conv = await store.create_conversation("u")
    stored = await store.add_tool_call(conv.id, **_call(0))  # type: ignore[arg-type]
    again = await store.add_tool_call(conv.id, **_call(0, name="other"))  # type: ignore[arg-type]
    assert again == stored
    assert len(await store.list_tool_calls(conv.id)) == 1


async def test_what_cannot_be_stored_is_refused(store: Store) -> None:
    conv = await store.create_conversation("u")
    with pytest.raises(ConversationNotFound):
        await store.add_tool_call("conv_gone", **_call(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.add_tool_call(conv.id, **_call(0, status="lost"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.add_tool_call(conv.id, **_call(0, run_by="nobody"))  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await store.finish_tool_call("tool_none", status="completed", output=1)
    with pytest.raises(ValueError):
        await store.finish_tool_call("tool_none", status="pending")


async def test_calls_go_with_their_conversation(store: Store) -> None:
    conv = await store.create_conversation("u")
    await store.add_tool_call(conv.id, **_call(0))  # type: ignore[arg-type]
    assert await store.delete_conversation(conv.id)
    assert await store.list_tool_calls(conv.id) == []
