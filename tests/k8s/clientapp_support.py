"""Shared pieces of the ClientApp tests: a real SSO service beside the real apiserver.

Why this exists: pods do not really run in the local control plane (kwok only
marks them Running), so the SSO service an SSOInstance stands for runs here, on
the host: the real service (``tests/api/sso_harness.py``: the composition ``sso
serve`` runs) on a real PostgreSQL and Redis, in a thread with its own event
loop so that it keeps serving while a test blocks in kubectl or waits. The
operator (``kopf.testing.KopfRunner``, another thread) reaches it through
``SSO_OPERATOR_ENDPOINT_OVERRIDES``; its HTTP port is chosen up front so the
instance's issuer (and so the JWKS URI in the credentials Secret) is a URL that
answers. The admin token reaches the service the way a mounted Secret does: a
token file (``admin.token_file``) the test writes from the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from kopf.testing import KopfRunner

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
for _sub in ("api", "k8s"):
    if str(TESTS / _sub) not in sys.path:
        sys.path.append(str(TESTS / _sub))
if str(REPO / "e2e") not in sys.path:
    sys.path.append(str(REPO / "e2e"))

from operator_support import (  # noqa: E402
    CLIENTAPP_CRD,
    apply_crd,
    condition,
    free_port,
    get_or_none,
    kopf_operator,
    patch_instance_status,
    wait_for,
)
from sso_harness import Running, make_settings, start, stop  # noqa: E402

from sso.config import AdminSettings, ServerSettings, TokenSettings  # noqa: E402
from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc  # noqa: E402

T = TypeVar("T")
PASSWORD = "correct horse battery staple"


class ServiceThread:
    """The SSO service running in a thread; :meth:`call` runs a coroutine on its loop."""

    def __init__(
        self, tmp: Path, db_url: str, redis_url: str | None, *, admin_port: bool = False
    ) -> None:
        """``admin_port``: serve sso.v1.Admin on a port of its own, as the operator sets it."""
        self.token_file = tmp / "admin-token"
        self.token_file.write_text("")
        self.http_port = free_port()
        settings = make_settings(tmp, db_url, redis_url)
        settings.server = ServerSettings(
            host="127.0.0.1",
            port=0,
            http_host="127.0.0.1",
            http_port=self.http_port,
            admin_port=0 if admin_port else None,
        )
        settings.tokens = TokenSettings(issuer=self.issuer)
        settings.admin = AdminSettings(token_file=self.token_file)
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.running: Running | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def target(self) -> str:
        assert self.running is not None
        return self.running.target

    @property
    def admin_target(self) -> str:
        """Where sso.v1.Admin answers: the public port, or the admin port when separate."""
        assert self.running is not None
        return f"127.0.0.1:{self.running.server.admin_port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        self.running = self.call(start(self.settings), timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        if self.running is not None:
            self.call(stop(self.running))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def mount_admin_token(self, token: str) -> None:
        """What the kubelet does with the admin token Secret's volume (re-read by the service)."""
        self.token_file.write_text(token + "\n")

    # -- calls a test makes as a person with admin rights, or as a user ------------

    def admin(
        self, method: str, request: Any, token: str, *, code: grpc.StatusCode | None = None
    ) -> Any:
        """One Admin RPC; with ``code``, expect it to fail with that status and return None."""

        async def run() -> Any:
            async with grpc.aio.insecure_channel(self.admin_target) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                try:
                    result = await getattr(stub, method)(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    if code is not None and error.code() == code:
                        return None
                    raise
                assert code is None, f"{method} succeeded; expected {code}"
                return result

        return self.call(run())

    def login_code(self, app_id: int, client_secret: str, email: str) -> grpc.StatusCode:
        """Login through the app with its client secret; the status code (OK on success)."""

        async def run() -> grpc.StatusCode:
            async with grpc.aio.insecure_channel(self.target) as channel:
                stub = auth_pb2_grpc.AuthStub(channel)
                try:
                    await stub.Login(
                        auth_pb2.LoginRequest(email=email, password=PASSWORD, app_id=app_id),
                        metadata=(("x-client-secret", client_secret),),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

        return self.call(run())

    def register(self, email: str) -> None:
        async def run() -> None:
            async with grpc.aio.insecure_channel(self.target) as channel:
                await auth_pb2_grpc.AuthStub(channel).Register(
                    auth_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=10
                )

        self.call(run())


def new_email(tag: str) -> str:
    return f"{tag}.{secrets.token_hex(4)}@example.com"


@contextmanager
def operator(
    namespace: str, monkeypatch: pytest.MonkeyPatch, overrides: str, admin_overrides: str = ""
) -> Iterator[KopfRunner]:
    """sso-operator for one namespace, mapping instances to host processes; must exit cleanly."""
    env = {"SSO_OPERATOR_ENDPOINT_OVERRIDES": overrides, "SSO_OPERATOR_CLIENTAPP_RESYNC": "1"}
    if admin_overrides:
        env["SSO_OPERATOR_ADMIN_ENDPOINT_OVERRIDES"] = admin_overrides
    liveness = f"--liveness=http://127.0.0.1:{free_port()}/healthz"
    with kopf_operator(namespace, monkeypatch, liveness, env=env) as runner:
        yield runner


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def apply_current_crd(kube: Any) -> None:
    """A reused cluster may hold an older ClientApp CRD; the status fields must be current."""
    apply_crd(kube, CLIENTAPP_CRD, "clientapps.sso.dev")


def create_admin_token(kube: Any, namespace: str, token: str) -> None:
    """The instance's admin token Secret, as the SSOInstance reconciler would create it."""
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "sso-admin-token",
        "-n",
        namespace,
        f"--from-literal=token={token}",
    )


def instance_manifest(name: str, namespace: str, issuer: str) -> str:
    return json.dumps(
        {
            "apiVersion": "sso.dev/v1alpha1",
            "kind": "SSOInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"issuer": issuer},
        }
    )


def clientapp_manifest(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "sso.dev/v1alpha1",
            "kind": "ClientApp",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def mark_instance_ready(kube: Any, name: str, namespace: str) -> None:
    """Stand-in for the SSOInstance reconciler: write ``Ready=True`` through the status subresource.

    Used only for an instance in a namespace the test's operator does not watch,
    so no reconciler competes for its status; the service it stands for is the
    ServiceThread, and the ClientApp reaches it through the endpoint override.
    """
    patch_instance_status(
        kube,
        name,
        namespace,
        {
            "phase": "Ready",
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "message": "set by the test (stand-in for the instance reconciler)",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )


__all__ = [
    "PASSWORD",
    "ServiceThread",
    "admin_pb2",
    "admin_pb2_grpc",
    "apply_current_crd",
    "clientapp_manifest",
    "condition",
    "create_admin_token",
    "get_or_none",
    "instance_manifest",
    "mark_instance_ready",
    "new_email",
    "operator",
    "secret_data",
    "wait_for",
]
