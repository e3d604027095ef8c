"""Account lifecycle: one-time account tokens, login history and known devices.

Revision ID: 0003_account_lifecycle
Revises: 0002_lockout_and_audit
Create Date: 2026-11-27

Why: email verification and password reset need single-use link tokens stored
only as SHA-256, bound to a user and a purpose (SECURITY_CHECKLIST D1-D4); the
user's login history and the devices seen per user back ListLoginHistory and
the new-device notice (docs/account.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_account_lifecycle"
down_revision: str | Sequence[str] | None = "0002_lockout_and_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "account_tokens",
        sa.Column("id", BigId, sa.Identity(always=False), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("used_at", Timestamp, nullable=True),
        sa.CheckConstraint(
            "length(token_hash) = 32", name=op.f("ck_account_tokens_token_hash_length")
        ),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'reset_password')",
            name=op.f("ck_account_tokens_purpose_known"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_account_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_tokens")),
    )
    op.create_index(
        op.f("ix_account_tokens_token_hash"), "account_tokens", ["token_hash"], unique=True
    )
    op.create_index(
        op.f("ix_account_tokens_user_id_purpose_created_at"),
        "account_tokens",
        ["user_id", "purpose", "created_at"],
    )
    op.create_index(op.f("ix_account_tokens_expires_at"), "account_tokens", ["expires_at"])

    op.create_table(
        "login_history",
        sa.Column("id", BigId, sa.Identity(always=False), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("ip", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=True),
        sa.Column("device_hash", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_history_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_history")),
    )
    op.create_index(op.f("ix_login_history_user_id_id"), "login_history", ["user_id", "id"])
    op.create_index(op.f("ix_login_history_ts"), "login_history", ["ts"])

    op.create_table(
        "known_devices",
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("device_hash", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("first_seen_at", Timestamp, nullable=False),
        sa.Column("last_seen_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_known_devices_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "device_hash", name=op.f("pk_known_devices")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table("known_devices")
    op.drop_table("login_history")
    op.drop_table("account_tokens")
