"""`sso.v1.Account` two-factor RPCs: TOTP enrolment, backup codes, disabling."""

from __future__ import annotations


class TwoFactorRpcs:
    """Placeholder until the two-factor RPCs land."""
