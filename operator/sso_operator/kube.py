"""The one place where sso-operator's own Kubernetes API calls are made and their errors judged.

Why this module exists: kopf retries a handler according to the exception it
raises, so every API failure must become either a ``kopf.TemporaryError`` (with
a delay that fits the cause: a conflict resolves in a second, a missing RBAC
rule needs a person) or a ``kopf.PermanentError`` (the object we tried to write
is invalid, and retrying the same request cannot succeed). Doing that mapping
once, here, keeps reconcilers free of HTTP status codes, and keeps every other
module free of API clients (they build manifests; this module sends them).

Today the reconcilers only write status through kopf's patch; the builders of
the provisioning work call :func:`api_call` around their requests.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

#: Seconds before retrying, by HTTP status of the failed request.
RETRY_DELAYS: Mapping[int, float] = {
    401: 30.0,  # credentials expired or rotated: the client reloads them
    403: 60.0,  # RBAC is missing: needs a person, so retry slowly
    404: 5.0,  # something we depend on does not exist yet
    409: 1.0,  # lost an optimistic-concurrency race: re-read and retry at once
    410: 1.0,  # resourceVersion too old
    429: 5.0,  # throttled (Retry-After wins when present)
    500: 5.0,
    502: 5.0,
    503: 5.0,
    504: 5.0,
}
#: Statuses that mean "this request is wrong": the manifest or patch we sent is invalid.
PERMANENT_STATUSES = frozenset({400, 405, 415, 422})
NETWORK_RETRY_DELAY = 5.0
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class NotFoundError(Exception):
    """Raised (inside :func:`api_call` with ``missing_ok``) when the object does not exist."""


def status_message(body: object) -> str:
    """The ``message`` of a Kubernetes ``Status`` response body, or the body itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return body.strip()
        if isinstance(parsed, Mapping) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])
        return body.strip()
    return ""


def _retry_after(headers: object, default: float) -> float:
    if isinstance(headers, Mapping):
        raw = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return max(float(raw), 1.0) if raw is not None else default
        except (TypeError, ValueError):
            return default
    return default


def translate(error: BaseException, action: str) -> Exception:
    """Map an API-client exception to the kopf error that retries it correctly.

    ``action`` says what was attempted ("create Deployment ns/name"); it starts
    every message, so Events and logs read as sentences. Anything unknown is
    returned unchanged: kopf then applies its default backoff.
    """
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        detail = status_message(error.body) or str(error.reason or "")
        message = f"{action} failed: HTTP {status} {detail}".rstrip()
        if status in PERMANENT_STATUSES:
            return kopf.PermanentError(message)
        if status == 403:
            message += " (check the operator's ClusterRole)"
        delay = RETRY_DELAYS.get(status, NETWORK_RETRY_DELAY)
        if status == 429:
            delay = _retry_after(error.headers, delay)
        return kopf.TemporaryError(message, delay=delay)
    if isinstance(error, aiohttp.ClientError | TimeoutError | ConnectionError):
        return kopf.TemporaryError(
            f"{action} failed: cannot reach the API server ({error.__class__.__name__}: {error})",
            delay=NETWORK_RETRY_DELAY,
        )
    if isinstance(error, Exception):
        return error
    raise error


@asynccontextmanager
async def api_call(action: str, *, missing_ok: bool = False) -> AsyncIterator[None]:
    """Run API requests, translating their failures with :func:`translate`.

    With ``missing_ok`` a 404 raises :class:`NotFoundError`, for callers that
    treat "not there" as a normal answer (reads before create, deletes).
    """
    try:
        yield
    except ApiException as error:
        if missing_ok and error.status == 404:
            raise NotFoundError(action) from error
        raise translate(error, action) from error
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as error:
        raise translate(error, action) from error


def describe(kind: str, namespace: str | None, name: str) -> str:
    """``Deployment ns/name``: how objects are named in messages."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to a custom resource, so its children are garbage-collected with it.

    ``blockOwnerDeletion`` needs RBAC on ``<plural>/finalizers`` (granted by the chart).
    """
    metadata = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def in_cluster_connection(
    settings: kopf.OperatorSettings,
    env: Mapping[str, str] | None = None,
    account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> kopf.ConnectionInfo | None:
    """Credentials of the pod's ServiceAccount, or None outside a cluster.

    Like the official clients, the server comes from ``KUBERNETES_SERVICE_HOST``
    and ``_PORT`` (no DNS needed). The token is read at every (re-)login, so a
    rotated projected token is picked up when the API answers 401.
    """
    source = os.environ if env is None else env
    token_file = account_dir / "token"
    host = source.get("KUBERNETES_SERVICE_HOST")
    if not host or not token_file.exists():
        return None
    port = source.get("KUBERNETES_SERVICE_PORT", "443")
    server_host = f"[{host}]" if ":" in host else host
    ca_file = account_dir / "ca.crt"
    ns_file = account_dir / "namespace"
    return kopf.ConnectionInfo(
        server=f"https://{server_host}:{port}",
        ca_path=str(ca_file) if ca_file.exists() else None,
        token=token_file.read_text(encoding="utf-8").strip() or None,
        default_namespace=ns_file.read_text(encoding="utf-8").strip() if ns_file.exists() else None,
        trust_env=settings.networking.trust_env,
    )


def connection(settings: kopf.OperatorSettings, logger: kopf.Logger) -> kopf.ConnectionInfo:
    """The operator's credentials: the pod's ServiceAccount, else ``$KUBECONFIG``.

    kopf's default login goes through kubernetes_asyncio, which reads the
    ``KUBECONFIG`` variable once, at import time; this one reads it at every
    login, so the process's current environment decides. Kubeconfig users with
    client certificates, tokens or basic auth work; exec plugins do not.
    """
    info = in_cluster_connection(settings)
    if info is not None:
        logger.debug("Logging in with the pod's ServiceAccount.")
        return info
    from_kubeconfig = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if from_kubeconfig is None:
        raise kopf.LoginError(
            "No credentials: not in a pod with a ServiceAccount, and no $KUBECONFIG "
            "or ~/.kube/config"
        )
    logger.debug("Logging in with the kubeconfig.")
    return from_kubeconfig
