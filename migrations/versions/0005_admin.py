"""Admin API: admin tokens and what the admin features need in the schema.

Revision ID: 0005_admin
Revises: 0004_two_factor
Create Date: 2026-11-27

Why: placeholder in the revision chain so that parallel work (issue 6 (admin API)) can fill
in its schema without renumbering. Until then it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005_admin"
down_revision: str | Sequence[str] | None = "0004_two_factor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
