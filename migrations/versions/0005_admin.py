"""Admin API: app metadata, secret rotation with an overlap, the administrative lock.

Revision ID: 0005_admin
Revises: 0004_two_factor
Create Date: 2026-11-27

Why: the `sso.v1.Admin` API (docs/admin.md) manages apps and users.
- apps: a display name, redirect URIs (a JSON list as text), a per-app login
  rate limit (0 = no per-app limit), `updated_at` / `secret_rotated_at`, and the
  previous secret's ciphertext with the instant it stops working, so
  RotateAppSecret can let the old and the new secret both work for an overlap.
- users: `admin_locked`, an administrative lock that only UnlockUser lifts
  (unlike `hard_locked`, which a password reset clears).
- SQLite only: `users` and `apps` are recreated with AUTOINCREMENT. Without it
  SQLite hands a deleted row's id (the highest one) to the next insert, and now
  that users and apps can be deleted, a new account or app would inherit the
  identity that old legacy tokens, audit rows and clients still refer to.
  (Migrations run with SQLite foreign keys off, so the copy cascades nothing.)

`sessions.app_id` keeps its FK without ON DELETE on purpose: DeleteApp revokes,
denylists and deletes the app's sessions itself (in one transaction with the
app row), and deleting an app any other way fails loudly instead of silently
dropping live sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005_admin"
down_revision: str | Sequence[str] | None = "0004_two_factor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def _batch(table: str, *, autoincrement: bool) -> Any:
    """SQLite: recreate the table with (or without) AUTOINCREMENT; elsewhere plain ALTERs."""
    if op.get_bind().dialect.name != "sqlite":
        return op.batch_alter_table(table)
    return op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    )


def upgrade() -> None:
    with _batch("apps", autoincrement=True) as batch:
        batch.add_column(sa.Column("display_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("redirect_uris", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "login_rate_limit_per_minute",
                sa.Integer(),
                server_default=sa.text("0"),
                nullable=False,
            )
        )
        batch.add_column(sa.Column("previous_secret_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_secret_expires_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("updated_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("secret_rotated_at", Timestamp, nullable=True))
    with _batch("users", autoincrement=True) as batch:
        batch.add_column(
            sa.Column("admin_locked", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with _batch("users", autoincrement=False) as batch:
        batch.drop_column("admin_locked")
    with _batch("apps", autoincrement=False) as batch:
        batch.drop_column("secret_rotated_at")
        batch.drop_column("updated_at")
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_encrypted")
        batch.drop_column("login_rate_limit_per_minute")
        batch.drop_column("redirect_uris")
        batch.drop_column("display_name")
