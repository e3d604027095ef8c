"""The decisions behind a ClientApp, as pure functions of the spec, the server and the clock.

Why this module exists: reconciling a ClientApp means answering a handful of
questions (what should the app look like in the SSO? does the server's copy
differ? is a rotation due? what goes into the credentials Secret?) and each
answer must be the same however often kopf re-runs a handler. Keeping them here,
free of Kubernetes and gRPC, makes every rule testable without a cluster or a
server; :mod:`sso_operator.clientapp_sync` only fetches inputs and applies
the answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sso_operator import names
from sso_operator.spec import ClientAppSpec

#: Annotation on a ClientApp: any new value asks for a rotation of the client secret.
ROTATE_ANNOTATION = "sso.dev/rotate-secret"
#: Annotations on the credentials Secret: which app and which server-side secret it holds.
SECRET_APP_ID_ANNOTATION = "sso.dev/app-id"  # noqa: S105 (a name, not a secret)
SECRET_ROTATED_AT_ANNOTATION = "sso.dev/secret-rotated-at"  # noqa: S105
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "sso-operator")

#: The keys of the credentials Secret. CLIENT_ID/CLIENT_SECRET are hydra-maester's
#: names, so apps that moved from Ory read their credentials unchanged.
SECRET_KEYS = (
    "SSO_ENDPOINT",
    "SSO_APP_ID",
    "SSO_CLIENT_SECRET",
    "SSO_ISSUER",
    "SSO_JWKS_URI",
    "CLIENT_ID",
    "CLIENT_SECRET",
)


@dataclass(frozen=True)
class DesiredApp:
    """What the app should look like in the SSO (the fields the Admin API stores)."""

    name: str
    display_name: str
    redirect_uris: tuple[str, ...]
    login_rate_limit_per_minute: int


@dataclass(frozen=True)
class ServerApp:
    """The fields of the server's copy of the app that the operator compares and records."""

    app_id: int
    name: str
    display_name: str
    redirect_uris: tuple[str, ...]
    login_rate_limit_per_minute: int
    secret_rotated_at: int


def registered_name(name: str, namespace: str) -> str:
    """The app's unique name in the SSO: ``<namespace>.<name>`` (namespaces have no dots)."""
    return f"{namespace}.{name}"


def per_minute(attempts: int, window: timedelta) -> int:
    """A login limit of ``attempts`` per ``window`` as the per-minute rate the server takes.

    Rounded up, so a limit is never tightened by the conversion (10 per 7 s is 86/min).
    """
    seconds = window.total_seconds()
    if seconds <= 0:
        raise ValueError("rate-limit window must be positive")
    return max(1, math.ceil(attempts * 60 / seconds))


def desired_app(spec: ClientAppSpec, *, name: str, namespace: str) -> DesiredApp:
    """The spec, mapped onto the Admin API's app fields."""
    limit = spec.rate_limit
    return DesiredApp(
        name=registered_name(name, namespace),
        display_name=spec.display_name or name,
        redirect_uris=tuple(spec.redirect_uris),
        login_rate_limit_per_minute=per_minute(limit.attempts, limit.window) if limit else 0,
    )


def update_mask(desired: DesiredApp, server: ServerApp) -> tuple[str, ...]:
    """The fields UpdateApp must replace so the server matches the spec (empty: no drift).

    Redirect URIs compare as lists: their order is kept, as the spec gives it.
    """
    mask: list[str] = []
    if server.display_name != desired.display_name:
        mask.append("display_name")
    if tuple(server.redirect_uris) != desired.redirect_uris:
        mask.append("redirect_uris")
    if server.login_rate_limit_per_minute != desired.login_rate_limit_per_minute:
        mask.append("login_rate_limit_per_minute")
    return tuple(mask)


@dataclass(frozen=True)
class RotationDecision:
    """Whether to rotate now, why, and when the next scheduled rotation falls."""

    rotate: bool
    reason: str
    next_rotation: datetime | None


