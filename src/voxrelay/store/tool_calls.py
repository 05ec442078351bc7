"""The store's tool calls: each one added when the model makes it, finished with its
result, listed in conversation order."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .base import StoreBase, rowcount, utcnow
from .errors import ConversationNotFound, NotFound
from .ids import check_id
from .models import TOOL_CALL_STATUSES, TOOL_RUNNERS, ConversationRow, MessageRow, ToolCallRow
from .records import ToolCall


class ToolCallStore(StoreBase):
    async def add_tool_call(
        self,
        conversation_id: str,
        *,
        tool_call_id: str,
        call_id: str,
        name: str,
        arguments_text: str,
        arguments: dict[str, Any] | None,
        position: int,
        run_by: str,
        session_id: str | None = None,
        status: str = "pending",
        output: Any = None,
        error: str | None = None,
    ) -> ToolCall:
        """Record a call (retrying with the same id returns it as stored);
        ``ConversationNotFound`` if the conversation is gone."""
        check_id(tool_call_id, "tool call id")
        _check(status, run_by)
        now = utcnow()
        row = ToolCallRow(
            id=tool_call_id,
            conversation_id=conversation_id,
            session_id=session_id,
            position=position,
            call_id=call_id,
            name=name,
            arguments_text=arguments_text,
            arguments=copy.deepcopy(arguments),
            output=copy.deepcopy(output),
            status=status,
            error=error,
            run_by=run_by,
            created_at=now,
            finished_at=None if status == "pending" else now,
        )
        try:
            async with self._session.begin() as s:
                bumped = await s.execute(
                    update(ConversationRow)
                    .where(ConversationRow.id == conversation_id)
                    .values(updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(bumped) == 0:
                    raise ConversationNotFound(conversation_id)
                s.add(row)
        except IntegrityError:
            async with self._session.begin() as s:
                existing = await s.get(ToolCallRow, tool_call_id)
                if existing is None:
                    raise
                return tool_call_record(existing)
        return tool_call_record(row)

    async def finish_tool_call(
        self, tool_call_id: str, *, status: str, output: Any = None, error: str | None = None
    ) -> None:
        """A call's result (``completed``) or why it has none (``failed``)."""
        if status not in TOOL_CALL_STATUSES or status == "pending":
            raise ValueError(f"a finished tool call is completed or failed, not {status!r}")
        async with self._session.begin() as s:
            result = await s.execute(
                update(ToolCallRow)
                .where(ToolCallRow.id == tool_call_id)
                .values(
                    status=status, output=copy.deepcopy(output), error=error, finished_at=utcnow()
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) == 0:
                raise NotFound(f"tool call {tool_call_id}")

    async def list_tool_calls(self, conversation_id: str) -> list[ToolCall]:
        """The conversation's tool calls by position (empty if unknown)."""
        t = ToolCallRow
        async with self._session.begin() as s:
            rows = await s.scalars(
                select(t).where(t.conversation_id == conversation_id).order_by(t.position, t.id)
            )
            return [tool_call_record(r) for r in rows]

    async def next_item_position(self, conversation_id: str) -> int:
        """The position after every message and tool call of the conversation."""
        async with self._session.begin() as s:
            highest = [
                await s.scalar(
                    select(func.max(row.position)).where(row.conversation_id == conversation_id)
                )
                for row in (MessageRow, ToolCallRow)
            ]
        known = [int(h) for h in highest if h is not None]
        return max(known) + 1 if known else 0


def _check(status: str, run_by: str) -> None:
    if status not in TOOL_CALL_STATUSES:
        raise ValueError(f"status must be one of {TOOL_CALL_STATUSES}, not {status!r}")
    if run_by not in TOOL_RUNNERS:
        raise ValueError(f"run_by must be one of {TOOL_RUNNERS}, not {run_by!r}")


def tool_call_record(r: ToolCallRow) -> ToolCall:
    return ToolCall(
        id=r.id,
        conversation_id=r.conversation_id,
        session_id=r.session_id,
        position=r.position,
        call_id=r.call_id,
        name=r.name,
        arguments_text=r.arguments_text,
        arguments=copy.deepcopy(r.arguments),
        output=copy.deepcopy(r.output),
        status=r.status,
        error=r.error,
        run_by=r.run_by,
        created_at=r.created_at,
        finished_at=r.finished_at,
    )
