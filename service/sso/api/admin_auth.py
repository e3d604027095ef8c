"""Who may call `sso.v1.Admin`: one gate, one classification table, deny by default.

Why this module exists: authorisation that each handler remembers to call is
authorisation some handler forgets (SECURITY_CHECKLIST I1). Here the servicer
is never registered by itself: `add_admin_service` registers a `GuardedAdmin`
proxy whose every method first runs `AdminGate.check` with the method's name.
The gate looks the method up in `METHOD_ACCESS`, an explicit table; a method
missing from it is refused (and `tests/admin` fails for it, since the test
walks the proto descriptor), so a new RPC stays closed until classified.

The checks, in order (every refusal writes an `authz_admin` failure event):
1. the method is classified;
2. the client address is in `admin.allowed_cidrs` (when set); the address is
   `sso.api.context.peer_ip`, which believes `x-forwarded-for` only from
   `ratelimit.trusted_proxies`, so a spoofed header from anyone else is ignored;
3. `authorization: Bearer <token>` is an admin token: its SHA-256 digest is
   compared with every configured digest by `hmac.compare_digest`, all of them,
   whatever matches (constant time, no early exit);
4. or it is a valid access token of a user whose admin flag is set *now* (read
   from the database on every call; an expired or revoked token fails in
   `AuthService.validate`, a user without the flag gets PERMISSION_DENIED).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

from sso.api.context import bearer_token, peer_ip
from sso.config import AdminSettings
from sso.domain.admin import Actor, AdminService
from sso.errors import PermissionDenied, SSOError, Unauthenticated
from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger("sso.admin")
Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
SERVICE_NAME = SERVICE.full_name


class Access(enum.Enum):
    """What a method requires. Only one class today; the table still names each method."""

    ADMIN = "admin"  # an admin token, or an admin user's access token


# Every method of sso.v1.Admin, classified explicitly. Deny by default: a method absent
# from this table is refused for everyone (tests/admin checks the table is complete).
METHOD_ACCESS: Mapping[str, Access] = {
    "CreateApp": Access.ADMIN,
    "GetApp": Access.ADMIN,
    "ListApps": Access.ADMIN,
    "UpdateApp": Access.ADMIN,
    "DeleteApp": Access.ADMIN,
    "RotateAppSecret": Access.ADMIN,
    "ListUsers": Access.ADMIN,
    "GetUser": Access.ADMIN,
    "LockUser": Access.ADMIN,
    "UnlockUser": Access.ADMIN,
    "SetAdmin": Access.ADMIN,
    "DeleteUser": Access.ADMIN,
    "RevokeUserSessions": Access.ADMIN,
    "ExportUser": Access.ADMIN,
    "GetStats": Access.ADMIN,
}

# How often the token file's modification time is looked at, seconds.
TOKEN_FILE_CHECK = 1.0
# Shortest admin token accepted from the file (the `admin.tokens` setting checks the same).
MIN_TOKEN_CHARS = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class AdminTokens:
    """The configured admin tokens, kept only as SHA-256 digests; the file is re-read on change."""

    def __init__(self, tokens: Iterable[str] = (), token_file: Path | None = None) -> None:
        self._static = [_digest(t.strip()) for t in tokens if t.strip()]
        self._file = token_file
        self._file_digests: list[bytes] = []
        self._file_stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._file_stamp:
                return
            lines = self._file.read_text(encoding="utf-8").splitlines()
        except OSError:
            log.warning("admin token file unreadable", extra={"path": str(self._file)})
            self._file_digests, self._file_stamp = [], None
            return
        tokens = [line.strip() for line in lines if line.strip()]
        usable = [t for t in tokens if len(t) >= MIN_TOKEN_CHARS]
        if len(usable) < len(tokens):  # like the setting: a short token is never accepted
            log.warning(
                "admin token file has tokens shorter than the minimum; ignored",
                extra={"path": str(self._file), "ignored": len(tokens) - len(usable)},
            )
        self._file_digests = [_digest(t) for t in usable]
        self._file_stamp = stamp

    def _digests(self) -> list[bytes]:
        now = time.monotonic()
        if self._file is not None and now - self._checked >= TOKEN_FILE_CHECK:
            self._checked = now
            self._reload()
        return [*self._static, *self._file_digests]

    def match(self, token: str) -> str | None:
        """The actor label of a matching admin token, else None (constant time per digest)."""
        presented = _digest(token)
        found = False
        for digest in self._digests():
            found |= hmac.compare_digest(presented, digest)
        return f"admin_token:{presented.hex()[:8]}" if found else None


class AdminGate:
    """Decides, per call, whether the caller may run an Admin method; audits every refusal."""

    def __init__(self, admin: AdminService, settings: AdminSettings) -> None:
        self._admin = admin
        self._auth = admin.auth
        self._tokens = AdminTokens(
            (t.get_secret_value() for t in settings.tokens), settings.token_file
        )
        self._allow_users = settings.allow_admin_users
        self._networks = tuple(ipaddress.ip_network(c) for c in settings.allowed_cidrs)

    def _ip_allowed(self, ip: str) -> bool:
        if not self._networks:
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self._networks)

    async def _authenticate(self, context: Context) -> Actor:
        token = bearer_token(context)
        label = self._tokens.match(token)
        if label is not None:
            return Actor(label)
        if not self._allow_users or token.count(".") != 2:
            raise Unauthenticated("invalid admin credentials", reason="ADMIN_CREDENTIALS_INVALID")
        claims = await self._auth.validate(token)
        user = await self._auth.users.get_by_id(claims.user_id)
        if user is None:
            raise Unauthenticated("invalid admin credentials", reason="ADMIN_CREDENTIALS_INVALID")
        if not user.is_admin:
            raise PermissionDenied("administrator rights required", reason="NOT_ADMIN")
        return Actor(f"user:{user.id}", user_id=user.id)

    async def check(self, method: str, context: Context) -> Actor:
        """The caller of `method`, or an `SSOError` (UNAUTHENTICATED / PERMISSION_DENIED)."""
        try:
            if METHOD_ACCESS.get(method) is not Access.ADMIN:
                raise PermissionDenied("method not available", reason="METHOD_UNCLASSIFIED")
            if not self._ip_allowed(peer_ip(context)):
                raise PermissionDenied("address not allowed", reason="ADMIN_IP_NOT_ALLOWED")
            return await self._authenticate(context)
        except SSOError as exc:
            await self.refused(Actor("anonymous"), method, exc)
            raise

    async def refused(self, actor: Actor, method: str, exc: SSOError) -> None:
        """The audit row of a refused or failed call (action named like the successes')."""
        action = re.sub(r"(?<!^)([A-Z])", r"_\1", method).lower()
        await self._admin.audit(
            actor, action, f"rpc:{method}", outcome="failure", reason=exc.reason
        )


Handler = Callable[[Any, Actor], Awaitable[Any]]


class GuardedAdmin:
    """What grpc sees as the Admin servicer: each method = gate check, then the handler.

    Handlers take `(request, actor)`, not a gRPC context, so an `AdminV1` cannot be
    registered without this proxy by mistake.
    """

    def __init__(self, servicer: object, gate: AdminGate) -> None:
        self._servicer, self._gate = servicer, gate

    def __getattr__(self, name: str) -> Callable[[Any, Context], Awaitable[Any]]:
        if name not in SERVICE.methods_by_name:
            raise AttributeError(name)
        handler: Handler | None = getattr(self._servicer, name, None)
        gate = self._gate

        async def call(request: Any, context: Context) -> Any:
            actor = await gate.check(name, context)
            if handler is None:
                raise PermissionDenied("method not available", reason="METHOD_UNCLASSIFIED")
            try:
                return await handler(request, actor)
            except SSOError as exc:
                await gate.refused(actor, name, exc)
                raise

        return call


def add_admin_service(server: grpc.aio.Server, servicer: object, gate: AdminGate) -> None:
    """Register `sso.v1.Admin` behind the gate (the only way the servicer is served)."""
    admin_pb2_grpc.add_AdminServicer_to_server(GuardedAdmin(servicer, gate), server)  # type: ignore[arg-type]
