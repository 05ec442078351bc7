"""Token kinds: every token is a device's (with its user) or a service's (with none).

Existing tokens become device tokens. One created without ``--user`` gets the user it
acted for when a request named none, ``device:<its device name>``, so it keeps the
conversations it had; it can no longer act for the ``userId`` a request names.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in ``models.TOKEN_KIND_CHECK``, copied: a migration must not change with the models.
_KIND_CHECK = "(kind = 'device' AND user_id IS NOT NULL) OR (kind = 'service' AND user_id IS NULL)"


def upgrade() -> None:
    op.add_column("device_tokens", sa.Column("kind", sa.String(16), nullable=True))
    op.execute("UPDATE device_tokens SET kind = 'device'")
    op.execute("UPDATE device_tokens SET user_id = 'device:' || device WHERE user_id IS NULL")
    # SQLite alters a column by copying the table: batch mode does that.
    with op.batch_alter_table("device_tokens") as batch:
        batch.alter_column("kind", existing_type=sa.String(16), nullable=False)
        batch.create_check_constraint("ck_device_tokens_kind", _KIND_CHECK)


def downgrade() -> None:
    with op.batch_alter_table("device_tokens") as batch:
        batch.drop_constraint("ck_device_tokens_kind", type_="check")
        batch.drop_column("kind")
    # Back to the old form of a device's own user (and of a service: no user).
    op.execute("UPDATE device_tokens SET user_id = NULL WHERE user_id = 'device:' || device")
