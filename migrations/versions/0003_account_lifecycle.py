"""Account lifecycle: one-time tokens, login history and known devices.

Revision ID: 0003_account_lifecycle
Revises: 0002_lockout_and_audit
Create Date: 2026-11-27

Why: placeholder in the revision chain so that parallel work (issue 7: mail, verification, reset,
history) can fill in its schema without renumbering. Until then it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003_account_lifecycle"
down_revision: str | Sequence[str] | None = "0002_lockout_and_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
