"""Usage: one record per response (and per session's rest), and sessions by user.

``usage_records`` holds what each response used (tokens by kind, transcription, seconds
of audio in and out, the session's wall-clock time, its cost). It has no foreign key to
``conversations`` on purpose: usage outlives a deleted conversation. The new index on
``sessions`` finds a user's live sessions (the per-user limit).

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = (
    "input_tokens",
    "output_tokens",
    "input_text_tokens",
    "input_audio_tokens",
    "input_cached_tokens",
    "output_text_tokens",
    "output_audio_tokens",
    "transcription_input_tokens",
    "transcription_output_tokens",
)
_SECONDS = ("transcription_seconds", "audio_in_seconds", "audio_out_seconds", "session_seconds")


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("response_id", sa.String(), nullable=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTS),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _SECONDS),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
    )
    op.create_index(
        "ix_usage_records_user_id_created_at", "usage_records", ["user_id", "created_at"]
    )
    op.create_index("ix_usage_records_conversation_id", "usage_records", ["conversation_id"])
    op.create_index("ix_usage_records_session_id", "usage_records", ["session_id"])
    op.create_index("ix_sessions_user_id_status", "sessions", ["user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_sessions_user_id_status", table_name="sessions")
    op.drop_table("usage_records")
