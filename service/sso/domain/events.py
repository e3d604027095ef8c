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
