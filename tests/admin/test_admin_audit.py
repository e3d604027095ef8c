"""Every admin call is an audit row (SECURITY_CHECKLIST I3), and the API holds under concurrency."""

from __future__ import annotations

import asyncio
import json
import re
import time

import grpc
from admin_support import AdminEnv, expect_error

from sso.api.admin_auth import SERVICE
from sso_proto.sso.v1 import admin_pb2

S = grpc.StatusCode


def action_of(method: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", method).lower()


async def test_every_rpc_writes_an_audit_row_with_actor_target_and_change(env: AdminEnv) -> None:
    uid, _, _ = await env.user("audited")
    md = env.md
    a = env.admin
    created = await env.create_app("audited-app", display_name="A")
    app_id = created.app.app_id
    await a.GetApp(admin_pb2.GetAppRequest(app_id=app_id), metadata=md)
    await a.ListApps(admin_pb2.ListAppsRequest(), metadata=md)
    await a.UpdateApp(
        admin_pb2.UpdateAppRequest(app_id=app_id, update_mask=["display_name"], display_name="B"),
        metadata=md,
    )
    await a.RotateAppSecret(admin_pb2.RotateAppSecretRequest(app_id=app_id), metadata=md)
    await a.DeleteApp(admin_pb2.DeleteAppRequest(app_id=app_id), metadata=md)
    await a.ListUsers(admin_pb2.ListUsersRequest(), metadata=md)
    await a.GetUser(admin_pb2.GetUserRequest(user_id=uid), metadata=md)
    await a.LockUser(admin_pb2.LockUserRequest(user_id=uid, reason="audit test"), metadata=md)
    await a.UnlockUser(admin_pb2.UnlockUserRequest(user_id=uid), metadata=md)
    await a.SetAdmin(admin_pb2.SetAdminRequest(user_id=uid, is_admin=True), metadata=md)
    await a.RevokeUserSessions(admin_pb2.RevokeUserSessionsRequest(user_id=uid), metadata=md)
    await a.ExportUser(admin_pb2.ExportUserRequest(user_id=uid), metadata=md)
    await a.GetStats(admin_pb2.GetStatsRequest(), metadata=md)
    await a.DeleteUser(admin_pb2.DeleteUserRequest(user_id=uid), metadata=md)
    # A failing call is audited too, with its reason.
    await expect_error(a.GetApp(admin_pb2.GetAppRequest(app_id=app_id), metadata=md), S.NOT_FOUND)

    rows = await env.audit_rows(event="authz_admin")
    by_action: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        details = row["details"] or {}
        by_action.setdefault(str(details.get("action")), []).append(row)
    actor = rows[-1]["details"]["actor"]
    assert re.fullmatch(r"admin_token:[0-9a-f]{8}", actor)
    for method in SERVICE.methods:
        action = action_of(method.name)
        done = [r for r in by_action.get(action, []) if r["outcome"] == "success"]
        assert done, f"no audit row for {method.name}"
        row = done[-1]
        assert row["details"]["actor"] == actor  # type: ignore[index]
        assert row["target"] and row["ts"] is not None
    targets = {action: by_action[action][-1]["target"] for action in ("lock_user", "get_app")}
    assert targets["lock_user"] == f"user:{uid}"
    change = json.loads(by_action["update_app"][-1]["details"]["change"])  # type: ignore[index]
    assert change == {"display_name": ["A", "B"]}
    lock = by_action["lock_user"][-1]["details"]
    assert lock["reason"] == "audit test"  # type: ignore[index]
    failed = [r for r in by_action["get_app"] if r["outcome"] == "failure"]
    assert failed and failed[-1]["details"]["reason"] == "APP_NOT_FOUND"  # type: ignore[index]
    # No secret in any audit row.
    assert created.secret not in json.dumps([r["details"] for r in rows], default=str)


async def test_200_concurrent_admin_calls(env: AdminEnv) -> None:
    names = [f"conc-{i:03d}" for i in range(150)]
    creates = [env.create_app(name) for name in names]
    lists = [
        env.admin.ListApps(admin_pb2.ListAppsRequest(page_size=500), metadata=env.md)
        for _ in range(50)
    ]
    started = time.perf_counter()
    results = await asyncio.gather(*creates, *lists)
    elapsed = time.perf_counter() - started
    print(f"\n200 concurrent admin calls (150 CreateApp + 50 ListApps): {elapsed:.2f} s")
    created = results[: len(names)]
    ids = [r.app.app_id for r in created]
    assert len(set(ids)) == len(ids) == 150
    assert len({r.secret for r in created}) == 150
    assert [r.app.name for r in created] == names
    final = await env.admin.ListApps(admin_pb2.ListAppsRequest(page_size=500), metadata=env.md)
    assert set(ids) <= {a.app_id for a in final.apps}
