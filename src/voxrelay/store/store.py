"""The storage API: device tokens, conversations, messages and sessions.

One code path for SQLite (``sqlite+aiosqlite``) and PostgreSQL
(``postgresql+asyncpg``). Every method is one short transaction on a pooled
connection; nothing is held between calls. Writes that read too (``add_message``)
write first, which takes the row lock on PostgreSQL and the write lock on SQLite
before reading, so concurrent callers are serialised instead of racing.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .engine import make_engine, migrate
from .errors import (
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    MessageExists,
    MessageNotFound,
    SessionExists,
)
from .ids import (
    CONVERSATION_PREFIX,
    MESSAGE_PREFIX,
    SESSION_PREFIX,
    TOKEN_ID_PREFIX,
    check_id,
    hash_token,
    new_id,
    new_token,
)
from .models import ROLES, ConversationRow, DeviceTokenRow, MessageRow, SessionRow
from .records import (
    Conversation,
    ConversationSummary,
    DeviceToken,
    Message,
    SessionRecord,
)

PING_TIMEOUT = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """Persistent state of voxrelay. Build it with :meth:`open`, release it with :meth:`close`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

    @classmethod
    async def open(cls, database_url: str) -> Store:
        """Connect to ``database_url`` and migrate the schema to the latest revision."""
        engine = make_engine(database_url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query (within ``PING_TIMEOUT`` s)."""
        async with asyncio.timeout(PING_TIMEOUT), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # -- device tokens -------------------------------------------------------

    async def create_token(self, device: str, user_id: str | None) -> tuple[DeviceToken, str]:
        """A new token for ``device``: returns its record and the plaintext (shown once)."""
        if not device:
            raise ValueError("device name must not be empty")
        token = new_token()
        row = DeviceTokenRow(
            id=new_id(TOKEN_ID_PREFIX),
            device=device,
            user_id=user_id,
            token_hash=hash_token(token),
            created_at=utcnow(),
            revoked_at=None,
        )
        async with self._session.begin() as s:
            s.add(row)
        return _token(row), token

    async def list_tokens(self) -> list[DeviceToken]:
        """Every token, revoked ones included, oldest first."""
        async with self._session.begin() as s:
            rows = await s.scalars(
                select(DeviceTokenRow).order_by(DeviceTokenRow.created_at, DeviceTokenRow.id)
            )
            return [_token(r) for r in rows]

    async def revoke_token(self, device: str) -> int:
        """Revoke every active token of ``device``; returns how many were revoked."""
        async with self._session.begin() as s:
            result = await s.execute(
                update(DeviceTokenRow)
                .where(DeviceTokenRow.device == device, DeviceTokenRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result)

    async def authenticate(self, token: str) -> DeviceToken | None:
        """The active token record matching ``token``, else None (unknown or revoked)."""
        if not token:
            return None
        async with self._session.begin() as s:
            row = await s.scalar(
                select(DeviceTokenRow).where(
                    DeviceTokenRow.token_hash == hash_token(token),
                    DeviceTokenRow.revoked_at.is_(None),
                )
            )
            return None if row is None else _token(row)

    # -- conversations -------------------------------------------------------

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
        return _conversation(row)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, whoever owns it (callers check ``user_id``)."""
        async with self._session.begin() as s:
            row = await s.get(ConversationRow, conversation_id)
            return None if row is None else _conversation(row)

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
                msg.conversation_id: (_message(msg), int(total)) for msg, total in rows
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
        async with self._session.begin() as s:
            result = await s.execute(
                sql_delete(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(result) > 0

    # -- messages ------------------------------------------------------------

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
            if _rowcount(bumped) == 0:
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
        return _message(row)

    async def _get_message(self, message_id: str) -> Message | None:
        async with self._session.begin() as s:
            row = await s.get(MessageRow, message_id)
            return None if row is None else _message(row)

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
            if _rowcount(result) == 0:
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
            return [_message(r) for r in rows]

    async def next_position(self, conversation_id: str) -> int:
        """The highest position + 1; 0 for an empty (or unknown) conversation."""
        async with self._session.begin() as s:
            return await _next_position(s, conversation_id)

    # -- sessions ------------------------------------------------------------

    async def create_session(
        self,
        *,
        conversation_id: str,
        user_id: str,
        input_sample_rate: int,
        output_sample_rate: int,
        turn_detection: str,
        options: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> SessionRecord:
        """A new ``active`` session of an existing conversation.

        ``ConversationNotFound`` if the conversation does not exist,
        ``SessionExists`` if ``session_id`` is taken.
        """
        if session_id is None:
            session_id = new_id(SESSION_PREFIX)
        else:
            check_id(session_id, "session id")
        row = SessionRow(
            id=session_id,
            conversation_id=conversation_id,
            user_id=user_id,
            status="active",
            created_at=utcnow(),
            ended_at=None,
            end_reason=None,
            input_sample_rate=input_sample_rate,
            output_sample_rate=output_sample_rate,
            turn_detection=turn_detection,
            options=copy.deepcopy(options),
        )
        try:
            async with self._session.begin() as s:
                s.add(row)
        except IntegrityError as exc:
            # Foreign key (conversation gone) or primary key (id taken): find out which.
            if await self.get_session(session_id) is not None:
                raise SessionExists(session_id) from exc
            raise ConversationNotFound(conversation_id) from exc
        return _session_record(row)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self._session.begin() as s:
            row = await s.get(SessionRow, session_id)
            return None if row is None else _session_record(row)

    async def end_session(self, session_id: str, reason: str) -> None:
        """Mark the session ended. Idempotent: an ended session keeps its first
        ``ended_at``/``end_reason``; an unknown id is ignored."""
        async with self._session.begin() as s:
            await s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.status == "active")
                .values(status="ended", ended_at=utcnow(), end_reason=reason)
                .execution_options(synchronize_session=False)
            )

    async def end_stale_sessions(
        self, reason: str = "server_shutdown", *, only: Callable[[str], bool] | None = None
    ) -> int:
        """End every session still marked active (after a crash), or with ``only`` those
        whose id it accepts (the sessions one worker of several would own); returns
        how many."""
        async with self._session.begin() as s:
            statement = update(SessionRow).where(SessionRow.status == "active")
            if only is not None:
                active = await s.scalars(select(SessionRow.id).where(SessionRow.status == "active"))
                chosen = [session_id for session_id in active if only(session_id)]
                if not chosen:
                    return 0
                statement = statement.where(SessionRow.id.in_(chosen))
            result = await s.execute(
                statement.values(
                    status="ended", ended_at=utcnow(), end_reason=reason
                ).execution_options(synchronize_session=False)
            )
            return _rowcount(result)


# -- helpers -----------------------------------------------------------------


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


async def _next_position(s: AsyncSession, conversation_id: str) -> int:
    highest = await s.scalar(
        select(func.max(MessageRow.position)).where(MessageRow.conversation_id == conversation_id)
    )
    return 0 if highest is None else int(highest) + 1


async def _cursor_clause(s: AsyncSession, user_id: str, before: str) -> Any:
    c = ConversationRow
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


def _token(r: DeviceTokenRow) -> DeviceToken:
    return DeviceToken(
        id=r.id,
        device=r.device,
        user_id=r.user_id,
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )


def _conversation(r: ConversationRow) -> Conversation:
    return Conversation(
        id=r.id, user_id=r.user_id, created_at=r.created_at, updated_at=r.updated_at
    )


def _message(r: MessageRow) -> Message:
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


def _session_record(r: SessionRow) -> SessionRecord:
    return SessionRecord(
        id=r.id,
        conversation_id=r.conversation_id,
        user_id=r.user_id,
        status=r.status,
        created_at=r.created_at,
        ended_at=r.ended_at,
        end_reason=r.end_reason,
        input_sample_rate=r.input_sample_rate,
        output_sample_rate=r.output_sample_rate,
        turn_detection=r.turn_detection,
        options=copy.deepcopy(r.options),
    )
