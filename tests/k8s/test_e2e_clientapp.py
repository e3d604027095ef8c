"""Issue 6 end to end: SSOInstance + ClientApp → credentials Secret → a relying app that works.

A platform team applies an SSOInstance and a ClientApp; the operator (the whole
handler set, KopfRunner) provisions the instance under kwok until its own
reconciler reports ``Ready`` and creates the admin token Secret; the SSO
service that instance stands for is the real one on PostgreSQL + Redis, on the
host (pods do not really run here), reached through the endpoint override,
with the admin token delivered to it from the Secret as a mounted file would
be. The relying app (``e2e/relying_app.py``) reads nothing but the credentials
Secret's data, registers and logs a user in as a confidential client, and
verifies the access token offline against the JWKS URI with PyJWT. An on-demand
rotation keeps it working through the overlap (old and new secret both
accepted, then only the new one); deleting the ClientApp ends its credentials.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from clientapp_support import (
    PASSWORD,
    ServiceThread,
    apply_current_crd,
    clientapp_manifest,
    condition,
    get_or_none,
    instance_manifest,
    new_email,
    operator,
    secret_data,
    wait_for,
)
from relying_app import Credentials, LoginRefused, RelyingApp

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
OVERLAP_S = 20


def sign_in(sso: ServiceThread, env: dict[str, str], email: str) -> dict[str, Any]:
    """What the relying app does for one user, run on the service thread's loop."""

    async def run() -> dict[str, Any]:
        async with RelyingApp(Credentials.from_env(env)) as app:
            return await app.sign_in(email, PASSWORD)

    return sso.call(run())


def refused(sso: ServiceThread, env: dict[str, str], email: str) -> str:
    try:
        sign_in(sso, env, email)
    except LoginRefused as error:
        return error.code.name
    return "OK"


def test_clientapp_end_to_end(
    kube_cluster: Any,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pg_url: str,
    redis_server: str,
) -> None:
    kube = kube_cluster
    apply_current_crd(kube)
    with (
        ServiceThread(tmp_path, pg_url, redis_server) as sso,
        operator(namespace, monkeypatch, f"{namespace}/sso={sso.target}"),
    ):
        # The instance, provisioned by the operator's own reconciler under kwok.
        kube.apply(instance_manifest("sso", namespace, sso.issuer))
        wait_for(
            lambda: get_or_none(kube, "ssoinstance", "sso", namespace),
            lambda i: condition(i, "Ready").get("status") == "True",
            "SSOInstance Ready (the instance reconciler, under kwok)",
            timeout=120,
        )
        token_secret = kube.get_json("secret", "sso-admin-token", "-n", namespace)
        sso.mount_admin_token(base64.b64decode(token_secret["data"]["token"]).decode())

        spec = {
            "instanceRef": {"name": "sso"},
            "displayName": "Billing portal",
            "redirectUris": ["https://billing.example.com/callback"],
            "secretRotation": {"interval": "2160h", "overlap": f"{OVERLAP_S}s"},
        }
        kube.apply(clientapp_manifest("billing", namespace, spec))
        secret = wait_for(
            lambda: get_or_none(kube, "secret", "billing-sso-credentials", namespace),
            lambda s: s is not None,
            "the credentials Secret",
        )
        app = wait_for(
            lambda: get_or_none(kube, "clientapp", "billing", namespace),
            lambda a: (a or {}).get("status", {}).get("phase") == "Ready",
            "ClientApp Ready",
        )
        env = secret_data(secret)
        assert env["SSO_APP_ID"] == str(app["status"]["appId"]) == env["CLIENT_ID"]
        assert env["SSO_JWKS_URI"] == f"{sso.issuer}/.well-known/jwks.json"

        # The relying app, configured by the Secret alone.
        email = new_email("e2e")
        sso.call(_register(env, email))
        claims = sign_in(sso, env, email)
        assert claims["aud"] == env["SSO_APP_ID"] and claims["iss"] == env["SSO_ISSUER"]
        assert claims["sub"]

        # On-demand rotation: the new secret lands in the Secret; old and new both work.
        old_env = dict(env)
        kube.kubectl(
            "annotate",
            "clientapp",
            "billing",
            "-n",
            namespace,
            "sso.dev/rotate-secret=first",
        )
        secret = wait_for(
            lambda: get_or_none(kube, "secret", "billing-sso-credentials", namespace),
            lambda s: secret_data(s)["SSO_CLIENT_SECRET"] != old_env["SSO_CLIENT_SECRET"],
            "the rotated secret",
            timeout=30,
        )
        rotated_at = time.monotonic()  # the rotation happened before this
        new_env = secret_data(secret)
        assert new_env["CLIENT_SECRET"] == new_env["SSO_CLIENT_SECRET"]
        assert new_env["SSO_APP_ID"] == old_env["SSO_APP_ID"]
        assert sign_in(sso, new_env, email)["aud"] == env["SSO_APP_ID"]
        assert sign_in(sso, old_env, email)["aud"] == env["SSO_APP_ID"], "overlap"
        app = get_or_none(kube, "clientapp", "billing", namespace)
        assert app["status"]["rotationRequest"] == "first"
        assert time.monotonic() - rotated_at < OVERLAP_S, "too slow to observe the overlap"
        # After the overlap only the new secret works. (One attempt each: failed logins
        # count against the user's login rate limit, so no polling with the old secret.)
        time.sleep(max(0.0, rotated_at + OVERLAP_S + 2 - time.monotonic()))
        assert refused(sso, old_env, email) == "UNAUTHENTICATED"
        assert refused(sso, new_env, email) == "OK"

        # Deleting the ClientApp ends its credentials.
        kube.kubectl("delete", "clientapp", "billing", "-n", namespace, "--wait=false")
        wait_for(
            lambda: get_or_none(kube, "clientapp", "billing", namespace),
            lambda a: a is None,
            "the ClientApp to be deleted",
        )
        assert refused(sso, new_env, email) != "OK"
        assert get_or_none(kube, "secret", "billing-sso-credentials", namespace) is None

        kube.kubectl("delete", "ssoinstance", "sso", "-n", namespace, "--wait=false")
        wait_for(
            lambda: get_or_none(kube, "ssoinstance", "sso", namespace),
            lambda i: i is None,
            "the SSOInstance to be deleted",
        )


async def _register(env: dict[str, str], email: str) -> None:
    async with RelyingApp(Credentials.from_env(env)) as app:
        await app.register(email, PASSWORD)


def test_relying_app_reads_hydra_maester_keys() -> None:
    """Apps moving from Ory read CLIENT_ID/CLIENT_SECRET; the SSO_* names win when both exist."""
    base = {"SSO_ENDPOINT": "e:1", "SSO_ISSUER": "https://i", "SSO_JWKS_URI": "https://j"}
    hydra = Credentials.from_env({**base, "CLIENT_ID": "5", "CLIENT_SECRET": "s"})
    assert (hydra.app_id, hydra.client_secret) == (5, "s")
    both = Credentials.from_env(
        {
            **base,
            "CLIENT_ID": "5",
            "CLIENT_SECRET": "s",
            "SSO_APP_ID": "6",
            "SSO_CLIENT_SECRET": "t",
        }
    )
    assert (both.app_id, both.client_secret) == (6, "t")
