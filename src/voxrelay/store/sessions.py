"""The store's sessions: created active, ended once, and those a crash left active
ended at start."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .base import StoreBase, rowcount, utcnow
from .errors import ConversationNotFound, SessionExists
from .ids import SESSION_PREFIX, check_id, new_id, storable
from .models import SessionRow
from .records import SessionRecord


class SessionStore(StoreBase):
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
        if not storable(session_id):
            return None
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

    async def active_session_ids(self) -> list[str]:
        """Every session still marked active."""
        async with self._session.begin() as s:
            found = await s.scalars(select(SessionRow.id).where(SessionRow.status == "active"))
            return list(found)

    async def count_active_sessions(self, user_id: str) -> int:
        """How many sessions of the user are marked active, in every process."""
        async with self._session.begin() as s:
            found = await s.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.user_id == user_id, SessionRow.status == "active")
            )
            return int(found or 0)

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
            return rowcount(result)


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
