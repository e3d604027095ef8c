"""The one place where sso-operator's own Kubernetes API calls are made and their errors judged.

Why this module exists: kopf retries a handler according to the exception it
raises, so every API failure must become either a ``kopf.TemporaryError`` (with
a delay that fits the cause: a conflict resolves in a second, a missing RBAC
rule needs a person) or a ``kopf.PermanentError`` (the object we tried to write
is invalid, and retrying the same request cannot succeed). Doing that mapping
once, here, keeps reconcilers free of HTTP status codes, and keeps every other
module free of API clients (they build manifests; this module sends them).

It also holds the operator's own small API client (:func:`apply` for
server-side apply, :func:`get`, :func:`create`, :func:`replace`,
:func:`delete`, …), built from the credentials kopf logged in with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random  # noqa: TID251 - retry jitter, nothing secret
from collections.abc import AsyncIterator, Callable, Mapping
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
_JITTER = random.Random()  # noqa: S311 - spreads retries, nothing secret
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


# ------------------------------------------------------------- API requests
#
# kopf keeps its API client private, so the operator has its own small one: an
# aiohttp session built from the same credentials kopf logs in with (the login
# handler remembers them here). Every request goes through :func:`api_call`, so
# failures are judged in one place.

FIELD_MANAGER = "sso-operator"

#: apiVersion/kind → (path prefix, plural) of the kinds the operator writes.
KINDS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("batch/v1", "CronJob"): ("/apis/batch/v1", "cronjobs"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        "/apis/autoscaling/v2",
        "horizontalpodautoscalers",
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("sso.dev/v1alpha1", "SSOInstance"): ("/apis/sso.dev/v1alpha1", "ssoinstances"),
}

_state: dict[str, Any] = {}


def remember_login(settings: kopf.OperatorSettings, info: kopf.ConnectionInfo) -> None:
    """Called by the login handler: later requests use these credentials."""
    _state["settings"] = settings
    _state["info"] = info
    _state.pop("session", None)  # rebuilt lazily with the new credentials


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"sso-operator does not manage {api_version} {kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


async def _session() -> tuple[aiohttp.ClientSession, str]:
    info: kopf.ConnectionInfo | None = _state.get("info")
    if info is None:
        settings = _state.get("settings") or kopf.OperatorSettings()
        info = connection(settings, logging.getLogger(__name__))
        _state["info"] = info
    session: aiohttp.ClientSession | None = _state.get("session")
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        _state["session"] = session
    return session, info.server.rstrip("/")


async def request(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str = "application/json",
    params: Mapping[str, str] | None = None,
) -> Any:
    """One API request; raises ``ApiException`` (status, body, headers) on an error status."""
    session, server = await _session()
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    async with session.request(
        method, server + path, data=data, headers=headers, params=params
    ) as response:
        text = await response.text()
        if response.status >= 400:
            if response.status == 401:  # re-read the credentials (a rotated token) next time
                _state.pop("info", None)
                _state.pop("session", None)
            error = ApiException(status=response.status, reason=response.reason)
            error.body = text  # type: ignore[assignment]
            error.headers = dict(response.headers)  # type: ignore[assignment]
            raise error
        return json.loads(text) if text else None


async def apply(
    manifest: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
) -> dict[str, Any]:
    """Server-side apply of a namespaced manifest (field manager ``sso-operator``, forced).

    Idempotent: applying the same manifest again changes nothing, and fields the
    operator stops sending are removed; fields others own (an HPA's replicas,
    kwok's status) are left alone.
    """
    meta = manifest["metadata"]
    what = describe(manifest["kind"], meta["namespace"], meta["name"])
    path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    async with api_call(f"apply {what}"):
        result: dict[str, Any] = await request(
            "PATCH",
            path,
            body=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": str(force).lower()},
        )
    return result


async def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        async with api_call(f"get {describe(kind, namespace, name)}", missing_ok=True):
            found: dict[str, Any] = await request("GET", _path(api_version, kind, namespace, name))
            return found
    except NotFoundError:
        return None


async def list_objects(
    api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Objects of a kind in a namespace matching every label in ``selector``."""
    label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
    async with api_call(f"list {kind} in {namespace}"):
        found = await request(
            "GET", _path(api_version, kind, namespace), params={"labelSelector": label_selector}
        )
    items: list[dict[str, Any]] = found.get("items", [])
    return items


async def create(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create the object; None when it already exists (someone was first: not an error)."""
    meta = manifest["metadata"]
    action = f"create {describe(manifest['kind'], meta['namespace'], meta['name'])}"
    try:
        created: dict[str, Any] = await request(
            "POST",
            _path(manifest["apiVersion"], manifest["kind"], meta["namespace"]),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER},
        )
    except ApiException as error:
        if error.status == 409:
            return None
        raise translate(error, action) from error
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as error:
        raise translate(error, action) from error
    return created


async def replace(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Replace (PUT) the object; ``metadata.resourceVersion`` makes it a compare-and-swap.

    A 409 means someone wrote the object since it was read: a temporary error.
    """
    meta = manifest["metadata"]
    path = _path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    async with api_call(f"replace {describe(manifest['kind'], meta['namespace'], meta['name'])}"):
        result: dict[str, Any] = await request(
            "PUT", path, body=manifest, params={"fieldManager": FIELD_MANAGER}
        )
    return result


async def merge_patch(
    api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
) -> None:
    """A JSON merge patch (used for metadata only: owner references, labels)."""
    async with api_call(f"patch {describe(kind, namespace, name)}"):
        await request(
            "PATCH",
            _path(api_version, kind, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )


async def update_status(
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    compute: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    *,
    attempts: int = 10,
) -> Mapping[str, Any] | None:
    """Compare-and-swap on the status subresource; returns the change written.

    Reads the object, asks ``compute`` for the change from its fresh status (None:
    nothing to write), and merge-patches it together with the ``resourceVersion``
    it read, so the API server refuses it (409) if anybody wrote in between; then
    it reads again and recomputes. Why: a list in a merge patch replaces the whole
    list, and ``status.conditions`` is one list whose entries separate handlers
    (the reconciler, the key and backup timers) own and write concurrently; a
    patch computed from an older copy put back entries another handler had just
    changed. Returns ``{}`` when nothing needed writing, None when the object is gone.
    A loser waits a random 0-20 ms, then up to 40, 80 ... 500 ms, before it reads again.
    """
    path = _path(api_version, kind, namespace, name) + "/status"
    what = f"update status of {describe(kind, namespace, name)}"
    for attempt in range(attempts):
        if attempt:  # jittered backoff, as client-go's RetryOnConflict: losers spread out
            await asyncio.sleep(_JITTER.uniform(0, min(0.5, 0.01 * 2**attempt)))
        current = await get(api_version, kind, namespace, name)
        if current is None:
            return None
        change = compute(current.get("status") or {})
        if not change:
            return {}
        version = current["metadata"]["resourceVersion"]
        body = {"metadata": {"resourceVersion": version}, "status": dict(change)}
        try:
            await request(
                "PATCH",
                path,
                body=body,
                content_type="application/merge-patch+json",
                params={"fieldManager": FIELD_MANAGER},
            )
            return change
        except ApiException as error:
            if error.status != 409:
                raise translate(error, what) from error
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as error:
            raise translate(error, what) from error
    raise kopf.TemporaryError(f"{what} failed: lost {attempts} write races in a row", delay=1.0)


async def delete(
    api_version: str, kind: str, namespace: str, name: str, *, propagation: str = "Background"
) -> bool:
    """Delete the object; False when it was already gone."""
    try:
        async with api_call(f"delete {describe(kind, namespace, name)}", missing_ok=True):
            await request(
                "DELETE",
                _path(api_version, kind, namespace, name),
                body={"propagationPolicy": propagation},
            )
            return True
    except NotFoundError:
        return False
