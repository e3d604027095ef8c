"""H1 canary test: no secret of a call reaches the logs, the client's error texts or metrics.

Every RPC of `auth.Auth`, `auth.Permissions`, `sso.v1.Auth` and `sso.v1.Sessions`
runs on its success path, its failure paths and with a forced internal error,
with unique canary values (email local parts, passwords, garbage tokens) plus
every secret the service handed out during the run (access, refresh and legacy
tokens, session ids, the app secret). Logs are captured at DEBUG through the
handler `sso serve` installs; every status message, initial and trailing
metadata (the `google.rpc.Status` details decoded) and the metric exposition
are scanned too. Target: 0 hits.
"""

from __future__ import annotations

import io
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import observability_support as support
import pytest
from canary_two_factor import TWO_FACTOR_METHODS, two_factor_paths
from observability_support import Running, client_texts, log_lines, metric_exposition

from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import (
    account_pb2,
    account_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
)

# Fixtures shared by the observability tests (bound here so pytest finds them).
obs_backend, obs_server, captured = support.obs_backend, support.obs_server, support.captured

S = grpc.StatusCode
SERVICES = (legacy_pb2.DESCRIPTOR, auth_pb2.DESCRIPTOR, sessions_pb2.DESCRIPTOR)


def every_method() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for file in SERVICES
        for service in file.services_by_name.values()
        for method in service.methods
    }


class Probe:
    """Runs calls, keeps every text a client saw and every secret the service issued."""

    def __init__(self, running: Running) -> None:
        self.running = running
        c = secrets.token_hex(6)
        self.c = c
        self.password = f"Canary {c} horse staple"
        self.wrong_password = f"Wrong {c} battery horse"
        self.weak_password = f"pw{c[:6]}"
        self.garbage = {
            name: f"canary-{name}-{c}" for name in ("rt", "at", "legacy", "bearer", "sid")
        }
        self.issued: set[str] = {running.app.secret}
        self.forbidden: set[str] = {self.password, self.wrong_password, self.weak_password}
        self.forbidden.update(self.garbage.values())
        self.client_texts: list[str] = []
        self.paths: Counter[tuple[str, str]] = Counter()

    def email(self, tag: str) -> str:
        local = f"canary.{self.c}.{tag}"
        self.forbidden.add(local)
        return f"{local}@example.com"

    async def run(
        self,
        method: str,
        path: str,
        call: Any,
        expect: grpc.StatusCode | None = grpc.StatusCode.OK,
    ) -> Any:
        response, texts, code = await client_texts(call)
        self.client_texts.append(texts)
        self.paths[(method, path)] += 1
        if expect is None:
            assert code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL), (method, texts)
        else:
            assert code == expect, (method, path, code, texts)
        if path == "internal":
            assert texts.startswith("internal error (ref="), texts
        return response

    def keep(self, *values: str) -> None:
        self.issued.update(v for v in values if v)


def fault(*carried: str) -> Callable[..., Awaitable[Any]]:
    """A failure that cannot be produced for real: a dependency raising an unexpected
    RuntimeError whose message carries the call's secrets and arguments."""

    async def broken(*args: object, **kwargs: object) -> Any:
        sync_fault(*carried)(*args, **kwargs)

    return broken


def sync_fault(*carried: str) -> Callable[..., Any]:
    def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(f"forced fault with {' '.join(carried)} args={args!r} {kwargs!r}")

    return broken


