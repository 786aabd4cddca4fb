"""The champions table and its append-only event log.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "champions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("timeframe", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("bundle_path", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "key", name="uq_champions_run_key"),
        sa.CheckConstraint("state IN ('eligible', 'paper', 'live', 'retired')",
                           name="ck_champions_state"),
    )
    op.create_table(
        "champion_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("champion_id", sa.Integer,
                  sa.ForeignKey("champions.id", name="fk_champion_events_champion",
                                ondelete="RESTRICT"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("champion_events")
    op.drop_table("champions")
