"""`sso.v1.Account` lifecycle RPCs: email verification, password reset, history, export."""

from __future__ import annotations


class LifecycleRpcs:
    """Placeholder until the lifecycle RPCs land."""
