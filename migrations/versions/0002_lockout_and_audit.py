"""Lockout counters on users; the append-only audit_events table.

Revision ID: 0002_lockout_and_audit
Revises: 0001_initial
Create Date: 2026-11-28

Why: per-account failure counters and lockout must be durable and shared by
every replica (SECURITY_CHECKLIST C1-C3, decision 1), and security decisions
need an audit trail nobody can rewrite (H2, I3). On both backends triggers
refuse UPDATE and DELETE of audit rows (and TRUNCATE on PostgreSQL), whatever
the role: the service's own connection cannot rewrite history. Retention is a
superuser's job (`ALTER TABLE audit_events DISABLE TRIGGER USER`, docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_lockout_and_audit"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

PG_GUARD = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""
PG_TRIGGERS = (
    "CREATE TRIGGER audit_events_no_rewrite BEFORE UPDATE OR DELETE ON audit_events"
    " FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
)
SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER audit_events_no_{op_name.lower()} BEFORE {op_name} ON audit_events"
    f" BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    for op_name in ("UPDATE", "DELETE")
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("last_failed_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("locked_until", Timestamp, nullable=True))
        batch.add_column(
            sa.Column("hard_locked", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    op.create_table(
        "audit_events",
        sa.Column("id", BigId, sa.Identity(always=False), nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("user_id", BigId, nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_ts"), "audit_events", ["ts"])
    op.create_index(op.f("ix_audit_events_user_id_ts"), "audit_events", ["user_id", "ts"])
    op.create_index(op.f("ix_audit_events_event_ts"), "audit_events", ["event", "ts"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_GUARD)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    # Dropping the table drops its triggers and indexes.
    op.drop_table("audit_events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_events_append_only()")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("hard_locked")
        batch.drop_column("locked_until")
        batch.drop_column("last_failed_at")
        batch.drop_column("failed_logins")
