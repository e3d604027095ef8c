"""TOTP two-factor: encrypted secrets, last used step, backup codes, MFA challenges.

Revision ID: 0004_two_factor
Revises: 0003_account_lifecycle
Create Date: 2026-11-27

Why: placeholder in the revision chain so that parallel work (issue 7 (TOTP)) can fill
in its schema without renumbering. Until then it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004_two_factor"
down_revision: str | Sequence[str] | None = "0003_account_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
