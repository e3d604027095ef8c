"""ClientApp against a real apiserver and a real SSO service: wait, register, repair, delete.

The operator runs with KopfRunner for the test's namespace; the SSO service is
the real one on PostgreSQL + Redis (tests/k8s/clientapp_support.py). The
SSOInstance lives in a second namespace that this operator does not watch, and
the test stands in for its reconciler: it writes the instance's ``Ready``
condition through the status subresource. The ClientApp refers to it across
namespaces, and nothing creates the instance's admin token Secret, so the
operator's own fallback (create it once) is what runs here. The issue's
end-to-end flow with the instance reconciler is tests/k8s/test_e2e_clientapp.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from clientapp_support import (
    ServiceThread,
    admin_pb2,
    admin_pb2_grpc,
    apply_current_crd,
    clientapp_manifest,
    condition,
    create_admin_token,
    get_or_none,
    instance_manifest,
    mark_instance_ready,
    new_email,
    operator,
    secret_data,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def instance_namespace(kube_cluster: Any, namespace: str) -> Any:
    name = f"{namespace}-idp"[:63]
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def retries(app: dict[str, Any]) -> int:
    progress = json.loads(app["metadata"]["annotations"]["sso.dev/apply"])
    return int(progress.get("retries", 0))


def app_status(kube: Any, namespace: str) -> Any:
    return get_or_none(kube, "clientapp", "billing", namespace)


def wait_ready(kube: Any, namespace: str) -> Any:
    """The ClientApp ``billing`` once its phase is Ready."""
    return wait_for(
        lambda: app_status(kube, namespace),
        lambda a: (a or {}).get("status", {}).get("phase") == "Ready",
        "phase Ready",
    )


def test_clientapp_lifecycle(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    kube = kube_cluster
    apply_current_crd(kube)
    with ServiceThread(tmp_path, pg_url, redis_server) as sso:
        overrides = f"{instance_namespace}/sso={sso.target}"
        with operator(namespace, monkeypatch, overrides):
            kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
            spec: dict[str, Any] = {
                "instanceRef": {"name": "sso", "namespace": instance_namespace},
                "displayName": "Billing",
                "redirectUris": ["https://billing.example.com/cb"],
                "rateLimit": {"attempts": 50, "window": "30s"},
            }
            kube.apply(clientapp_manifest("billing", namespace, spec))

            # 1. The instance is not Ready: the ClientApp waits, saying why, without a hot loop.
            app = wait_for(
                lambda: app_status(kube, namespace),
                lambda a: condition(a, "InstanceReady").get("reason") == "InstanceNotReady",
                "InstanceReady=False/InstanceNotReady",
            )
            assert app["status"]["phase"] == "Pending"
            assert condition(app, "Ready")["reason"] == "WaitingForInstance"
            assert app["status"]["instance"] == f"{instance_namespace}/sso"
            # kopf records the change handler's retries in an annotation: with a 10 s
            # delay there are one or two in 10 s, not hundreds.
            before = retries(app_status(kube, namespace))
            time.sleep(10)
            after = retries(app_status(kube, namespace))
            assert after - before <= 2, (before, after)

            # 2. Ready instance, but its admin token is not yet known to the service: the
            # operator creates the token Secret, the Admin API refuses it, the condition says so.
            mark_instance_ready(kube, "sso", instance_namespace)
            app = wait_for(
                lambda: app_status(kube, namespace),
                lambda a: condition(a, "Ready").get("reason") == "AdminAccessDenied",
                "Ready=False/AdminAccessDenied",
            )
            assert condition(app, "InstanceReady")["status"] == "True"
            assert "admin token" in condition(app, "Ready")["message"]
            token_secret = kube.get_json("secret", "sso-admin-token", "-n", instance_namespace)
            token = base64.b64decode(token_secret["data"]["token"]).decode()
            assert len(token) >= 43
            owner = token_secret["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"]) == ("SSOInstance", "sso")

            # 3. The token reaches the service (as a mounted Secret would): registered, Ready.
            sso.mount_admin_token(token)
            app = wait_ready(kube, namespace)
            status = app["status"]
            app_id = status["appId"]
            assert [c["type"] for c in status["conditions"]] == [
                "Ready",
                "InstanceReady",
                "Registered",
            ]
            assert all(c["status"] == "True" for c in status["conditions"])
            assert status["secretName"] == "billing-sso-credentials"
            assert status["endpoint"] == sso.target and status["issuer"] == sso.issuer
            assert status["lastRotationTime"] and status["nextRotationTime"]
            secret = kube.get_json("secret", "billing-sso-credentials", "-n", namespace)
            data = secret_data(secret)
            assert data == {
                "SSO_ENDPOINT": sso.target,
                "SSO_APP_ID": str(app_id),
                "SSO_CLIENT_SECRET": data["CLIENT_SECRET"],
                "SSO_ISSUER": sso.issuer,
                "SSO_JWKS_URI": f"{sso.issuer}/.well-known/jwks.json",
                "CLIENT_ID": str(app_id),
                "CLIENT_SECRET": data["SSO_CLIENT_SECRET"],
            }
            ref = secret["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["controller"]) == ("ClientApp", "billing", True)
            server = sso.admin("GetApp", admin_pb2.GetAppRequest(app_id=app_id), token).app
            assert server.name == f"{namespace}.billing"
            assert (server.display_name, list(server.redirect_uris)) == (
                "Billing",
                ["https://billing.example.com/cb"],
            )
            assert server.login_rate_limit_per_minute == 100
            email = new_email("drift")
            sso.register(email)
            first_secret = data["SSO_CLIENT_SECRET"]
            assert sso.login_code(app_id, first_secret, email) == grpc.StatusCode.OK
            assert sso.login_code(app_id, "not-the-secret", email) != grpc.StatusCode.OK
            table = kube.kubectl("get", "capp", "billing", "-n", namespace).stdout.splitlines()
            assert table[1].split()[:5] == [
                "billing",
                "sso",
                str(app_id),
                "billing-sso-credentials",
                "Ready",
            ]

            # 4. Drift: a field edited behind the operator's back is put back.
            sso.admin(
                "UpdateApp",
                admin_pb2.UpdateAppRequest(
                    app_id=app_id, update_mask=["display_name"], display_name="edited"
                ),
                token,
            )
            wait_for(
                lambda: sso.admin("GetApp", admin_pb2.GetAppRequest(app_id=app_id), token).app,
                lambda a: a.display_name == "Billing",
                "display name restored",
                timeout=30,
            )

            # 5. Drift: the app deleted behind its back is re-created with its id and secret.
            sso.admin("DeleteApp", admin_pb2.DeleteAppRequest(app_id=app_id), token)
            assert sso.login_code(app_id, first_secret, email) != grpc.StatusCode.OK
            wait_for(
                lambda: sso.login_code(app_id, first_secret, email),
                lambda code: code == grpc.StatusCode.OK,
                "the re-created app to accept its old secret",
                timeout=30,
            )
            assert app_status(kube, namespace)["status"]["appId"] == app_id

            # 6. The Secret deleted: re-written with a new secret (the old one was never
            # kept anywhere else), and the new one works.
            kube.kubectl("delete", "secret", "billing-sso-credentials", "-n", namespace)
            secret = wait_for(
                lambda: get_or_none(kube, "secret", "billing-sso-credentials", namespace),
                lambda s: s is not None,
                "the Secret to be re-created",
                timeout=30,
            )
            second_secret = secret_data(secret)["SSO_CLIENT_SECRET"]
            assert second_secret != first_secret
            assert sso.login_code(app_id, second_secret, email) == grpc.StatusCode.OK

            # 7. A spec change reaches the server.
            kube.kubectl(
                "patch",
                "clientapp",
                "billing",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"redirectUris": ["https://billing.example.com/v2"]}}),
            )
            wait_for(
                lambda: list(
                    sso.admin(
                        "GetApp", admin_pb2.GetAppRequest(app_id=app_id), token
                    ).app.redirect_uris
                ),
                lambda uris: uris == ["https://billing.example.com/v2"],
                "redirect URIs updated",
                timeout=30,
            )

            # Every step left an Event; the only rotation was the one the lost Secret needed.
            events = wait_for(
                lambda: kube.get_json(
                    "events", "-n", namespace, "--field-selector", "involvedObject.name=billing"
                )["items"],
                lambda items: (
                    {"Registered", "DriftRepaired", "Recreated", "SecretRotated"}
                    <= {e["reason"] for e in items}
                ),
                "Events of every step",
            )
            rotations = [e for e in events if e["reason"] == "SecretRotated"]
            assert [e.get("count", 1) for e in rotations] == [1], rotations
            assert "(SecretLost)" in rotations[0]["message"]

            # 8. Deletion: the app leaves the SSO, the Secret goes, the finalizer lets go.
            assert "sso.dev/finalizer" in app_status(kube, namespace)["metadata"]["finalizers"]
            kube.kubectl("delete", "clientapp", "billing", "-n", namespace, "--wait=false")
            wait_for(
                lambda: app_status(kube, namespace),
                lambda a: a is None,
                "the ClientApp to be deleted",
            )
            sso.admin(
                "GetApp",
                admin_pb2.GetAppRequest(app_id=app_id),
                token,
                code=grpc.StatusCode.NOT_FOUND,
            )
            assert sso.login_code(app_id, second_secret, email) != grpc.StatusCode.OK
            assert get_or_none(kube, "secret", "billing-sso-credentials", namespace) is None
            kube.kubectl("delete", "ssoinstance", "sso", "-n", instance_namespace)


def test_scheduled_rotation_keeps_the_previous_secret_for_the_overlap(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    """interval 20s, overlap 10s: the operator rotates on its own; each secret outlives its
    successor's arrival by the overlap. Here the admin token Secret exists beforehand (as the
    instance reconciler makes it), so the operator uses it and creates nothing."""
    kube = kube_cluster
    apply_current_crd(kube)
    token = "t" * 48
    create_admin_token(kube, instance_namespace, token)
    with ServiceThread(tmp_path, pg_url, redis_server) as sso:
        sso.mount_admin_token(token)
        with operator(namespace, monkeypatch, f"{instance_namespace}/sso={sso.target}"):
            kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
            mark_instance_ready(kube, "sso", instance_namespace)
            spec = {
                "instanceRef": {"name": "sso", "namespace": instance_namespace},
                "secretRotation": {"interval": "20s", "overlap": "10s"},
                "credentialsSecret": {"name": "custom-name"},
            }
            kube.apply(clientapp_manifest("billing", namespace, spec))
            app = wait_ready(kube, namespace)
            app_id = app["status"]["appId"]
            first = secret_data(kube.get_json("secret", "custom-name", "-n", namespace))
            email = new_email("sched")
            sso.register(email)
            assert sso.login_code(app_id, first["SSO_CLIENT_SECRET"], email) == grpc.StatusCode.OK
            last = app["status"]["lastRotationTime"]
            assert app["status"]["nextRotationTime"] > last

            second = wait_for(
                lambda: secret_data(kube.get_json("secret", "custom-name", "-n", namespace)),
                lambda d: d["SSO_CLIENT_SECRET"] != first["SSO_CLIENT_SECRET"],
                "the scheduled rotation",
                timeout=45,
            )
            seen = time.monotonic()
            assert sso.login_code(app_id, second["SSO_CLIENT_SECRET"], email) == grpc.StatusCode.OK
            assert sso.login_code(app_id, first["SSO_CLIENT_SECRET"], email) == grpc.StatusCode.OK
            time.sleep(max(0.0, seen + 12 - time.monotonic()))
            assert sso.login_code(app_id, first["SSO_CLIENT_SECRET"], email) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            app = app_status(kube, namespace)
            assert app["status"]["lastRotationTime"] > last
            reasons = [
                e["message"]
                for e in kube.get_json(
                    "events", "-n", namespace, "--field-selector", "involvedObject.name=billing"
                )["items"]
                if e["reason"] == "SecretRotated"
            ]
            assert reasons and all("(Scheduled)" in m for m in reasons), reasons
            # Nothing else was created in the instance's namespace by the operator.
            assert len(kube.get_json("secret", "-n", instance_namespace)["items"]) == 1
            kube.kubectl("delete", "clientapp", "billing", "-n", namespace, "--wait=false")
            wait_for(lambda: app_status(kube, namespace), lambda a: a is None, "deletion")
            assert get_or_none(kube, "secret", "custom-name", namespace) is None


def test_clientapp_through_a_separate_admin_port(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    """Checklist I4 as the operator deploys it: the service serves Admin only on its admin
    port (SSO_SERVER__ADMIN_PORT); the operator registers the app there, while the
    credentials Secret names the public port, where the app logs in and Admin is absent."""
    kube = kube_cluster
    apply_current_crd(kube)
    token = "a" * 48
    create_admin_token(kube, instance_namespace, token)
    with ServiceThread(tmp_path, pg_url, redis_server, admin_port=True) as sso:
        assert sso.admin_target != sso.target
        sso.mount_admin_token(token)
        key = f"{instance_namespace}/sso"
        with operator(namespace, monkeypatch, f"{key}={sso.target}", f"{key}={sso.admin_target}"):
            kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
            mark_instance_ready(kube, "sso", instance_namespace)
            spec = {"instanceRef": {"name": "sso", "namespace": instance_namespace}}
            kube.apply(clientapp_manifest("billing", namespace, spec))
            app = wait_ready(kube, namespace)
            app_id = app["status"]["appId"]
            data = secret_data(kube.get_json("secret", "billing-sso-credentials", "-n", namespace))
            assert (
                data["SSO_ENDPOINT"] == sso.target
            )  # apps get the public port, never the admin one
            email = new_email("adminport")
            sso.register(email)
            assert sso.login_code(app_id, data["SSO_CLIENT_SECRET"], email) == grpc.StatusCode.OK
            got = sso.admin("GetApp", admin_pb2.GetAppRequest(app_id=app_id), token)
            assert got.app.app_id == app_id

            # The public port has no Admin service at all: the same call is UNIMPLEMENTED.
            async def on_public_port() -> grpc.StatusCode:
                async with grpc.aio.insecure_channel(sso.target) as channel:
                    try:
                        await admin_pb2_grpc.AdminStub(channel).GetApp(
                            admin_pb2.GetAppRequest(app_id=app_id),
                            metadata=(("authorization", f"Bearer {token}"),),
                            timeout=10,
                        )
                    except grpc.aio.AioRpcError as error:
                        return error.code()
                return grpc.StatusCode.OK

            assert sso.call(on_public_port()) == grpc.StatusCode.UNIMPLEMENTED


def test_spec_the_instance_rejects_fails_until_fixed(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    """The CRD admits any absolute URI; the SSO refuses plain http to a non-loopback host
    (INVALID_ARGUMENT): a permanent failure for this generation, Ready after the fix."""
    kube = kube_cluster
    apply_current_crd(kube)
    token = "r" * 48
    create_admin_token(kube, instance_namespace, token)
    with ServiceThread(tmp_path, pg_url, redis_server) as sso:
        sso.mount_admin_token(token)
        with operator(namespace, monkeypatch, f"{instance_namespace}/sso={sso.target}"):
            kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
            mark_instance_ready(kube, "sso", instance_namespace)
            spec: dict[str, Any] = {
                "instanceRef": {"name": "sso", "namespace": instance_namespace},
                "redirectUris": ["http://billing.example.com/cb"],
            }
            kube.apply(clientapp_manifest("billing", namespace, spec))
            app = wait_for(
                lambda: app_status(kube, namespace),
                lambda a: (a or {}).get("status", {}).get("phase") == "Failed",
                "phase Failed",
            )
            ready = condition(app, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "RejectedByInstance")
            assert "redirect_uri" in ready["message"]
            assert get_or_none(kube, "secret", "billing-sso-credentials", namespace) is None
            kube.kubectl(
                "patch",
                "clientapp",
                "billing",
                "-n",
                namespace,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"redirectUris": ["https://billing.example.com/cb"]}}),
            )
            app = wait_for(
                lambda: app_status(kube, namespace),
                lambda a: (a or {}).get("status", {}).get("phase") == "Ready",
                "phase Ready after the fix",
            )
            assert app["status"]["observedGeneration"] == 2
            assert get_or_none(kube, "secret", "billing-sso-credentials", namespace) is not None
            kube.kubectl("delete", "clientapp", "billing", "-n", namespace, "--wait=false")
            wait_for(lambda: app_status(kube, namespace), lambda a: a is None, "deletion")


def test_a_restarted_operator_resumes_without_registering_again(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    """Resume is idempotent: same app, same secret, one app of that name in the SSO."""
    kube = kube_cluster
    apply_current_crd(kube)
    token = "s" * 48
    create_admin_token(kube, instance_namespace, token)
    with ServiceThread(tmp_path, pg_url, redis_server) as sso:
        sso.mount_admin_token(token)
        overrides = f"{instance_namespace}/sso={sso.target}"
        kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
        mark_instance_ready(kube, "sso", instance_namespace)
        spec = {"instanceRef": {"name": "sso", "namespace": instance_namespace}}
        with operator(namespace, monkeypatch, overrides):
            kube.apply(clientapp_manifest("billing", namespace, spec))
            app = wait_ready(kube, namespace)
        before = secret_data(kube.get_json("secret", "billing-sso-credentials", "-n", namespace))
        with operator(namespace, monkeypatch, overrides):
            # Resume, then at least one drift check (resync 1 s, timer tick 5 s).
            time.sleep(8)
            after = app_status(kube, namespace)
            assert after["status"]["appId"] == app["status"]["appId"]
            assert after["status"]["phase"] == "Ready"
            secret = kube.get_json("secret", "billing-sso-credentials", "-n", namespace)
            assert secret_data(secret) == before
            apps = sso.admin("ListApps", admin_pb2.ListAppsRequest(page_size=100), token).apps
            assert [a.app_id for a in apps if a.name == f"{namespace}.billing"] == [
                app["status"]["appId"]
            ]
            kube.kubectl("delete", "clientapp", "billing", "-n", namespace, "--wait=false")
            wait_for(lambda: app_status(kube, namespace), lambda a: a is None, "deletion")


def test_many_clientapps_at_once(
    kube_cluster: Any,
    namespace: str,
    instance_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    """20 ClientApps applied in one request: 20 apps, 20 distinct working secrets."""
    kube = kube_cluster
    apply_current_crd(kube)
    token = "m" * 48
    create_admin_token(kube, instance_namespace, token)
    count = 20
    with ServiceThread(tmp_path, pg_url, redis_server) as sso:
        sso.mount_admin_token(token)
        with operator(namespace, monkeypatch, f"{instance_namespace}/sso={sso.target}"):
            kube.apply(instance_manifest("sso", instance_namespace, sso.issuer))
            mark_instance_ready(kube, "sso", instance_namespace)
            spec = {"instanceRef": {"name": "sso", "namespace": instance_namespace}}
            items = [
                json.loads(clientapp_manifest(f"app{i}", namespace, spec)) for i in range(count)
            ]
            started = time.monotonic()
            kube.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
            apps = wait_for(
                lambda: kube.get_json("clientapps", "-n", namespace)["items"],
                lambda found: (
                    len(found) == count
                    and all(a.get("status", {}).get("phase") == "Ready" for a in found)
                ),
                f"{count} ClientApps Ready",
                timeout=120,
            )
            elapsed = time.monotonic() - started
            # Reported, not asserted (the machine is shared): kopf's log capture owns stdout.
            sys.__stderr__.write(f"\n[clientapp] {count} ClientApps Ready in {elapsed:.1f} s\n")
            ids = {a["status"]["appId"] for a in apps}
            assert len(ids) == count
            secrets_seen = set()
            for app in apps:
                email = new_email("many")  # one user per app: logins are limited per email
                sso.register(email)
                data = secret_data(
                    kube.get_json("secret", app["status"]["secretName"], "-n", namespace)
                )
                assert data["SSO_APP_ID"] == str(app["status"]["appId"])
                secrets_seen.add(data["SSO_CLIENT_SECRET"])
                code = sso.login_code(app["status"]["appId"], data["SSO_CLIENT_SECRET"], email)
                assert code == grpc.StatusCode.OK
            assert len(secrets_seen) == count
            listed = sso.admin("ListApps", admin_pb2.ListAppsRequest(page_size=100), token).apps
            assert sorted(a.name for a in listed if a.name.startswith(f"{namespace}.")) == sorted(
                f"{namespace}.app{i}" for i in range(count)
            )
            kube.kubectl("delete", "clientapps", "--all", "-n", namespace, "--wait=false")
            wait_for(
                lambda: kube.get_json("clientapps", "-n", namespace)["items"],
                lambda found: found == [],
                "every ClientApp deleted",
                timeout=120,
            )
            listed = sso.admin("ListApps", admin_pb2.ListAppsRequest(page_size=100), token).apps
            assert [a.name for a in listed if a.name.startswith(f"{namespace}.")] == []
