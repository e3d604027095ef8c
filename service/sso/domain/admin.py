"""Admin use cases (`sso.v1.Admin`): apps with secret rotation, users, GDPR export, statistics.

Why this module exists: administration changes security state (who is admin,
who is locked out, which app secrets work), so its rules belong in the domain,
next to the login rules they interact with, and every change is written to the
audit trail in one vocabulary (`authz_admin`, with the acting credential, the
target and the change; never a secret). Who may call is decided before any of
this runs (`sso.api.admin_auth`); this module is told the `Actor`.

Rules worth knowing (docs/admin.md):
- an app secret is generated here (256 bits) and returned once; rotation keeps
  the previous secret working for an overlap, after which only the new one does;
- deleting or rotating an app drops this process's app cache at once; other
  processes see it within `tokens.app_cache_ttl`;
- LockUser is an administrative lock (only UnlockUser lifts it) and ends the
  user's sessions; DeleteUser and DeleteApp denylist the live sessions they
  remove, so the access tokens of those sessions stop validating at once;
- an admin user cannot lock, delete or demote themself (no accidental loss of
  the last way in).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sso.domain.admin_records import (
    APP_NOT_FOUND,
    MAX_OVERLAP,
    MAX_SECRET,
    MAX_STATS_DAYS,
    MIN_IMPORTED_SECRET,
    UPDATABLE,
    USER_NOT_FOUND,
    Actor,
    AdminApps,
    AdminStore,
    AppInfo,
    DailyLogins,
    Stats,
    UserInfo,
    check_app_id,
    check_rate_limit,
    check_redirect_uris,
    check_text,
    check_user_id,
    decode_page_token,
    describe_change,
    encode_page_token,
    new_app_secret,
    page_size,
    password_scheme,
)
from sso.domain.auth import AuthService
from sso.domain.events import Detail, SecurityEvent
from sso.domain.export import UserExport
from sso.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = [
    "Actor",
    "AdminApps",
    "AdminService",
    "AdminStore",
    "AppInfo",
    "DailyLogins",
    "Stats",
    "UserInfo",
    "password_scheme",
    "register_export_sections",
]


# -- the use cases ------------------------------------------------------------------


@dataclass
class AdminService:
    auth: AuthService
    apps: AdminApps
    store: AdminStore
    exporter: UserExport = field(default_factory=UserExport)
    secret_overlap: timedelta = timedelta(hours=24)
    # Optional facts owned by other features (e.g. two-factor registers "is TOTP on?").
    totp_enabled: Callable[[int], Awaitable[bool]] | None = None

    def now(self) -> datetime:
        return self.auth.clock()

    async def audit(
        self,
        actor: Actor,
        action: str,
        target: str,
        *,
        outcome: str = "success",
        **details: Detail,
    ) -> None:
        await self.auth.events.emit(
            SecurityEvent.AUTHZ_ADMIN,
            user_id=actor.user_id,
            target=target,
            outcome=outcome,
            details={"action": action, "actor": actor.label, **details},
        )

    # -- apps ------------------------------------------------------------------------

    async def create_app(
        self,
        actor: Actor,
        *,
        name: str,
        display_name: str = "",
        redirect_uris: Sequence[str] = (),
        login_rate_limit_per_minute: int = 0,
        app_id: int = 0,
        secret: str = "",
    ) -> tuple[AppInfo, str]:
        """Create an app; returns it and its secret (the only time the secret leaves)."""
        name = check_text(name, "name", required=True)
        display = check_text(display_name, "display_name", required=False)
        uris = check_redirect_uris(redirect_uris)
        limit = check_rate_limit(login_rate_limit_per_minute)
        if app_id < 0:
            raise InvalidArgument("invalid app_id", reason="APP_ID_INVALID")
        if secret and not MIN_IMPORTED_SECRET <= len(secret) <= MAX_SECRET:
            raise InvalidArgument(
                f"an imported secret must have {MIN_IMPORTED_SECRET}-{MAX_SECRET} characters",
                reason="SECRET_INVALID",
            )
        value = secret or new_app_secret()
        info = await self.apps.create_info(
            name,
            value,
            app_id=app_id or None,
            display_name=display,
            redirect_uris=uris,
            login_rate_limit_per_minute=limit,
        )
        self.auth.forget_apps()
        await self.audit(
            actor,
            "create_app",
            f"app:{info.app.id}",
            change=describe_change(
                name=name,
                display_name=display,
                redirect_uris=list(uris),
                login_rate_limit_per_minute=limit,
                secret="imported" if secret else "generated",
            ),
        )
        return info, value

    async def get_app(self, actor: Actor, app_id: int) -> AppInfo:
        info = await self.apps.get_info(check_app_id(app_id))
        if info is None:
            raise NotFound(APP_NOT_FOUND, reason="APP_NOT_FOUND")
        await self.audit(actor, "get_app", f"app:{app_id}")
        return info

    async def list_apps(
        self, actor: Actor, *, size: int, token: str
    ) -> tuple[Sequence[AppInfo], str]:
        limit = page_size(size)
        rows = await self.apps.page(after_id=decode_page_token("a", token), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token("a", rows[-1].app.id) if more and rows else ""
        await self.audit(actor, "list_apps", "apps", count=len(rows))
        return rows, next_token

    async def update_app(
        self,
        actor: Actor,
        app_id: int,
        mask: Sequence[str],
        *,
        display_name: str = "",
        redirect_uris: Sequence[str] = (),
        login_rate_limit_per_minute: int = 0,
    ) -> AppInfo:
        check_app_id(app_id)
        unknown = set(mask) - UPDATABLE
        if unknown or not mask:
            raise InvalidArgument(
                f"update_mask must name some of {sorted(UPDATABLE)}", reason="UPDATE_MASK_INVALID"
            )
        before = await self.apps.get_info(app_id)
        if before is None:
            raise NotFound(APP_NOT_FOUND, reason="APP_NOT_FOUND")
        display = check_text(display_name, "display_name", required=False)
        uris = check_redirect_uris(redirect_uris)
        limit = check_rate_limit(login_rate_limit_per_minute)
        info = await self.apps.update(
            app_id,
            display_name=display if "display_name" in mask else None,
            redirect_uris=uris if "redirect_uris" in mask else None,
            login_rate_limit_per_minute=limit if "login_rate_limit_per_minute" in mask else None,
        )
        if info is None:
            raise NotFound(APP_NOT_FOUND, reason="APP_NOT_FOUND")
        self.auth.forget_apps()
        change: dict[str, object] = {}
        if "display_name" in mask:
            change["display_name"] = [before.display_name, info.display_name]
        if "redirect_uris" in mask:
            change["redirect_uris"] = [list(before.redirect_uris), list(info.redirect_uris)]
        if "login_rate_limit_per_minute" in mask:
            change["login_rate_limit_per_minute"] = [
                before.app.login_rate_limit_per_minute,
                info.app.login_rate_limit_per_minute,
            ]
        await self.audit(actor, "update_app", f"app:{app_id}", change=describe_change(**change))
        return info

    async def delete_app(self, actor: Actor, app_id: int) -> int:
        """Delete the app and its sessions; returns how many live sessions ended."""
        now = self.now()
        self.auth.forget_apps()
        live = await self.apps.delete(check_app_id(app_id), now=now)
        self.auth.forget_apps()  # a Login that read the app meanwhile must not keep it
        if live is None:
            raise NotFound(APP_NOT_FOUND, reason="APP_NOT_FOUND")
        await self.auth.end_sessions(live, now)
        await self.audit(
            actor, "delete_app", f"app:{app_id}", change=describe_change(sessions_ended=len(live))
        )
        return len(live)

    async def rotate_app_secret(
        self, actor: Actor, app_id: int, overlap_seconds: int = 0
    ) -> tuple[AppInfo, str]:
        if overlap_seconds < 0 or timedelta(seconds=overlap_seconds) > MAX_OVERLAP:
            raise InvalidArgument("overlap_seconds out of range", reason="OVERLAP_INVALID")
        overlap = timedelta(seconds=overlap_seconds) if overlap_seconds else self.secret_overlap
        now = self.now()
        secret = new_app_secret()
        info = await self.apps.rotate_secret(
            check_app_id(app_id), secret, previous_until=now + overlap, now=now
        )
        if info is None:
            raise NotFound(APP_NOT_FOUND, reason="APP_NOT_FOUND")
        self.auth.forget_apps()
        await self.audit(
            actor,
            "rotate_app_secret",
            f"app:{app_id}",
            change=describe_change(previous_secret_expires_at=(now + overlap).isoformat()),
        )
        return info, secret

    # -- users -----------------------------------------------------------------------

    async def _user(self, user_id: int) -> UserInfo:
        info = await self.store.get_user(check_user_id(user_id), self.now())
        if info is None:
            raise NotFound(USER_NOT_FOUND, reason="USER_NOT_FOUND")
        return info

    async def user_totp(self, user_id: int) -> bool:
        return False if self.totp_enabled is None else await self.totp_enabled(user_id)

    async def list_users(
        self, actor: Actor, *, size: int, token: str, email_prefix: str
    ) -> tuple[Sequence[UserInfo], str]:
        limit = page_size(size)
        prefix = check_text(email_prefix, "email_prefix", required=False, max_chars=254).casefold()
        rows = await self.store.list_users(
            after_id=decode_page_token("u", token),
            limit=limit + 1,
            email_prefix=prefix,
            now=self.now(),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token("u", rows[-1].id) if more and rows else ""
        await self.audit(actor, "list_users", "users", count=len(rows), filtered=bool(prefix))
        return rows, next_token

    async def get_user(self, actor: Actor, user_id: int) -> UserInfo:
        info = await self._user(user_id)
        await self.audit(actor, "get_user", f"user:{user_id}")
        return info

    def _not_self(self, actor: Actor, user_id: int, action: str) -> None:
        if actor.user_id == user_id:
            raise FailedPrecondition(
                f"an administrator cannot {action} their own account", reason="SELF_ACTION"
            )

    async def lock_user(self, actor: Actor, user_id: int, reason: str = "") -> tuple[UserInfo, int]:
        self._not_self(actor, check_user_id(user_id), "lock")
        note = check_text(reason, "reason", required=False, max_chars=500)
        if not await self.store.set_admin_lock(user_id, True):
            raise NotFound(USER_NOT_FOUND, reason="USER_NOT_FOUND")
        revoked = await self.auth.revoke_all_sessions(user_id, reason="admin_locked")
        info = await self._user(user_id)
        await self.audit(
            actor,
            "lock_user",
            f"user:{user_id}",
            change=describe_change(admin_locked=[False, True], sessions_revoked=revoked),
            reason=note or None,
        )
        return info, revoked

    async def unlock_user(self, actor: Actor, user_id: int) -> UserInfo:
        if not await self.store.set_admin_lock(check_user_id(user_id), False):
            raise NotFound(USER_NOT_FOUND, reason="USER_NOT_FOUND")
        await self.auth.unlock(user_id, actor_id=actor.user_id)  # lockout counter and its event
        info = await self._user(user_id)
        await self.audit(
            actor, "unlock_user", f"user:{user_id}", change=describe_change(admin_locked=False)
        )
        return info

    async def set_admin(self, actor: Actor, user_id: int, is_admin: bool) -> UserInfo:
        if not is_admin:
            self._not_self(actor, check_user_id(user_id), "demote")
        before = await self._user(user_id)
        if not await self.auth.users.set_admin(user_id, is_admin):
            raise NotFound(USER_NOT_FOUND, reason="USER_NOT_FOUND")
        info = await self._user(user_id)
        await self.audit(
            actor,
            "set_admin",
            f"user:{user_id}",
            change=describe_change(is_admin=[before.is_admin, is_admin]),
        )
        return info

    async def delete_user(self, actor: Actor, user_id: int) -> None:
        self._not_self(actor, check_user_id(user_id), "delete")
        now = self.now()
        live = await self.store.delete_user(user_id, now)
        if live is None:
            raise NotFound(USER_NOT_FOUND, reason="USER_NOT_FOUND")
        await self.auth.end_sessions(live, now)
        await self.audit(
            actor,
            "delete_user",
            f"user:{user_id}",
            change=describe_change(sessions_ended=len(live)),
        )

    async def revoke_user_sessions(self, actor: Actor, user_id: int) -> int:
        await self._user(user_id)
        revoked = await self.auth.revoke_all_sessions(user_id, reason="admin_revoked")
        await self.audit(
            actor,
            "revoke_user_sessions",
            f"user:{user_id}",
            change=describe_change(revoked=revoked),
        )
        return revoked

    async def export_user(self, actor: Actor, user_id: int) -> str:
        await self._user(user_id)
        document = {
            "format": "sso.user-export/v1",
            "user_id": user_id,
            "exported_at": self.now().isoformat(),
            "sections": await self.exporter.export(user_id),
        }
        await self.audit(actor, "export_user", f"user:{user_id}")
        return json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)

    # -- statistics ------------------------------------------------------------------

    async def stats(self, actor: Actor, days: int = 0) -> Stats:
        if not 0 <= days <= MAX_STATS_DAYS:
            raise InvalidArgument(f"days must be 0-{MAX_STATS_DAYS}", reason="DAYS_INVALID")
        now = self.now()
        count = days or 30
        start = (now - timedelta(days=count - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        stats = await self.store.stats(now, start)
        by_day = {d.day: d for d in stats.logins_per_day}
        filled = tuple(
            by_day.get(day, DailyLogins(day, 0, 0))
            for day in ((start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(count))
        )
        await self.audit(actor, "get_stats", "stats", days=count)
        return Stats(
            users=stats.users,
            verified_users=stats.verified_users,
            active_sessions=stats.active_sessions,
            admins=stats.admins,
            locked_users=stats.locked_users,
            legacy_password_hashes=stats.legacy_password_hashes,
            apps=stats.apps,
            logins_per_day=filled,
        )


def register_export_sections(exporter: UserExport, store: AdminStore) -> None:
    """The sections the admin feature owns: profile (no hash), sessions, audit events."""

    async def profile(user_id: int) -> object:
        return await store.user_profile(user_id)

    async def sessions(user_id: int) -> object:
        return list(await store.user_sessions(user_id))

    async def audit_events(user_id: int) -> object:
        return list(await store.user_audit_events(user_id))

    exporter.register("profile", profile)
    exporter.register("sessions", sessions)
    exporter.register("audit_events", audit_events)
