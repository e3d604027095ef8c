"""Security events: one vocabulary, emitted by the use cases, consumed by many sinks.

The names follow the OWASP Logging Vocabulary so audit rows, log lines and
metrics speak the same language. A use case calls `events.emit(...)` once per
decision; the composition root fans that out to the audit table, the JSON log
and the Prometheus counters. Who/where (request id, peer address, trace id)
come from the request context, not from call sites.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Detail = str | int | bool | None


class SecurityEvent(enum.StrEnum):
    USER_CREATED = "user_created"
    LOGIN_SUCCESS = "authn_login_success"
    LOGIN_FAIL = "authn_login_fail"
    LOGIN_LOCK = "authn_login_lock"
    LOGIN_FAIL_MAX = "authn_login_fail_max"
    TOKEN_REFRESHED = "authn_token_refreshed"
    TOKEN_REUSE = "authn_token_reuse"
    TOKEN_INVALID = "authn_token_invalid"
    LOGOUT = "authn_logout"
    SESSION_REVOKED = "session_revoked"
    PASSWORD_CHANGED = "password_changed"
    RATE_LIMITED = "excess_rate_limit_exceeded"
    AUTHZ_ADMIN = "authz_admin"
    # Account lifecycle (sso.domain.account, sso.domain.history).
    SESSION_CREATED = "session_created"
    LOGIN_NEW_DEVICE = "authn_login_new_device"
    VERIFICATION_SENT = "user_verification_sent"
    EMAIL_VERIFIED = "user_email_verified"
    EMAIL_VERIFY_FAIL = "user_email_verify_fail"
    PASSWORD_RESET_REQUESTED = "authn_password_reset_request"
    PASSWORD_RESET = "authn_password_reset"
    PASSWORD_RESET_FAIL = "authn_password_reset_fail"
    PASSWORD_CHANGE_FAIL = "authn_password_change_fail"
    DATA_EXPORTED = "user_data_exported"
    # Two-factor (sso.domain.two_factor).
    MFA_CHALLENGE = "authn_mfa_challenge_issued"
    MFA_SUCCESS = "authn_mfa_success"
    MFA_FAIL = "authn_mfa_fail"
    MFA_FAIL_MAX = "authn_mfa_fail_max"
    MFA_REPLAY = "authn_mfa_replay"
    MFA_ENROLL_STARTED = "authn_mfa_enroll_started"
    MFA_ENABLED = "authn_mfa_enabled"
    MFA_DISABLED = "authn_mfa_disabled"
    MFA_BACKUP_CODES_REGENERATED = "authn_mfa_backup_codes_regenerated"


class EventSink(Protocol):
    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        """Record one event. Must not raise for backend trouble of its own (log it)."""


@dataclass
class FanOut:
    """Sends every event to each sink in order (audit table, log, metrics)."""

    sinks: Sequence[EventSink] = field(default_factory=list)

    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        for sink in self.sinks:
            await sink.emit(event, user_id=user_id, target=target, outcome=outcome, details=details)


class LoggingSink:
    """Writes each event as one structured line on the `sso.audit` logger."""

    def __init__(self) -> None:
        import logging

        self._log = logging.getLogger("sso.audit")

    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        extra = {"event": event.value, "user_id": user_id, "target": target, "outcome": outcome}
        extra.update({f"detail_{k}": v for k, v in (details or {}).items()})
        self._log.info(event.value, extra=extra)
