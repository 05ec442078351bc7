"""The store's conversations: created, found, listed a page at a time with their
last message, deleted with everything in them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import StoreBase, rowcount, utcnow
from .errors import ConversationExists, InvalidCursor
from .ids import CONVERSATION_PREFIX, check_id, new_id, storable
from .messages import message_record
from .models import ConversationRow, MessageRow
from .records import Conversation, ConversationSummary, Message


class ConversationStore(StoreBase):
    async def create_conversation(
        self, user_id: str, conversation_id: str | None = None
    ) -> Conversation:
        """A new conversation; ``ConversationExists`` if ``conversation_id`` is taken."""
        if conversation_id is None:
            conversation_id = new_id(CONVERSATION_PREFIX)
        else:
            check_id(conversation_id, "conversation id")
        now = utcnow()
        row = ConversationRow(id=conversation_id, user_id=user_id, created_at=now, updated_at=now)
        try:
            async with self._session.begin() as s:
                s.add(row)
        except IntegrityError as exc:
            raise ConversationExists(conversation_id) from exc
        return _conversation_record(row)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, whoever owns it (callers check ``user_id``)."""
        if not storable(conversation_id):
            return None
        async with self._session.begin() as s:
            row = await s.get(ConversationRow, conversation_id)
            return None if row is None else _conversation_record(row)

    async def list_conversations(
        self, user_id: str, *, limit: int = 20, before: str | None = None
    ) -> list[ConversationSummary]:
        """``user_id``'s conversations, newest ``updated_at`` first (ties: id descending).

        ``before`` is a cursor: the id of one of this user's conversations (the
        page continues strictly after it in this order), or an ISO-8601 timestamp
        (``updated_at`` strictly earlier; a naive one is taken as UTC). Anything
        else, including another user's conversation id, raises ``InvalidCursor``.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        c = ConversationRow
        async with self._session.begin() as s:
            stmt = select(c).where(c.user_id == user_id)
            if before is not None:
                stmt = stmt.where(await _cursor_clause(s, user_id, before))
            stmt = stmt.order_by(c.updated_at.desc(), c.id.desc()).limit(limit)
            convs = list(await s.scalars(stmt))
            if not convs:
                return []
            m = MessageRow
            ids = [conv.id for conv in convs]
            ranked = (
                select(
                    m.id.label("id"),
                    func.row_number()
                    .over(
                        partition_by=m.conversation_id,
                        order_by=(m.position.desc(), m.created_at.desc(), m.id.desc()),
                    )
                    .label("rank"),
                    func.count().over(partition_by=m.conversation_id).label("total"),
                )
                .where(m.conversation_id.in_(ids))
                .subquery()
            )
            rows = await s.execute(
                select(m, ranked.c.total)
                .join(ranked, m.id == ranked.c.id)
                .where(ranked.c.rank == 1)
            )
            last: dict[str, tuple[Message | None, int]] = {
                msg.conversation_id: (message_record(msg), int(total)) for msg, total in rows
            }
        summaries = []
        for conv in convs:
            message, count = last.get(conv.id, (None, 0))
            summaries.append(
                ConversationSummary(
                    id=conv.id,
                    created_at=conv.created_at,
                    updated_at=conv.updated_at,
                    message_count=count,
                    last_message=message,
                )
            )
        return summaries

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete it with its messages and sessions; False if it did not exist."""
        if not storable(conversation_id):
            return False
        async with self._session.begin() as s:
            result = await s.execute(
                sql_delete(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .execution_options(synchronize_session=False)
            )
            return rowcount(result) > 0


async def _cursor_clause(s: AsyncSession, user_id: str, before: str) -> Any:
    c = ConversationRow
    anchor = None
    if storable(before):
        anchor = await s.scalar(select(c).where(c.id == before, c.user_id == user_id))
    if anchor is not None:
        return or_(
            c.updated_at < anchor.updated_at,
            and_(c.updated_at == anchor.updated_at, c.id < anchor.id),
        )
    try:
        moment = datetime.fromisoformat(before)
    except ValueError:
        raise InvalidCursor(
            f"'before' is neither one of your conversation ids nor an ISO-8601 time: {before!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return c.updated_at < moment


def _conversation_record(r: ConversationRow) -> Conversation:
    return Conversation(
        id=r.id, user_id=r.user_id, created_at=r.created_at, updated_at=r.updated_at
    )
