"""`sso.v1.Admin`: thin translation between protobuf and `sso.domain.admin.AdminService`.

Why this module exists: the edge for administration. Handlers take
`(request, actor)`: they are served only through `sso.api.admin_auth` (the gate
decides the actor first), never registered directly. The only responses that
carry a secret are CreateApp and RotateAppSecret, once; `tests/admin` walks
every response type of admin.proto to keep it that way.
"""

from __future__ import annotations

from datetime import datetime

from sso.domain.admin import Actor, AdminService, AppInfo, UserInfo
from sso_proto.sso.v1 import admin_pb2


def _unix(value: datetime | None) -> int:
    return 0 if value is None else int(value.timestamp())


def app_message(info: AppInfo, now: datetime) -> admin_pb2.App:
    app = info.app
    live_previous = len(app.secrets_at(now)) > 1  # the previous secret still works
    return admin_pb2.App(
        app_id=app.id,
        name=app.name,
        display_name=info.display_name,
        redirect_uris=list(info.redirect_uris),
        login_rate_limit_per_minute=app.login_rate_limit_per_minute,
        created_at=_unix(app.created_at),
        updated_at=_unix(info.updated_at),
        secret_rotated_at=_unix(info.secret_rotated_at),
        previous_secret_expires_at=_unix(app.previous_secret_expires_at) if live_previous else 0,
    )


def user_message(info: UserInfo, now: datetime, *, totp: bool = False) -> admin_pb2.User:
    temporary = info.locked_until is not None and info.locked_until > now
    without_end = info.admin_locked or info.hard_locked
    return admin_pb2.User(
        user_id=info.id,
        email=info.email,
        email_verified=info.email_verified,
        is_admin=info.is_admin,
        locked=info.locked(now),
        locked_until=_unix(info.locked_until) if temporary and not without_end else 0,
        totp_enabled=totp,
        created_at=_unix(info.created_at),
        last_login_at=_unix(info.last_login_at),
        active_sessions=info.active_sessions,
        password_scheme=info.password_scheme,
    )


