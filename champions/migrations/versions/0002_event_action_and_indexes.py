"""The event's ``action`` (register, promote, replace, ...) and the indexes the registry needs.

``action`` tells a deliberate retirement from a replacement, which is what ``rollback_target``
reads; rows written by 0001 get it from their states. The two partial unique indexes make
"one live and one paper champion per symbol and timeframe" a database rule (SQLite and
PostgreSQL both support ``CREATE UNIQUE INDEX ... WHERE``), so two concurrent promotions
cannot both commit.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIONS = "('register', 'promote', 'replace', 'rollback', 'retire', 'demote')"


def upgrade() -> None:
    with op.batch_alter_table("champion_events") as batch:
        batch.add_column(sa.Column("action", sa.String(16), nullable=True))
    op.execute("UPDATE champion_events SET action = CASE"
               " WHEN from_state IS NULL THEN 'register'"
               " WHEN to_state = 'retired' THEN 'retire'"
               " WHEN to_state = 'eligible' OR (from_state = 'live' AND to_state = 'paper')"
               " THEN 'demote'"
               " ELSE 'promote' END")
    with op.batch_alter_table("champion_events") as batch:
        batch.alter_column("action", existing_type=sa.String(16), nullable=False)
        batch.create_check_constraint("ck_champion_events_action", f"action IN {ACTIONS}")
        batch.create_index("ix_champion_events_champion_id", ["champion_id"])
    op.create_index("ix_champions_symbol_timeframe", "champions", ["symbol", "timeframe"])
    for state in ("live", "paper"):
        where = sa.text(f"state = '{state}'")
        op.create_index(f"uq_champions_one_{state}", "champions", ["symbol", "timeframe"],
                        unique=True, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for state in ("live", "paper"):
        op.drop_index(f"uq_champions_one_{state}", table_name="champions")
    op.drop_index("ix_champions_symbol_timeframe", table_name="champions")
    with op.batch_alter_table("champion_events") as batch:
        batch.drop_index("ix_champion_events_champion_id")
        batch.drop_constraint("ck_champion_events_action", type_="check")
        batch.drop_column("action")