def rotation_decision(
    *,
    enabled: bool,
    interval: timedelta,
    last_rotation: datetime | None,
    requested: str | None,
    handled_request: str | None,
    now: datetime,
) -> RotationDecision:
    """Decide a rotation from the schedule and the on-demand annotation.

    ``last_rotation`` is when the current secret was issued; ``requested`` the
    ``sso.dev/rotate-secret`` annotation's value and ``handled_request`` the value
    the operator last acted on (``status.rotationRequest``). A new annotation
    value always rotates, even with scheduled rotation disabled.
    """
    scheduled = last_rotation + interval if enabled and last_rotation is not None else None
    if requested and requested != handled_request:
        following = now + interval if enabled else None
        return RotationDecision(True, "Requested", following)
    if scheduled is not None and scheduled <= now:
        return RotationDecision(True, "Scheduled", now + interval)
    return RotationDecision(False, "", scheduled)


def overlap_seconds(overlap: timedelta) -> int:
    """RotateAppSecret's ``overlap_seconds``; at least 1, since 0 means the server's default."""
    return max(1, math.ceil(overlap.total_seconds()))


@dataclass(frozen=True)
class Connection:
    """Where apps (and the operator) reach an instance, and how tokens are checked."""

    endpoint: str
    issuer: str
    jwks_uri: str
    # Where the operator calls sso.v1.Admin: the admin Service (checklist I4). Empty =
    # `endpoint` (an override naming one process that serves Admin on its public port).
    admin_endpoint: str = ""

    @property
    def admin(self) -> str:
        return self.admin_endpoint or self.endpoint


def instance_connection(
    *,
    name: str,
    namespace: str,
    instance_spec: Mapping[str, object],
    instance_status: Mapping[str, object],
    endpoint_override: str | None,
    admin_override: str | None = None,
) -> Connection:
    """The instance's addresses: its status when written, else derived from its name and spec."""
    spec_issuer = instance_spec.get("issuer")
    issuer = str(
        instance_status.get("issuer")
        or (spec_issuer if isinstance(spec_issuer, str) and spec_issuer else "")
        or names.default_issuer(name, namespace)
    )
    endpoint = endpoint_override or str(
        instance_status.get("endpoint") or names.grpc_endpoint(name, namespace)
    )
    jwks = str(instance_status.get("jwksUri") or names.jwks_uri(issuer))
    # An endpoint override without an admin one names a process serving Admin on its
    # public port (a service on the host, `make run`): Admin goes there too.
    admin = admin_override or (
        endpoint_override
        or str(instance_status.get("adminEndpoint") or names.admin_endpoint(name, namespace))
    )
    return Connection(endpoint=endpoint, issuer=issuer, jwks_uri=jwks, admin_endpoint=admin)


def secret_data(connection: Connection, *, app_id: int, client_secret: str) -> dict[str, str]:
    """The credentials Secret's ``stringData``: every key in :data:`SECRET_KEYS`."""
    return {
        "SSO_ENDPOINT": connection.endpoint,
        "SSO_APP_ID": str(app_id),
        "SSO_CLIENT_SECRET": client_secret,
        "SSO_ISSUER": connection.issuer,
        "SSO_JWKS_URI": connection.jwks_uri,
        "CLIENT_ID": str(app_id),
        "CLIENT_SECRET": client_secret,
    }


def secret_drift(
    current: Mapping[str, str] | None, connection: Connection, *, app_id: int
) -> tuple[bool, bool]:
    """Compare a credentials Secret's decoded data with what it should hold.

    Returns ``(secret_usable, data_matches)``: whether it still holds a client
    secret for this app (else the operator must rotate to learn a new one, since
    the server never shows a secret twice), and whether every other key is right.
    """
    if not current:
        return False, False
    client_secret = current.get("SSO_CLIENT_SECRET", "")
    usable = bool(client_secret) and current.get("SSO_APP_ID") == str(app_id)
    wanted = secret_data(connection, app_id=app_id, client_secret=client_secret)
    return usable, usable and all(current.get(key) == value for key, value in wanted.items())


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from a status field, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    """The RFC 3339 form Kubernetes shows (UTC, second precision)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def from_unix(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None