async def legacy_paths(p: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    app_id, run = p.running.app.id, p.run
    auth = legacy_grpc.AuthStub(p.running.channel)
    perms = legacy_grpc.PermissionsStub(p.running.channel)
    users = p.running.container.auth.users
    email = p.email("legacy")

    def register(who: str = email, password: str = p.password) -> Any:
        return auth.Register(legacy_pb2.RegisterRequest(email=who, password=password))

    def login(who: str = email, password: str = p.password, app: int = app_id) -> Any:
        return auth.Login(legacy_pb2.LoginRequest(email=who, password=password, app_id=app))

    m = "/auth.Auth/Register"
    user = await run(m, "success", register())
    await run(m, "failure", register(), S.ALREADY_EXISTS)
    await run(m, "failure", register(p.email("weak"), p.weak_password), S.INVALID_ARGUMENT)
    await run(m, "failure", register(p.email("bad") + "@x"), S.INVALID_ARGUMENT)
    await run(m, "failure", register(p.email("nul") + "\x00"), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_email", fault(email, p.password))
        await run(m, "internal", register(), S.INTERNAL)

    m = "/auth.Auth/Login"
    token = (await run(m, "success", login())).token
    p.keep(token)
    await run(m, "failure", login(password=p.wrong_password), S.INVALID_ARGUMENT)
    await run(m, "failure", login(who=p.email("ghost")), S.INVALID_ARGUMENT)
    await run(m, "failure", login(app=987654), S.NOT_FOUND)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_email", fault(email, p.password))
        await run(m, "internal", login(), S.INTERNAL)

    for m, stub in (("/auth.Auth/IsAdmin", auth), ("/auth.Permissions/IsAdmin", perms)):
        await run(m, "success", stub.IsAdmin(legacy_pb2.IsAdminRequest(user_id=user.user_id)))
        await run(
            m, "failure", stub.IsAdmin(legacy_pb2.IsAdminRequest(user_id=987654)), S.NOT_FOUND
        )
        await run(m, "failure", stub.IsAdmin(legacy_pb2.IsAdminRequest()), S.INVALID_ARGUMENT)
        with monkeypatch.context() as patch:
            patch.setattr(users, "get_by_id", fault(email))
            request = legacy_pb2.IsAdminRequest(user_id=user.user_id)
            await run(m, "internal", stub.IsAdmin(request), S.INTERNAL)

    m = "/auth.Auth/Logout"
    assert (await run(m, "success", auth.Logout(legacy_pb2.LogoutRequest(token=token)))).success
    garbage = legacy_pb2.LogoutRequest(token=p.garbage["legacy"])
    assert not (await run(m, "failure", auth.Logout(garbage), S.OK)).success  # the seed's answer
    await run(m, "failure", auth.Logout(legacy_pb2.LogoutRequest()), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        p.running.container.auth.forget_apps()  # the app is cached since the calls above
        patch.setattr(p.running.container.auth.apps, "get", fault(token))
        await run(m, "internal", auth.Logout(legacy_pb2.LogoutRequest(token=token)), S.INTERNAL)


async def v1_paths(p: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    app_id, run = p.running.app.id, p.run
    auth = auth_pb2_grpc.AuthStub(p.running.channel)
    container = p.running.container
    users, sessions = container.auth.users, container.auth.sessions
    email, device = p.email("v1"), f"canary-device-{p.c}"

    def register(who: str = email, password: str = p.password) -> Any:
        return auth.Register(auth_pb2.RegisterRequest(email=who, password=password))

    def login(who: str = email, password: str = p.password, app: int = app_id) -> Any:
        request = auth_pb2.LoginRequest(
            email=who, password=password, app_id=app, device_name=device
        )
        return auth.Login(request)

    def refresh(token: str) -> Any:
        return auth.Refresh(auth_pb2.RefreshRequest(refresh_token=token))

    def validate(token: str, audience: str = "") -> Any:
        return auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token, audience=audience))

    def logout(refresh_token: str = "", access_token: str = "") -> Any:
        request = auth_pb2.LogoutRequest(refresh_token=refresh_token, access_token=access_token)
        return auth.Logout(request)

    m = "/sso.v1.Auth/Register"
    user = await run(m, "success", register())
    await run(m, "failure", register(), S.ALREADY_EXISTS)
    await run(m, "failure", register(p.email("weak1"), p.weak_password), S.INVALID_ARGUMENT)
    await run(m, "failure", register(p.email("x") + "."), S.INVALID_ARGUMENT)
    await run(m, "failure", register(p.email("y"), p.password + "\x00"), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_email", fault(email, p.password))
        await run(m, "internal", register(), S.INTERNAL)

    m = "/sso.v1.Auth/Login"
    pairs = []
    for _ in range(4):
        tokens = (await run(m, "success", login())).tokens
        p.keep(tokens.access_token, tokens.refresh_token, tokens.session_id)
        pairs.append(tokens)
    await run(m, "failure", login(password=p.wrong_password), S.UNAUTHENTICATED)
    await run(m, "failure", login(who=p.email("ghost1")), S.UNAUTHENTICATED)
    await run(m, "failure", login(app=987654), S.NOT_FOUND)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_email", fault(email, p.password, device))
        await run(m, "internal", login(), S.INTERNAL)

    m = "/sso.v1.Auth/Refresh"
    first, second, third, fourth = pairs
    rotated = (await run(m, "success", refresh(first.refresh_token))).tokens
    p.keep(rotated.access_token, rotated.refresh_token)
    await run(m, "failure", refresh(p.garbage["rt"]), S.UNAUTHENTICATED)
    await run(m, "failure", refresh(""), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "rotate", fault(second.refresh_token))
        await run(m, "internal", refresh(second.refresh_token), S.INTERNAL)

    m = "/sso.v1.Auth/ValidateToken"
    await run(m, "success", validate(second.access_token, str(app_id)))
    await run(m, "failure", validate(p.garbage["at"]), S.UNAUTHENTICATED)
    await run(m, "failure", validate(second.access_token, f"aud-{p.c}"), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(container.auth.denylist, "contains", fault(second.access_token))
        await run(m, "internal", validate(second.access_token), S.INTERNAL)

    m = "/sso.v1.Auth/GetJwks"
    await run(m, "success", auth.GetJwks(auth_pb2.GetJwksRequest()))
    with monkeypatch.context() as patch:
        patch.setattr(container.bundle.access_tokens, "jwks", sync_fault(p.running.app.secret))
        await run(m, "internal", auth.GetJwks(auth_pb2.GetJwksRequest()), S.INTERNAL)

    m = "/sso.v1.Auth/IsAdmin"
    await run(m, "success", auth.IsAdmin(auth_pb2.IsAdminRequest(user_id=user.user_id)))
    await run(m, "failure", auth.IsAdmin(auth_pb2.IsAdminRequest(user_id=987654)), S.NOT_FOUND)
    with monkeypatch.context() as patch:
        patch.setattr(users, "get_by_id", fault(email))
        request = auth_pb2.IsAdminRequest(user_id=user.user_id)
        await run(m, "internal", auth.IsAdmin(request), S.INTERNAL)

    await sessions_paths(p, monkeypatch, second, third)

    m = "/sso.v1.Auth/Logout"
    await run(m, "success", logout(fourth.refresh_token))
    await run(m, "failure", logout(p.garbage["rt"]), S.UNAUTHENTICATED)
    await run(m, "failure", logout(access_token=p.garbage["at"]), S.UNAUTHENTICATED)
    await run(m, "failure", logout(), S.INVALID_ARGUMENT)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "get_by_refresh", fault(rotated.refresh_token))
        await run(m, "internal", logout(rotated.refresh_token), S.INTERNAL)
    # A spent refresh token presented again revokes its family: a failure path of its own.
    await run("/sso.v1.Auth/Refresh", "failure", refresh(first.refresh_token), S.UNAUTHENTICATED)


async def sessions_paths(p: Probe, monkeypatch: pytest.MonkeyPatch, me: Any, other: Any) -> None:
    stub, run = sessions_pb2_grpc.SessionsStub(p.running.channel), p.run
    sessions = p.running.container.auth.sessions
    bearer = (("authorization", f"Bearer {me.access_token}"),)
    garbage = (("authorization", f"Bearer {p.garbage['bearer']}"),)
    listing = sessions_pb2.ListSessionsRequest()

    m = "/sso.v1.Sessions/ListSessions"
    await run(m, "success", stub.ListSessions(listing, metadata=bearer))
    await run(m, "failure", stub.ListSessions(listing, metadata=garbage), S.UNAUTHENTICATED)
    await run(m, "failure", stub.ListSessions(listing), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "list_active", fault(me.access_token))
        await run(m, "internal", stub.ListSessions(listing, metadata=bearer), S.INTERNAL)

    m = "/sso.v1.Sessions/RevokeSession"
    request = sessions_pb2.RevokeSessionRequest(session_id=other.session_id)
    unknown = sessions_pb2.RevokeSessionRequest(session_id=p.garbage["sid"])
    await run(m, "success", stub.RevokeSession(request, metadata=bearer))
    await run(m, "failure", stub.RevokeSession(unknown, metadata=bearer), S.NOT_FOUND)
    await run(m, "failure", stub.RevokeSession(request, metadata=garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "revoke", fault(me.access_token, other.session_id))
        await run(m, "internal", stub.RevokeSession(request, metadata=bearer), S.INTERNAL)

    m = "/sso.v1.Sessions/RevokeAllSessions"
    keep = sessions_pb2.RevokeAllSessionsRequest(keep_current=True)
    await run(m, "success", stub.RevokeAllSessions(keep, metadata=bearer))
    await run(m, "failure", stub.RevokeAllSessions(keep, metadata=garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(sessions, "revoke_all", fault(me.access_token))
        await run(m, "internal", stub.RevokeAllSessions(keep, metadata=bearer), S.INTERNAL)


# sso.v1.Account's lifecycle half (the two-factor half is driven by its own paths).
LIFECYCLE_METHODS = tuple(
    f"/sso.v1.Account/{name}"
    for name in (
        "VerifyEmail",
        "ResendVerification",
        "RequestPasswordReset",
        "ResetPassword",
        "ChangePassword",
        "ListLoginHistory",
        "ListConnectedApps",
        "RevokeAppAccess",
        "ExportMyData",
    )
)


async def lifecycle_paths(p: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every lifecycle RPC; the link tokens of every mail the service sends are secrets too."""
    stub, run = account_pb2_grpc.AccountStub(p.running.channel), p.run
    auth = auth_pb2_grpc.AuthStub(p.running.channel)
    lifecycle = p.running.container.bundle.lifecycle
    assert lifecycle is not None
    service, history = lifecycle.account, lifecycle.history
    mailed: list[Any] = []
    submit = service.mailer.submit

    def recording(mail: Any) -> bool:  # watches what is mailed, then sends it as usual
        mailed.append(mail)
        p.keep(mail.values.get("token", ""))
        return bool(submit(mail))

    monkeypatch.setattr(service.mailer, "submit", recording)

    async def mail_token(kind: str) -> str:
        await service.background.drain()
        return str([m for m in mailed if m.kind.value == kind][-1].values["token"])

    email = p.email("account")
    first_new, second_new = f"Canary {p.c} first new staple", f"Canary {p.c} second new horse"
    p.forbidden.update({first_new, second_new})
    await auth.Register(auth_pb2.RegisterRequest(email=email, password=p.password))
    verify = await mail_token("verify_email")

    m = "/sso.v1.Account/VerifyEmail"
    await run(m, "success", stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=verify)))
    garbage = account_pb2.VerifyEmailRequest(token=p.garbage["rt"])
    await run(m, "failure", stub.VerifyEmail(garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(service.tokens, "verify_email", fault(verify))
        await run(m, "internal", stub.VerifyEmail(garbage), S.INTERNAL)

    for m, call in (
        ("/sso.v1.Account/ResendVerification", stub.ResendVerification),
        ("/sso.v1.Account/RequestPasswordReset", stub.RequestPasswordReset),
    ):
        kind = (
            account_pb2.ResendVerificationRequest
            if "Resend" in m
            else account_pb2.RequestPasswordResetRequest
        )
        await run(m, "success", call(kind(email=email)))
        await run(m, "success", call(kind(email=p.email("nobody"))))
        await run(m, "failure", call(kind(email=p.email("bad") + "@x")), S.INVALID_ARGUMENT)
        with monkeypatch.context() as patch:
            patch.setattr(service.auth.guard, "throttle", fault(email))
            await run(m, "internal", call(kind(email=email)), S.INTERNAL)

    tokens = (
        await auth.Login(
            auth_pb2.LoginRequest(
                email=email, password=p.password, app_id=p.running.app.id, device_name="canary"
            )
        )
    ).tokens
    p.keep(tokens.access_token, tokens.refresh_token, tokens.session_id)
    bearer = (("authorization", f"Bearer {tokens.access_token}"),)
    garbage_bearer = (("authorization", f"Bearer {p.garbage['bearer']}"),)
    await service.background.drain()

    authed: tuple[tuple[str, Any, Any, str, Any], ...] = (
        (
            "ListLoginHistory",
            stub.ListLoginHistory,
            account_pb2.ListLoginHistoryRequest(),
            history.history,
            "page",
        ),
        (
            "ListConnectedApps",
            stub.ListConnectedApps,
            account_pb2.ListConnectedAppsRequest(),
            service.auth.sessions,
            "list_active",
        ),
        (
            "ExportMyData",
            stub.ExportMyData,
            account_pb2.ExportMyDataRequest(),
            history.history,
            "devices",
        ),
    )
    for name, call, request, target, attr in authed:
        m = f"/sso.v1.Account/{name}"
        await run(m, "success", call(request, metadata=bearer))
        await run(m, "failure", call(request, metadata=garbage_bearer), S.UNAUTHENTICATED)
        with monkeypatch.context() as patch:
            patch.setattr(target, attr, fault(tokens.access_token, email))
            await run(m, "internal", call(request, metadata=bearer), S.INTERNAL)

    m = "/sso.v1.Account/RevokeAppAccess"
    other = await auth.Login(
        auth_pb2.LoginRequest(email=email, password=p.password, app_id=p.running.app.id)
    )
    p.keep(other.tokens.access_token, other.tokens.refresh_token, other.tokens.session_id)
    revoke = account_pb2.RevokeAppAccessRequest(app_id=p.running.app.id)
    await run(
        m,
        "failure",
        stub.RevokeAppAccess(account_pb2.RevokeAppAccessRequest(), metadata=bearer),
        S.INVALID_ARGUMENT,
    )
    with monkeypatch.context() as patch:
        patch.setattr(service.auth.sessions, "list_active", fault(tokens.access_token))
        await run(m, "internal", stub.RevokeAppAccess(revoke, metadata=bearer), S.INTERNAL)
    # The caller's own session goes with the app: log in again for the calls below.
    await run(m, "success", stub.RevokeAppAccess(revoke, metadata=bearer))
    tokens = (
        await auth.Login(
            auth_pb2.LoginRequest(email=email, password=p.password, app_id=p.running.app.id)
        )
    ).tokens
    p.keep(tokens.access_token, tokens.refresh_token, tokens.session_id)
    bearer = (("authorization", f"Bearer {tokens.access_token}"),)

    m = "/sso.v1.Account/ChangePassword"
    change = account_pb2.ChangePasswordRequest(current_password=p.password, new_password=first_new)
    wrong = account_pb2.ChangePasswordRequest(
        current_password=p.wrong_password, new_password=second_new
    )
    weak = account_pb2.ChangePasswordRequest(
        current_password=p.password, new_password=p.weak_password
    )
    await run(m, "failure", stub.ChangePassword(wrong, metadata=bearer), S.UNAUTHENTICATED)
    await run(m, "failure", stub.ChangePassword(weak, metadata=bearer), S.INVALID_ARGUMENT)
    await run(m, "failure", stub.ChangePassword(change, metadata=garbage_bearer), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(service.tokens, "change_password", fault(first_new, tokens.access_token))
        await run(m, "internal", stub.ChangePassword(change, metadata=bearer), S.INTERNAL)
    await run(m, "success", stub.ChangePassword(change, metadata=bearer))

    m = "/sso.v1.Account/ResetPassword"
    await stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=email))
    reset = await mail_token("password_reset")
    good = account_pb2.ResetPasswordRequest(token=reset, new_password=second_new)
    await run(
        m,
        "failure",
        stub.ResetPassword(
            account_pb2.ResetPasswordRequest(token=reset, new_password=p.weak_password)
        ),
        S.INVALID_ARGUMENT,
    )
    await run(
        m,
        "failure",
        stub.ResetPassword(
            account_pb2.ResetPasswordRequest(token=p.garbage["rt"], new_password=second_new)
        ),
        S.UNAUTHENTICATED,
    )
    with monkeypatch.context() as patch:
        patch.setattr(service.tokens, "peek", fault(reset, second_new))
        await run(m, "internal", stub.ResetPassword(good), S.INTERNAL)
    await run(m, "success", stub.ResetPassword(good))
    await service.background.drain()
    assert {m.kind.value for m in mailed} >= {"verify_email", "password_reset", "password_changed"}


# sso.v1.Admin methods that hand out or take an app secret (docs/admin.md).
ADMIN_SECRET_METHODS = ("/sso.v1.Admin/CreateApp", "/sso.v1.Admin/RotateAppSecret")


async def admin_paths(p: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateApp (generated and imported secret), RotateAppSecret, Login with x-client-secret."""
    stub, run = admin_pb2_grpc.AdminStub(p.running.channel), p.run
    auth = auth_pb2_grpc.AuthStub(p.running.channel)
    admin = p.running.container.bundle.admin
    assert admin is not None
    email = p.email("admin")
    uid = (await auth.Register(auth_pb2.RegisterRequest(email=email, password=p.password))).user_id
    await p.running.container.auth.users.set_admin(
        uid, True
    )  # an admin user's token is a credential
    login = auth_pb2.LoginRequest(email=email, password=p.password, app_id=p.running.app.id)
    tokens = (await auth.Login(login)).tokens
    p.keep(tokens.access_token, tokens.refresh_token, tokens.session_id)
    bearer = (("authorization", f"Bearer {tokens.access_token}"),)
    garbage = (("authorization", f"Bearer {p.garbage['bearer']}"),)
    imported = f"canary-imported-secret-{p.c}"
    p.forbidden.add(imported)

    m = "/sso.v1.Admin/CreateApp"
    made = await run(
        m, "success", stub.CreateApp(admin_pb2.CreateAppRequest(name=f"c-{p.c}"), metadata=bearer)
    )
    p.keep(made.secret)
    request = admin_pb2.CreateAppRequest(name=f"i-{p.c}", secret=imported)
    copied = await run(m, "success", stub.CreateApp(request, metadata=bearer))
    await run(m, "failure", stub.CreateApp(request, metadata=bearer), S.ALREADY_EXISTS)
    await run(m, "failure", stub.CreateApp(request, metadata=garbage), S.UNAUTHENTICATED)
    with monkeypatch.context() as patch:
        patch.setattr(admin.apps, "create_info", fault(imported, made.secret))
        await run(m, "internal", stub.CreateApp(request, metadata=bearer), S.INTERNAL)

    m = "/sso.v1.Admin/RotateAppSecret"
    rotate = admin_pb2.RotateAppSecretRequest(app_id=made.app.app_id, overlap_seconds=60)
    rotated = await run(m, "success", stub.RotateAppSecret(rotate, metadata=bearer))
    p.keep(rotated.secret)
    missing = admin_pb2.RotateAppSecretRequest(app_id=10**9)
    await run(m, "failure", stub.RotateAppSecret(missing, metadata=bearer), S.NOT_FOUND)
    with monkeypatch.context() as patch:
        patch.setattr(admin.apps, "rotate_secret", fault(rotated.secret, made.secret))
        await run(m, "internal", stub.RotateAppSecret(rotate, metadata=bearer), S.INTERNAL)

    # The app authenticates with its secret in metadata: old (overlap), new, imported, wrong.
    m = "/sso.v1.Auth/Login"
    for app_id, secret in (
        (made.app.app_id, made.secret),
        (made.app.app_id, rotated.secret),
        (copied.app.app_id, imported),
    ):
        request_login = auth_pb2.LoginRequest(email=email, password=p.password, app_id=app_id)
        pair = await run(
            m, "success", auth.Login(request_login, metadata=(("x-client-secret", secret),))
        )
        p.keep(pair.tokens.access_token, pair.tokens.refresh_token, pair.tokens.session_id)
    wrong = (("x-client-secret", p.garbage["legacy"]),)
    await run(m, "failure", auth.Login(login, metadata=wrong), S.UNAUTHENTICATED)


async def test_no_canary_in_logs_errors_or_metrics(
    obs_server: Running, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Probe(obs_server)
    await legacy_paths(probe, monkeypatch)
    await v1_paths(probe, monkeypatch)
    await lifecycle_paths(probe, monkeypatch)
    await admin_paths(probe, monkeypatch)
    await two_factor_paths(probe, monkeypatch, fault)

    covered = {(m, path) for m, path in probe.paths}
    for method in (*LIFECYCLE_METHODS, *ADMIN_SECRET_METHODS, *TWO_FACTOR_METHODS):
        for path in ("success", "failure", "internal"):
            assert (method, path) in covered, (method, path)
    for method in every_method():
        for path in ("success", "internal"):
            assert (method, path) in covered, (method, path)
        if method != "/sso.v1.Auth/GetJwks":  # no input can make it fail
            assert (method, "failure") in covered, method

    metrics = await metric_exposition(obs_server)
    assert 'method="/sso.v1.Auth/Login"' in metrics  # labelled gRPC metrics are scanned
    haystacks = {
        "logs": captured.getvalue(),
        "client texts": "\n".join(probe.client_texts),
        "metrics": metrics,
    }
    secrets_ = probe.forbidden | probe.issued
    hits = sorted(
        (where, value)
        for where, text in haystacks.items()
        for value in secrets_
        if value in text or value.lower() in text.lower()
    )
    lines = log_lines(captured)  # each line parses as one JSON object
    calls = sum(probe.paths.values())
    print(
        f"\ncanary: {calls} calls over {len(covered)} (method, path) pairs of "
        f"{len(every_method())} methods, {len(secrets_)} secrets, {len(lines)} log lines "
        f"-> {len(hits)} hits"
    )
    assert hits == []
    # The forced errors were logged (masked) with their tracebacks.
    forced = [e for e in lines if e["msg"] == "unhandled error"]
    assert len(forced) == sum(n for (_, path), n in probe.paths.items() if path == "internal")
    assert all("RuntimeError: forced fault with" in e["exc"] for e in forced)
