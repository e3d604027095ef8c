"""A user's view of their own sessions: list, end one, end all.

The caller is whoever the access token says; a session of another user is
reported as not found (never as forbidden, which would confirm it exists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sso.domain.auth import AccessClaims, AuthService, session_ref
from sso.domain.events import SecurityEvent
from sso.domain.models import Session
from sso.errors import NotFound


@dataclass
class SessionService:
    auth: AuthService

    async def list(self, caller: AccessClaims) -> Sequence[Session]:
        return await self.auth.sessions.list_active(caller.user_id, self.auth.clock())

    async def revoke(self, caller: AccessClaims, session_id: str) -> bool:
        now = self.auth.clock()
        if not session_id or len(session_id) > 128:
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        session = await self.auth.sessions.revoke(
            session_id, user_id=caller.user_id, reason="user_revoked", now=now
        )
        if session is None:
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        await self.auth.end_sessions([session.id], now)
        await self.auth.events.emit(
            SecurityEvent.SESSION_REVOKED,
            user_id=caller.user_id,
            target=session_ref(session.id),
            details={"reason": "user_revoked", "count": 1},
        )
        return True

    async def revoke_all(self, caller: AccessClaims, *, keep_current: bool) -> int:
        keep = caller.session_id if keep_current else None
        revoked = await self.auth.revoke_all_sessions(
            caller.user_id, reason="user_revoked_all", keep=keep
        )
        await self.auth.events.emit(
            SecurityEvent.SESSION_REVOKED,
            user_id=caller.user_id,
            details={"reason": "user_revoked_all", "count": revoked},
        )
        return revoked
