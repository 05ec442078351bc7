"""The store's usage records: one per response (and one for the rest of each session),
written once, summed by conversation or by user over a time range."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .base import StoreBase
from .models import SessionRow, UsageRecordRow
from .records import USAGE_AMOUNTS, Usage, UsageRecord

# Amounts stored as columns of their own (``responses`` is counted, ``cost`` may be null).
_SUMMED = tuple(name for name in USAGE_AMOUNTS if name not in ("responses", "cost"))


class UsageStore(StoreBase):
    async def add_usage(self, record: UsageRecord) -> None:
        """Store a record. Writing the same id again (a retry after a write whose answer
        was lost) changes nothing."""
        amounts = {name: getattr(record.usage, name) for name in _SUMMED}
        row = UsageRecordRow(
            id=record.id,
            user_id=record.user_id,
            conversation_id=record.conversation_id,
            session_id=record.session_id,
            response_id=record.response_id,
            provider=record.provider,
            model=record.model,
            created_at=record.created_at,
            cost=record.usage.cost,
            **amounts,
        )
        try:
            async with self._session.begin() as s:
                s.add(row)
        except IntegrityError:
            async with self._session.begin() as s:
                if await s.get(UsageRecordRow, record.id) is None:
                    raise

    async def usage(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        not_session: str | None = None,
    ) -> Usage:
        """The sum of the records of a user and/or a conversation created in
        ``[since, until)``, leaving out those of session ``not_session``."""
        u = UsageRecordRow
        columns: list[Any] = [func.coalesce(func.sum(getattr(u, name)), 0) for name in _SUMMED]
        query = select(*columns, func.count(u.response_id), func.sum(u.cost))
        if user_id is not None:
            query = query.where(u.user_id == user_id)
        if conversation_id is not None:
            query = query.where(u.conversation_id == conversation_id)
        if since is not None:
            query = query.where(u.created_at >= since)
        if until is not None:
            query = query.where(u.created_at < until)
        if not_session is not None:
            query = query.where(u.session_id != not_session)
        async with self._session.begin() as s:
            row = (await s.execute(query)).one()
        *sums, responses, cost = row
        amounts: dict[str, Any] = {
            name: (float(value) if name.endswith("seconds") else int(value))
            for name, value in zip(_SUMMED, sums, strict=True)
        }
        return Usage(
            **amounts, responses=int(responses), cost=None if cost is None else float(cost)
        )

    async def unrecorded_seconds(self, user_id: str, since: datetime, now: datetime) -> float:
        """How long the user's live sessions have run, since ``since``, beyond what
        their records hold: from each one's last record (or its start) until ``now``."""
        s_, u = SessionRow, UsageRecordRow
        last = (
            select(u.session_id, func.max(u.created_at).label("at"))
            .group_by(u.session_id)
            .subquery()
        )
        query = (
            select(s_.created_at, last.c.at)
            .outerjoin(last, last.c.session_id == s_.id)
            .where(s_.user_id == user_id, s_.status == "active")
        )
        async with self._session.begin() as s:
            rows = (await s.execute(query)).all()
        total = 0.0
        for started, recorded in rows:
            begin = max(started, since, *(() if recorded is None else (_aware(recorded),)))
            total += max(0.0, (now - begin).total_seconds())
        return total


def _aware(value: datetime | str) -> datetime:
    # An aggregate may come back as the database gave it: SQLite's text has no zone.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
