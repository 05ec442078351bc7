"""The store's messages: appended at the next position (or a chosen one),
edited, listed in order."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import StoreBase, rowcount, utcnow
from .errors import ConversationNotFound, MessageExists, MessageNotFound
from .ids import MESSAGE_PREFIX, check_id, new_id
from .models import ROLES, ConversationRow, MessageRow
from .records import Message


class MessageStore(StoreBase):
    async def add_message(
        self,
        conversation_id: str,
        *,
        role: str,
        text: str,
        position: int | None = None,
        item_id: str | None = None,
        meta: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> Message:
        """Append a message (``position`` None: after the current last) and bump
        the conversation's ``updated_at``. ``ConversationNotFound`` if it is gone.

        ``message_id`` lets the caller pick the id up front (to name the message
        in later edits before the write lands). Retrying with the same id is
        safe: if that message is already stored in this conversation, it is
        returned as stored; in another conversation, ``MessageExists``.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if message_id is None:
            message_id = new_id(MESSAGE_PREFIX)
        else:
            check_id(message_id, "message id")
        try:
            return await self._insert_message(
                conversation_id, message_id, role, text, position, item_id, meta
            )
        except IntegrityError as exc:
            existing = await self._get_message(message_id)
            if existing is None:
                raise
            if existing.conversation_id != conversation_id:
                raise MessageExists(message_id) from exc
            return existing

    async def _insert_message(
        self,
        conversation_id: str,
        message_id: str,
        role: str,
        text: str,
        position: int | None,
        item_id: str | None,
        meta: dict[str, Any] | None,
    ) -> Message:
        now = utcnow()
        async with self._session.begin() as s:
            # Write first: locks the conversation (PostgreSQL row lock, SQLite
            # write lock) so concurrent appends get distinct positions.
            bumped = await s.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if rowcount(bumped) == 0:
                raise ConversationNotFound(conversation_id)
            if position is None:
                position = await _next_position(s, conversation_id)
            row = MessageRow(
                id=message_id,
                conversation_id=conversation_id,
                position=position,
                role=role,
                text=text,
                created_at=now,
                item_id=item_id,
                meta=copy.deepcopy(meta),
            )
            s.add(row)
        return message_record(row)

    async def _get_message(self, message_id: str) -> Message | None:
        async with self._session.begin() as s:
            row = await s.get(MessageRow, message_id)
            return None if row is None else message_record(row)

    async def update_message(
        self, message_id: str, *, text: str | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        """Replace the text and/or the meta of a message (None leaves a field as is).

        ``meta`` replaces the whole dict. ``MessageNotFound`` if there is no such message.
        """
        values: dict[str, Any] = {}
        if text is not None:
            values["text"] = text
        if meta is not None:
            values["meta"] = meta
        async with self._session.begin() as s:
            if not values:
                found = await s.scalar(select(MessageRow.id).where(MessageRow.id == message_id))
                if found is None:
                    raise MessageNotFound(message_id)
                return
            result = await s.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) == 0:
                raise MessageNotFound(message_id)

    async def list_messages(self, conversation_id: str) -> list[Message]:
        """The conversation's messages by position, then creation time (empty if unknown)."""
        m = MessageRow
        async with self._session.begin() as s:
            rows = await s.scalars(
                select(m)
                .where(m.conversation_id == conversation_id)
                .order_by(m.position, m.created_at, m.id)
            )
            return [message_record(r) for r in rows]

    async def next_position(self, conversation_id: str) -> int:
        """The highest position + 1; 0 for an empty (or unknown) conversation."""
        async with self._session.begin() as s:
            return await _next_position(s, conversation_id)


async def _next_position(s: AsyncSession, conversation_id: str) -> int:
    highest = await s.scalar(
        select(func.max(MessageRow.position)).where(MessageRow.conversation_id == conversation_id)
    )
    return 0 if highest is None else int(highest) + 1


def message_record(r: MessageRow) -> Message:
    return Message(
        id=r.id,
        conversation_id=r.conversation_id,
        position=r.position,
        role=r.role,
        text=r.text,
        created_at=r.created_at,
        item_id=r.item_id,
        meta=copy.deepcopy(r.meta),
    )
