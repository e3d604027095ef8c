"""TOTP two-factor: encrypted secrets, last used step, backup codes, MFA challenges.

Revision ID: 0004_two_factor
Revises: 0003_account_lifecycle
Create Date: 2026-11-27

Why: TOTP needs its secret at rest (AES-256-GCM ciphertext only, G3), the last
accepted time step for replay protection updated by compare-and-swap (G2), a
per-account failure counter reserved before any HMAC (C5) and a pending
enrolment that becomes active only after a valid code (G4). Backup codes are
stored as SHA-256 digests of 120-bit codes (G5). MFA challenges live in the
database so any replica can finish a login; only the SHA-256 of the challenge
id is stored. See docs/two-factor.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_two_factor"
down_revision: str | Sequence[str] | None = "0003_account_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "totp_credentials",
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("enabled_at", Timestamp, nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("pending_expires_at", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        _user_fk("totp_credentials"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_totp_credentials")),
    )

    op.create_table(
        "backup_codes",
        sa.Column("id", BigId, sa.Identity(always=False), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("used_at", Timestamp, nullable=True),
        sa.CheckConstraint("length(code_hash) = 32", name=op.f("ck_backup_codes_code_hash_length")),
        _user_fk("backup_codes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_codes")),
    )
    op.create_index(op.f("ix_backup_codes_code_hash"), "backup_codes", ["code_hash"], unique=True)
    op.create_index(op.f("ix_backup_codes_user_id"), "backup_codes", ["user_id"])

    op.create_table(
        "mfa_challenges",
        sa.Column("id_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=False),
        sa.Column("ip", sa.Text(), nullable=False),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("used_at", Timestamp, nullable=True),
        sa.CheckConstraint("length(id_hash) = 32", name=op.f("ck_mfa_challenges_id_hash_length")),
        _user_fk("mfa_challenges"),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_mfa_challenges_app_id_apps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_mfa_challenges")),
    )
    op.create_index(op.f("ix_mfa_challenges_user_id"), "mfa_challenges", ["user_id"])
    op.create_index(op.f("ix_mfa_challenges_expires_at"), "mfa_challenges", ["expires_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table("mfa_challenges")
    op.drop_table("backup_codes")
    op.drop_table("totp_credentials")
