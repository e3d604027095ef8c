"""Login history, new-device notices, connected apps and the user's own data export.

Why this module exists: the account page's read side. History is fed by the
login's security events rather than by the login code itself: `HistoryService`
is an `EventSink` on the fan-out; `session_created` (a successful login, with
app, user agent and device name) and the failures of a known account
(`authn_login_fail`, `…_lock`, `…_fail_max`) become history rows, written in
the background so no login waits for them.

A *device* is the SHA-256 of the user agent and the client-chosen device name
(`account_models.device_hash`). The first login from a device the user has not
used before mails a notice, except on the very first login of an account
(nothing to compare with yet). Both values come from the client, so this is a
courtesy notice, not a defence against a careful attacker (docs/account.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sso.domain.account import Background
from sso.domain.account_models import LoginRecord, LoginResult, Mail, MailKind, device_hash
from sso.domain.auth import AccessClaims, AuthService, session_ref
from sso.domain.events import Detail, SecurityEvent
from sso.domain.export import UserExport
from sso.domain.ports import AccountTokenRepository, LoginHistoryRepository, Mailer
from sso.errors import InvalidArgument, NotFound
from sso.logs import client_ip_var

MAX_PAGE = 100
DEFAULT_PAGE = 20
EXPORT_HISTORY_ROWS = 1000
_FAILURES = {
    SecurityEvent.LOGIN_FAIL: LoginResult.FAILURE,
    SecurityEvent.LOGIN_LOCK: LoginResult.LOCKED,
    SecurityEvent.LOGIN_FAIL_MAX: LoginResult.LOCKED,
}


@dataclass(frozen=True, slots=True)
class ConnectedApp:
    app_id: int
    name: str
    sessions: int
    first_login_at: datetime
    last_used_at: datetime


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _text(details: Mapping[str, Detail] | None, key: str) -> str:
    value = (details or {}).get(key)
    return value if isinstance(value, str) else ""


@dataclass
class HistoryService:
    auth: AuthService
    history: LoginHistoryRepository
    tokens: AccountTokenRepository
    mailer: Mailer
    background: Background = field(default_factory=Background)
    notify_new_device: bool = True

    # -- the event sink: login → history row, new device → notice -------------------------

    async def emit(
        self,
        event: SecurityEvent,
        *,
        user_id: int | None = None,
        target: str | None = None,
        outcome: str = "success",
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        if user_id is None:
            return
        ip, now = client_ip_var.get(), self.auth.clock()
        if event is SecurityEvent.SESSION_CREATED:
            app_id = (details or {}).get("app_id")
            record = LoginRecord(
                user_id=user_id,
                ts=now,
                result=LoginResult.SUCCESS,
                ip=ip,
                user_agent=_text(details, "user_agent"),
                device_name=_text(details, "device_name"),
                app_id=app_id if isinstance(app_id, int) else None,
            )
            self.background.spawn(self._login_succeeded(record), "login_history")
        elif event in _FAILURES:
            result = _FAILURES[event]
            reason = (details or {}).get("reason")
            if reason == "locked":
                result = LoginResult.LOCKED
            elif reason == "email_not_verified":
                result = LoginResult.REFUSED
            record = LoginRecord(user_id=user_id, ts=now, result=result, ip=ip)
            self.background.spawn(self.history.record(record), "login_history")

    async def _login_succeeded(self, record: LoginRecord) -> None:
        dh = device_hash(record.user_agent, record.device_name)
        new, known_before = await self.history.record_success(replace(record, device_hash=dh))
        if not new or known_before == 0 or not self.notify_new_device:
            return
        user = await self.auth.users.get_by_id(record.user_id)
        if user is None:
            return
        app = "unknown"
        if record.app_id is not None:
            try:
                app = (await self.auth.app(record.app_id)).name
            except NotFound:
                app = f"app {record.app_id}"
        device = " / ".join(v for v in (record.device_name, record.user_agent) if v) or "unknown"
        values = {
            "email": user.email,
            "when": record.ts.strftime("%Y-%m-%d %H:%M UTC"),
            "ip": record.ip or "unknown",
            "device": device[:200],
            "app": app,
        }
        self.mailer.submit(Mail(MailKind.NEW_DEVICE, user.email, values))
        await self.auth.events.emit(
            SecurityEvent.LOGIN_NEW_DEVICE,
            user_id=user.id,
            details={"device": dh[:16], "known_devices": known_before},
        )

    # -- reads and revocation ---------------------------------------------------------------

    async def list_history(
        self, caller: AccessClaims, page_size: int, page_token: str
    ) -> tuple[Sequence[LoginRecord], str]:
        """One page, newest first, and the token of the next page ("" after the last)."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", reason="PAGE_SIZE_INVALID")
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        before: int | None = None
        if page_token:
            if not page_token.isdigit() or len(page_token) > 19:
                raise InvalidArgument("invalid page_token", reason="PAGE_TOKEN_INVALID")
            before = int(page_token)
        rows = await self.history.page(caller.user_id, before_id=before, limit=size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return rows, (str(rows[-1].id) if more and rows else "")

    async def connected_apps(self, caller: AccessClaims) -> list[ConnectedApp]:
        live = await self.auth.sessions.list_active(caller.user_id, self.auth.clock())
        by_app: dict[int, list[Any]] = {}
        for s in live:
            by_app.setdefault(s.app_id, []).append(s)
        apps = []
        for app_id, sessions in sorted(by_app.items()):
            try:
                name = (await self.auth.app(app_id)).name
            except NotFound:
                name = ""
            apps.append(
                ConnectedApp(
                    app_id,
                    name,
                    len(sessions),
                    min(s.created_at for s in sessions),
                    max(s.last_used_at for s in sessions),
                )
            )
        return apps

    async def revoke_app(self, caller: AccessClaims, app_id: int) -> int:
        """End every live session of the caller in one app (the caller's own included)."""
        if app_id <= 0:
            raise InvalidArgument("app_id is required", reason="APP_ID_REQUIRED")
        now = self.auth.clock()
        live = await self.auth.sessions.list_active(caller.user_id, now)
        ended = []
        for s in live:
            if s.app_id != app_id:
                continue
            revoked = await self.auth.sessions.revoke(
                s.id, user_id=caller.user_id, reason="app_access_revoked", now=now
            )
            if revoked is not None:
                ended.append(revoked.id)
        await self.auth.end_sessions(ended, now)
        await self.auth.events.emit(
            SecurityEvent.SESSION_REVOKED,
            user_id=caller.user_id,
            target=session_ref(ended[0]) if len(ended) == 1 else f"app:{app_id}",
            details={"reason": "app_access_revoked", "count": len(ended), "app_id": app_id},
        )
        return len(ended)

    # -- export ---------------------------------------------------------------------------

    def register_sections(self, exporter: UserExport) -> None:
        exporter.register("login_history", self._history_section)
        exporter.register("known_devices", self._devices_section)
        exporter.register("email_verification", self._verification_section)

    async def export(self, caller: AccessClaims, exporter: UserExport) -> str:
        document = await exporter.export(caller.user_id)
        await self.auth.events.emit(
            SecurityEvent.DATA_EXPORTED,
            user_id=caller.user_id,
            details={"sections": len(document)},
        )
        return json.dumps(document, sort_keys=True, default=str)

    async def _history_section(self, user_id: int) -> object:
        rows = await self.history.page(user_id, before_id=None, limit=EXPORT_HISTORY_ROWS)
        return [
            {
                "time": _iso(r.ts),
                "result": r.result.value,
                "ip": r.ip,
                "user_agent": r.user_agent,
                "device_name": r.device_name,
                "app_id": r.app_id,
            }
            for r in rows
        ]

    async def _devices_section(self, user_id: int) -> object:
        return [
            {
                "device": d.device_hash,
                "user_agent": d.user_agent,
                "device_name": d.device_name,
                "first_seen_at": _iso(d.first_seen_at),
                "last_seen_at": _iso(d.last_seen_at),
            }
            for d in await self.history.devices(user_id)
        ]

    async def _verification_section(self, user_id: int) -> object:
        user = await self.auth.users.get_by_id(user_id)
        links = await self.tokens.list_for_user(user_id)
        return {
            "email_verified": bool(user and user.email_verified),
            # Links sent by mail: when, for what, whether used; never the token or its hash.
            "links": [
                {
                    "purpose": t.purpose.value,
                    "created_at": _iso(t.created_at),
                    "expires_at": _iso(t.expires_at),
                    "used_at": _iso(t.used_at),
                }
                for t in links
            ],
        }