class AdminV1:
    """The Admin methods; each takes the request and the gate's `Actor`."""

    def __init__(self, admin: AdminService) -> None:
        self._admin = admin

    def _app(self, info: AppInfo) -> admin_pb2.App:
        return app_message(info, self._admin.now())

    async def _user(self, info: UserInfo) -> admin_pb2.User:
        totp = await self._admin.user_totp(info.id)
        return user_message(info, self._admin.now(), totp=totp)

    # -- apps ------------------------------------------------------------------------

    async def CreateApp(
        self, request: admin_pb2.CreateAppRequest, actor: Actor
    ) -> admin_pb2.CreateAppResponse:
        info, secret = await self._admin.create_app(
            actor,
            name=request.name,
            display_name=request.display_name,
            redirect_uris=list(request.redirect_uris),
            login_rate_limit_per_minute=request.login_rate_limit_per_minute,
            app_id=request.app_id,
            secret=request.secret,
        )
        return admin_pb2.CreateAppResponse(app=self._app(info), secret=secret)

    async def GetApp(
        self, request: admin_pb2.GetAppRequest, actor: Actor
    ) -> admin_pb2.GetAppResponse:
        return admin_pb2.GetAppResponse(
            app=self._app(await self._admin.get_app(actor, request.app_id))
        )

    async def ListApps(
        self, request: admin_pb2.ListAppsRequest, actor: Actor
    ) -> admin_pb2.ListAppsResponse:
        rows, token = await self._admin.list_apps(
            actor, size=request.page_size, token=request.page_token
        )
        return admin_pb2.ListAppsResponse(apps=[self._app(r) for r in rows], next_page_token=token)

    async def UpdateApp(
        self, request: admin_pb2.UpdateAppRequest, actor: Actor
    ) -> admin_pb2.UpdateAppResponse:
        info = await self._admin.update_app(
            actor,
            request.app_id,
            list(request.update_mask),
            display_name=request.display_name,
            redirect_uris=list(request.redirect_uris),
            login_rate_limit_per_minute=request.login_rate_limit_per_minute,
        )
        return admin_pb2.UpdateAppResponse(app=self._app(info))

    async def DeleteApp(
        self, request: admin_pb2.DeleteAppRequest, actor: Actor
    ) -> admin_pb2.DeleteAppResponse:
        await self._admin.delete_app(actor, request.app_id)
        return admin_pb2.DeleteAppResponse(deleted=True)

    async def RotateAppSecret(
        self, request: admin_pb2.RotateAppSecretRequest, actor: Actor
    ) -> admin_pb2.RotateAppSecretResponse:
        info, secret = await self._admin.rotate_app_secret(
            actor, request.app_id, request.overlap_seconds
        )
        return admin_pb2.RotateAppSecretResponse(app=self._app(info), secret=secret)

    # -- users -----------------------------------------------------------------------

    async def ListUsers(
        self, request: admin_pb2.ListUsersRequest, actor: Actor
    ) -> admin_pb2.ListUsersResponse:
        rows, token = await self._admin.list_users(
            actor,
            size=request.page_size,
            token=request.page_token,
            email_prefix=request.email_prefix,
        )
        return admin_pb2.ListUsersResponse(
            users=[await self._user(r) for r in rows], next_page_token=token
        )

    async def GetUser(
        self, request: admin_pb2.GetUserRequest, actor: Actor
    ) -> admin_pb2.GetUserResponse:
        info = await self._admin.get_user(actor, request.user_id)
        return admin_pb2.GetUserResponse(user=await self._user(info))

    async def LockUser(
        self, request: admin_pb2.LockUserRequest, actor: Actor
    ) -> admin_pb2.LockUserResponse:
        info, revoked = await self._admin.lock_user(actor, request.user_id, request.reason)
        return admin_pb2.LockUserResponse(user=await self._user(info), sessions_revoked=revoked)

    async def UnlockUser(
        self, request: admin_pb2.UnlockUserRequest, actor: Actor
    ) -> admin_pb2.UnlockUserResponse:
        info = await self._admin.unlock_user(actor, request.user_id)
        return admin_pb2.UnlockUserResponse(user=await self._user(info))

    async def SetAdmin(
        self, request: admin_pb2.SetAdminRequest, actor: Actor
    ) -> admin_pb2.SetAdminResponse:
        info = await self._admin.set_admin(actor, request.user_id, request.is_admin)
        return admin_pb2.SetAdminResponse(user=await self._user(info))

    async def DeleteUser(
        self, request: admin_pb2.DeleteUserRequest, actor: Actor
    ) -> admin_pb2.DeleteUserResponse:
        await self._admin.delete_user(actor, request.user_id)
        return admin_pb2.DeleteUserResponse(deleted=True)

    async def RevokeUserSessions(
        self, request: admin_pb2.RevokeUserSessionsRequest, actor: Actor
    ) -> admin_pb2.RevokeUserSessionsResponse:
        revoked = await self._admin.revoke_user_sessions(actor, request.user_id)
        return admin_pb2.RevokeUserSessionsResponse(revoked=revoked)

    async def ExportUser(
        self, request: admin_pb2.ExportUserRequest, actor: Actor
    ) -> admin_pb2.ExportUserResponse:
        return admin_pb2.ExportUserResponse(
            json=await self._admin.export_user(actor, request.user_id)
        )

    # -- statistics ------------------------------------------------------------------

    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, actor: Actor
    ) -> admin_pb2.GetStatsResponse:
        stats = await self._admin.stats(actor, request.days)
        return admin_pb2.GetStatsResponse(
            users=stats.users,
            verified_users=stats.verified_users,
            active_sessions=stats.active_sessions,
            admins=stats.admins,
            locked_users=stats.locked_users,
            legacy_password_hashes=stats.legacy_password_hashes,
            apps=stats.apps,
            logins_per_day=[
                admin_pb2.DailyLogins(day=d.day, succeeded=d.succeeded, failed=d.failed)
                for d in stats.logins_per_day
            ],
        )
