"""Tool calls: each function call of a conversation, with its result, in its place.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("arguments_text", sa.Text(), nullable=False),
        sa.Column("arguments", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_by", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tool_calls"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_tool_calls_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed')", name="ck_tool_calls_status"
        ),
        sa.CheckConstraint("run_by IN ('server', 'client')", name="ck_tool_calls_run_by"),
    )
    op.create_index(
        "ix_tool_calls_conversation_id_position", "tool_calls", ["conversation_id", "position"]
    )


def downgrade() -> None:
    op.drop_table("tool_calls")
