"""Reconciling one ClientApp: read the instance and the Secret, converge the SSO and the Secret.

Why this module exists: the kopf handlers (:mod:`sso_operator.handlers.clientapp`)
stay thin registrations; the work they share lives here. :func:`reconcile` reads
the SSOInstance (is it Ready? where is it?), its admin token and the credentials
Secret, asks the instance's Admin API (:mod:`sso_operator.sso_admin`) for the
app and repairs whatever differs: a missing app is re-created (same id and
secret when possible), changed fields are updated, a due or requested rotation
is done, and the Secret is rewritten. It decides nothing itself: every rule is a
pure function in :mod:`sso_operator.clientapp`. Kubernetes calls go through
:mod:`sso_operator.kube`, so their failures become the right kopf errors.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from sso_operator import clientapp as logic
from sso_operator import conditions, kube, names, sso_admin
from sso_operator import status as statuses
from sso_operator.conditions import Condition
from sso_operator.settings import OperatorConfig
from sso_operator.spec import GROUP, VERSION, ClientAppSpec

#: Retry delay while the instance is missing or not Ready (no hot loop).
INSTANCE_WAIT_DELAY = 10.0
#: Retry delay while the credentials Secret's name is taken by someone else's Secret.
SECRET_CONFLICT_DELAY = 60.0


class Waiting(kopf.TemporaryError):
    """The instance is missing or not Ready; the ClientApp waits with a condition saying so."""


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _decoded(secret: Mapping[str, Any] | None) -> dict[str, str]:
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


async def get_instance(namespace: str, name: str) -> dict[str, Any] | None:
    """The SSOInstance, or None when it does not exist."""
    return await kube.get(f"{GROUP}/{VERSION}", "SSOInstance", namespace, name)


def instance_connection(instance: Mapping[str, Any], config: OperatorConfig) -> logic.Connection:
    """Where the instance answers (its status, else its name and spec; or the override)."""
    meta = instance["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    return logic.instance_connection(
        name=name,
        namespace=namespace,
        instance_spec=instance.get("spec") or {},
        instance_status=instance.get("status") or {},
        endpoint_override=config.grpc_endpoint(name, namespace, ""),
        admin_override=config.admin_endpoint(name, namespace, ""),
    )


async def admin_client(
    instance: Mapping[str, Any], connection: logic.Connection, config: OperatorConfig
) -> sso_admin.AdminClient:
    """An Admin API client of the instance, with its admin token."""
    token = await admin_token(instance)
    return sso_admin.AdminClient(connection.admin, token, timeout=config.admin_timeout)


async def admin_token(instance: Mapping[str, Any]) -> str:
    """The instance's admin token; the Secret is created (once, owned by the instance) if absent.

    The SSOInstance reconciler normally creates it and mounts it into the
    service; creating it here too only means whoever comes first generates it.
    """
    meta = instance["metadata"]
    namespace, secret_name = meta["namespace"], names.admin_token_secret(meta["name"])
    found = await kube.get("v1", "Secret", namespace, secret_name)
    if found is None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "labels": dict([logic.MANAGED_BY_LABEL]),
                "ownerReferences": [kube.owner_reference(instance)],
            },
            "type": "Opaque",
            "data": {"token": _b64(secrets.token_urlsafe(32))},
        }
        found = await kube.create(manifest) or await kube.get(
            "v1", "Secret", namespace, secret_name
        )
    token = _decoded(found).get("token", "").strip()
    if not token:
        raise kopf.TemporaryError(f"Secret {namespace}/{secret_name} has no key token", delay=30)
    return token


async def write_credentials(
    body: Mapping[str, Any], secret_name: str, data: Mapping[str, str], app: logic.ServerApp
) -> None:
    """Server-side apply of the credentials Secret, owned by the ClientApp."""
    meta = body["metadata"]
    await kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": meta["namespace"],
                "labels": {
                    logic.MANAGED_BY_LABEL[0]: logic.MANAGED_BY_LABEL[1],
                    "sso.dev/clientapp": meta["name"],
                },
                "annotations": {
                    logic.SECRET_APP_ID_ANNOTATION: str(app.app_id),
                    logic.SECRET_ROTATED_AT_ANNOTATION: str(app.secret_rotated_at),
                },
                "ownerReferences": [kube.owner_reference(body)],
            },
            "type": "Opaque",
            "data": {key: _b64(value) for key, value in data.items()},
        }
    )


def _write_status(
    patch: kopf.Patch,
    current: Mapping[str, Any],
    *,
    phase: str,
    wanted: list[Condition],
    instance: str,
    secret_name: str,
    generation: int | None,
    fields: Mapping[str, Any] | None = None,
) -> None:
    desired = statuses.clientapp_status(
        phase=phase,
        wanted=wanted,
        instance=instance,
        secret_name=secret_name,
        generation=generation,
        current=current,
        fields=fields,
    )
    patch.status.update(statuses.merge_patch(current, desired))


async def reconcile(
    *,
    body: kopf.Body,
    parsed: ClientAppSpec,
    current: Mapping[str, Any],
    generation: int | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
) -> dict[str, Any]:
    """Make the SSO and the Secret match the ClientApp; safe to call any number of times.

    Returns what it learnt (``appId``, ``rotationRequest``): the status patch only
    lands after the handler returns, so the caller remembers these for the next
    reconcile of the same object (see :mod:`sso_operator.handlers.clientapp`).
    """
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    ref_namespace = parsed.instance_ref.namespace or namespace
    instance_key = f"{ref_namespace}/{parsed.instance_ref.name}"
    secret_name = names.credentials_secret(name, parsed.credentials_secret.name)
    config = OperatorConfig.from_env()

    def status(phase: str, wanted: list[Condition], **fields: Any) -> None:
        _write_status(
            patch,
            current,
            phase=phase,
            wanted=wanted,
            instance=instance_key,
            secret_name=secret_name,
            generation=generation,
            fields=fields,
        )

    instance = await get_instance(ref_namespace, parsed.instance_ref.name)
    instance_ready = instance is not None and conditions.is_true(
        (instance.get("status") or {}).get("conditions"), conditions.READY
    )
    if instance is None or not instance_ready:
        why = "does not exist" if instance is None else "is not Ready"
        message = f"Waiting for SSOInstance {instance_key}: it {why}"
        status(
            statuses.PENDING,
            [
                Condition(conditions.READY, "False", "WaitingForInstance", message),
                Condition(
                    conditions.INSTANCE_READY,
                    "False",
                    "InstanceNotFound" if instance is None else "InstanceNotReady",
                    f"SSOInstance {instance_key} {why}",
                ),
            ],
        )
        raise Waiting(message, delay=INSTANCE_WAIT_DELAY)

    instance_ok = Condition(
        conditions.INSTANCE_READY, "True", "InstanceReady", f"SSOInstance {instance_key} is Ready"
    )
    connection = instance_connection(instance, config)
    existing = await kube.get("v1", "Secret", namespace, secret_name)
    if existing is not None and not owned_by(existing, uid):
        message = f"Secret {namespace}/{secret_name} exists and is not owned by this ClientApp"
        status(
            statuses.REGISTERING,
            [
                Condition(conditions.READY, "False", "SecretConflict", message),
                instance_ok,
            ],
        )
        raise kopf.TemporaryError(message, delay=SECRET_CONFLICT_DELAY)

    try:
        client = await admin_client(instance, connection, config)
        return await _converge(
            body=body,
            parsed=parsed,
            current=current,
            client=client,
            connection=connection,
            existing=_decoded(existing),
            existing_meta=(existing or {}).get("metadata", {}),
            secret_name=secret_name,
            status=status,
            instance_ok=instance_ok,
            logger=logger,
        )
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        if isinstance(error, Waiting):
            raise
        reason = getattr(error, "reason", "ReconcileError")
        failed = isinstance(error, kopf.PermanentError)
        status(
            statuses.FAILED if failed else statuses.REGISTERING,
            [Condition(conditions.READY, "False", reason, str(error)), instance_ok],
        )
        raise


async def _converge(
    *,
    body: kopf.Body,
    parsed: ClientAppSpec,
    current: Mapping[str, Any],
    client: sso_admin.AdminClient,
    connection: logic.Connection,
    existing: Mapping[str, str],
    existing_meta: Mapping[str, Any],
    secret_name: str,
    status: Any,
    instance_ok: Condition,
    logger: kopf.Logger,
) -> dict[str, Any]:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    desired = logic.desired_app(parsed, name=name, namespace=namespace)
    app_id = int(current.get("appId") or 0)
    server: logic.ServerApp | None = None
    new_secret: str | None = None
    if app_id:
        try:
            server = await client.get_app(app_id)
        except sso_admin.AppNotFound:
            logger.warning(f"app {app_id} is gone from {client.endpoint}; re-creating it")
    if server is None:
        server, new_secret = await _register(client, desired, app_id, existing, body, logger)
    else:
        mask = logic.update_mask(desired, server)
        if mask:
            server = await client.update_app(server.app_id, desired, mask)
            kopf.info(body, reason="DriftRepaired", message=f"Updated {', '.join(mask)}")
    # From here on the status names the app, even if a later step fails.
    status(
        statuses.REGISTERING,
        [
            Condition(conditions.READY, "False", "Registering", "Writing the credentials"),
            instance_ok,
            Condition(conditions.REGISTERED, "True", "Registered", f"App id {server.app_id}"),
        ],
        appId=server.app_id,
        endpoint=connection.endpoint,
        issuer=connection.issuer,
    )

    usable, matches = logic.secret_drift(existing, connection, app_id=server.app_id)
    recorded = existing_meta.get("annotations", {}).get(logic.SECRET_ROTATED_AT_ANNOTATION)
    rotated_elsewhere = usable and recorded != str(server.secret_rotated_at)
    requested = meta.get("annotations", {}).get(logic.ROTATE_ANNOTATION)
    now = datetime.now(UTC)
    last = logic.from_unix(server.secret_rotated_at) or logic.parse_time(
        current.get("lastRotationTime")
    )
    rotation = parsed.secret_rotation
    decision = logic.rotation_decision(
        enabled=rotation.enabled,
        interval=rotation.interval,
        last_rotation=last,
        requested=requested,
        handled_request=current.get("rotationRequest"),
        now=now,
    )
    if new_secret is None and (decision.rotate or not usable or rotated_elsewhere):
        why = decision.reason or ("SecretLost" if not usable else "RotatedElsewhere")
        server, new_secret = await client.rotate_secret(
            server.app_id, logic.overlap_seconds(rotation.overlap)
        )
        last = logic.from_unix(server.secret_rotated_at) or now
        kopf.info(
            body,
            reason="SecretRotated",
            message=f"New client secret ({why}); the previous one works for {rotation.overlap}",
        )
    if new_secret is not None or not matches:
        client_secret = new_secret if new_secret is not None else existing["SSO_CLIENT_SECRET"]
        data = logic.secret_data(connection, app_id=server.app_id, client_secret=client_secret)
        await write_credentials(body, secret_name, data, server)
    last = last or now
    next_rotation = last + rotation.interval if rotation.enabled else None
    status(
        statuses.READY,
        [
            Condition(conditions.READY, "True", "Ready", f"Credentials in Secret {secret_name}"),
            instance_ok,
            Condition(conditions.REGISTERED, "True", "Registered", f"App id {server.app_id}"),
        ],
        appId=server.app_id,
        endpoint=connection.endpoint,
        issuer=connection.issuer,
        lastRotationTime=logic.format_time(last),
        nextRotationTime=logic.format_time(next_rotation),
        rotationRequest=requested,
    )
    return {"appId": server.app_id, "rotationRequest": requested}


async def _register(
    client: sso_admin.AdminClient,
    desired: logic.DesiredApp,
    app_id: int,
    existing: Mapping[str, str],
    body: kopf.Body,
    logger: kopf.Logger,
) -> tuple[logic.ServerApp, str | None]:
    """Create the app; returns it and its secret (None when adopted: the caller rotates).

    A known app id is re-created with its id and, when the Secret still holds
    it, its secret, so consumers keep working. A name that is already taken
    (a create whose answer was lost) is adopted.
    """
    keep_secret = (
        existing.get("SSO_CLIENT_SECRET", "") if existing.get("SSO_APP_ID") == str(app_id) else ""
    )
    if app_id:
        try:
            server, secret = await client.create_app(desired, app_id=app_id, secret=keep_secret)
            kopf.info(body, reason="Recreated", message=f"App {app_id} was missing; re-created")
            return server, secret
        except sso_admin.AppAlreadyExists:
            logger.warning(f"cannot re-create app {app_id} under its id; allocating a new one")
    try:
        server, secret = await client.create_app(desired)
        kopf.info(body, reason="Registered", message=f"Registered as app {server.app_id}")
        return server, secret
    except sso_admin.AppAlreadyExists:
        found = await client.find_app(desired.name)
        if found is None:
            raise kopf.TemporaryError(
                f"app {desired.name} exists but is not listed", delay=5
            ) from None
        logger.info(f"adopting app {found.app_id} ({desired.name}); its secret will be rotated")
        return found, None


async def unregister(
    *,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    logger: kopf.Logger,
) -> None:
    """Delete the app in the SSO (its credentials stop working), then the credentials Secret.

    Reads the spec loosely: even a ClientApp whose spec became invalid can go.
    When the SSOInstance itself is gone, so is its database and the app with it.
    """
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    ref = spec.get("instanceRef") or {}
    ref_name = str(ref.get("name") or "")
    ref_namespace = str(ref.get("namespace") or namespace)
    app_id = int(status.get("appId") or 0)
    instance = await get_instance(ref_namespace, ref_name) if app_id and ref_name else None
    if app_id and instance is None:
        logger.info(f"SSOInstance {ref_namespace}/{ref_name} is gone; app {app_id} went with it")
    elif instance is not None:
        config = OperatorConfig.from_env()
        client = await admin_client(instance, instance_connection(instance, config), config)
        deleted = await client.delete_app(app_id)
        logger.info(f"app {app_id} {'deleted' if deleted else 'was already gone'}")
    secret_name = status.get("secretName") or names.credentials_secret(
        name, (spec.get("credentialsSecret") or {}).get("name")
    )
    existing = await kube.get("v1", "Secret", namespace, secret_name)
    if existing is not None and owned_by(existing, uid):
        await kube.delete("v1", "Secret", namespace, secret_name)
