"""Sessions remember how they were authenticated (`amr`).

Revision ID: 0006_session_amr
Revises: 0005_admin
Create Date: 2026-11-27

Why: an access token's `amr` claim says how the user proved who they are
(`pwd`; `pwd otp mfa` after a TOTP second factor; `pwd mfa backup_code`).
Refresh issues new access tokens from the session alone, so the session has to
carry the methods of the login that opened it; before this revision every
refreshed token said `pwd`, and a relying app that requires `mfa` would have
sent an MFA user back to log in every five minutes. Space-separated method
names; existing sessions get `pwd`, what their refreshed tokens already said.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_session_amr"
down_revision: str | Sequence[str] | None = "0005_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("amr", sa.Text(), server_default=sa.text("'pwd'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("amr")
