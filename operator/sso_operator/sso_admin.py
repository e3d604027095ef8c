"""The operator's client of an SSO instance's Admin API (``sso.v1.Admin``).

Why this module exists: ClientApps are registered, compared, rotated and deleted
through the instance's gRPC Admin API, and every call needs the same care: one
channel per endpoint (reused across reconciles), the admin token as bearer
metadata, a deadline, and a failure mapped to the kopf error that retries it
correctly: an unreachable or overloaded server is temporary; a refused token is
temporary too but needs a person (a slow retry and a condition that says so);
a request the server calls invalid is permanent for this spec. The contract is
``service/proto/sso/v1/admin.proto``; only the generated stubs are imported,
never the service itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import kopf

from sso_operator.clientapp import DesiredApp, ServerApp
from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc

UNAVAILABLE_DELAY = 5.0
DENIED_DELAY = 60.0
OTHER_DELAY = 10.0
PAGE_SIZE = 100

_channels: dict[tuple[int, str], grpc.aio.Channel] = {}


class AdminUnavailable(kopf.TemporaryError):
    """The Admin API could not answer now (down, overloaded, deadline); retried soon."""

    reason = "InstanceUnreachable"


class AdminDenied(kopf.TemporaryError):
    """The Admin API refused the operator's admin token; retried slowly, a person must look."""

    reason = "AdminAccessDenied"


class AdminRejected(kopf.PermanentError):
    """The Admin API called the request invalid; the same spec cannot succeed."""

    reason = "RejectedByInstance"


class AppNotFound(Exception):
    """The app does not exist on the server (deleted behind the operator's back)."""


class AppAlreadyExists(Exception):
    """CreateApp found the name or the requested app id taken."""


def translate(error: grpc.aio.AioRpcError, action: str) -> Exception:
    """The exception for a failed Admin call: a kopf error, or :class:`AppNotFound` and co."""
    code = error.code()
    detail = error.details() or code.name
    message = f"{action} failed: {code.name}: {detail}"
    if code == grpc.StatusCode.NOT_FOUND:
        return AppNotFound(message)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AppAlreadyExists(message)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return AdminUnavailable(message, delay=UNAVAILABLE_DELAY)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return AdminDenied(
            f"{message} (check the instance's admin token Secret and the admin allow-list)",
            delay=DENIED_DELAY,
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return AdminRejected(message)
    return AdminUnavailable(message, delay=OTHER_DELAY)


def channel(endpoint: str) -> grpc.aio.Channel:
    """The shared channel to ``endpoint`` for the running event loop (created on first use)."""
    key = (id(asyncio.get_running_loop()), endpoint)
    found = _channels.get(key)
    if found is None:
        found = _channels[key] = grpc.aio.insecure_channel(endpoint)
    return found


async def close_channels() -> None:
    """Close every channel of the running loop (operator shutdown)."""
    loop = id(asyncio.get_running_loop())
    for key in [key for key in _channels if key[0] == loop]:
        await _channels.pop(key).close()


def server_app(app: admin_pb2.App) -> ServerApp:
    return ServerApp(
        app_id=app.app_id,
        name=app.name,
        display_name=app.display_name,
        redirect_uris=tuple(app.redirect_uris),
        login_rate_limit_per_minute=app.login_rate_limit_per_minute,
        secret_rotated_at=app.secret_rotated_at,
    )


def create_request(
    desired: DesiredApp, *, app_id: int = 0, secret: str = ""
) -> admin_pb2.CreateAppRequest:
    """CreateApp for ``desired``; ``app_id``/``secret`` re-create an app with its old identity."""
    return admin_pb2.CreateAppRequest(
        name=desired.name,
        display_name=desired.display_name,
        redirect_uris=list(desired.redirect_uris),
        login_rate_limit_per_minute=desired.login_rate_limit_per_minute,
        app_id=app_id,
        secret=secret,
    )


def update_request(
    app_id: int, desired: DesiredApp, mask: Sequence[str]
) -> admin_pb2.UpdateAppRequest:
    return admin_pb2.UpdateAppRequest(
        app_id=app_id,
        update_mask=list(mask),
        display_name=desired.display_name,
        redirect_uris=list(desired.redirect_uris),
        login_rate_limit_per_minute=desired.login_rate_limit_per_minute,
    )


class AdminClient:
    """Admin calls against one instance, authenticated with its admin token."""

    def __init__(self, endpoint: str, token: str, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._stub = admin_pb2_grpc.AdminStub(channel(endpoint))

    def _action(self, what: str) -> str:
        return f"{what} at {self.endpoint}"

    async def create_app(
        self, desired: DesiredApp, *, app_id: int = 0, secret: str = ""
    ) -> tuple[ServerApp, str]:
        """Register the app; returns it and its secret (shown this once)."""
        request = create_request(desired, app_id=app_id, secret=secret)
        try:
            response = await self._stub.CreateApp(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, self._action(f"CreateApp {desired.name}")) from None
        return server_app(response.app), response.secret

    async def get_app(self, app_id: int) -> ServerApp:
        try:
            response = await self._stub.GetApp(
                admin_pb2.GetAppRequest(app_id=app_id),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, self._action(f"GetApp {app_id}")) from None
        return server_app(response.app)

    async def find_app(self, name: str) -> ServerApp | None:
        """The app called ``name``, searched page by page, or None."""
        token = ""
        while True:
            try:
                response = await self._stub.ListApps(
                    admin_pb2.ListAppsRequest(page_size=PAGE_SIZE, page_token=token),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise translate(error, self._action("ListApps")) from None
            for app in response.apps:
                if app.name == name:
                    return server_app(app)
            token = response.next_page_token
            if not token:
                return None

    async def update_app(self, app_id: int, desired: DesiredApp, mask: Sequence[str]) -> ServerApp:
        try:
            response = await self._stub.UpdateApp(
                update_request(app_id, desired, mask),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, self._action(f"UpdateApp {app_id}")) from None
        return server_app(response.app)

    async def rotate_secret(self, app_id: int, overlap_seconds: int) -> tuple[ServerApp, str]:
        """A new secret (returned once); the previous one works for ``overlap_seconds``."""
        try:
            response = await self._stub.RotateAppSecret(
                admin_pb2.RotateAppSecretRequest(app_id=app_id, overlap_seconds=overlap_seconds),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, self._action(f"RotateAppSecret {app_id}")) from None
        return server_app(response.app), response.secret

    async def delete_app(self, app_id: int) -> bool:
        """Delete the app; False when it was already gone."""
        try:
            response = await self._stub.DeleteApp(
                admin_pb2.DeleteAppRequest(app_id=app_id),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            translated = translate(error, self._action(f"DeleteApp {app_id}"))
            if isinstance(translated, AppNotFound):
                return False
            raise translated from None
        return bool(response.deleted)
