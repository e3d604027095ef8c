"""Typed models of the SSOInstance and ClientApp specs.

Why this module exists: handlers and resource builders should work with typed,
validated values (timedeltas, enums, defaults filled in), never with raw dicts.
The models mirror the CRD schemas in ``crds/`` field by field (a unit test
compares the two), repeat the schema's cross-field rules so the operator is
safe even where the apiserver could not enforce them, and add the rules a
schema cannot express (cron field ranges). A spec that fails here is a user
error that retrying cannot fix, so it surfaces as :class:`InvalidSpecError`, a
``kopf.PermanentError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

import kopf
from pydantic import Field, ValidationError, model_validator

from sso_operator.values import (
    Cidr,
    CronSchedule,
    Duration,
    ImageRef,
    IntOrString,
    LocalObjectReference,
    Model,
    NetworkPolicyPeer,
    Passthrough,
    Quantity,
    Resources,
    SecretKey,
    SecretName,
    Toleration,
    TopologySpreadConstraint,
)

GROUP = "sso.dev"
VERSION = "v1alpha1"
_DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class InvalidSpecError(kopf.PermanentError):
    """Raised when a custom resource's spec is invalid; retrying cannot help."""


# ---------------------------------------------------------------- SSOInstance


class Autoscaling(Model):
    enabled: bool = False
    min_replicas: int = Field(2, ge=1, le=100)
    max_replicas: int = Field(10, ge=1, le=100)
    target_cpu_utilization_percentage: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
            )
        return self


class ServiceSpec(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)


class Tokens(Model):
    access_token_ttl: Duration = Field(timedelta(minutes=5), alias="accessTokenTTL")
    refresh_idle_ttl: Duration = Field(timedelta(hours=336), alias="refreshIdleTTL")
    refresh_absolute_ttl: Duration = Field(timedelta(hours=720), alias="refreshAbsoluteTTL")

    @model_validator(mode="after")
    def _order(self) -> Tokens:
        if self.refresh_idle_ttl > self.refresh_absolute_ttl:
            raise ValueError("tokens.refreshIdleTTL must not exceed tokens.refreshAbsoluteTTL")
        if not timedelta(seconds=30) <= self.access_token_ttl <= timedelta(hours=24):
            raise ValueError("tokens.accessTokenTTL must be between 30s and 24h")
        return self


class Signing(Model):
    algorithm: Literal["RS256", "ES256", "EdDSA"] = "RS256"
    rotation_interval: Duration = timedelta(hours=720)
    overlap: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _order(self) -> Signing:
        if self.rotation_interval <= self.overlap:
            raise ValueError("signing.rotationInterval must be longer than signing.overlap")
        return self


class LoginRateLimit(Model):
    attempts: int = Field(10, ge=1, le=10000)
    window: Duration = timedelta(minutes=1)


class Lockout(Model):
    enabled: bool = True
    max_failures: int = Field(5, ge=1, le=1000)
    duration: Duration = timedelta(minutes=15)


class Security(Model):
    admin_allowed_cidrs: list[Cidr] = Field(
        default_factory=list, max_length=64, alias="adminAllowedCIDRs"
    )
    login_rate_limit: LoginRateLimit = Field(default_factory=LoginRateLimit)
    lockout: Lockout = Field(default_factory=Lockout)
    password_min_length: int = Field(12, ge=8, le=128)
    require_email_verification: bool = False
    # gRPC server reflection lists every service and method to anyone who can connect
    # (checklist I4): off unless asked for, e.g. to debug with grpcurl.
    grpc_reflection: bool = False


class Storage(Model):
    size: Quantity
    storage_class_name: str | None = Field(None, max_length=253)


class ManagedDatabase(Model):
    instances: int = Field(1, ge=1, le=9)
    version: Literal["15", "16", "17"] = "17"
    image: ImageRef | None = None
    storage: Storage = Field(default_factory=lambda: Storage(size="10Gi"))
    resources: Resources = Field(default_factory=Resources)
    synchronous: bool = False
    parameters: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=64
    )

    @model_validator(mode="after")
    def _standby(self) -> ManagedDatabase:
        if self.synchronous and self.instances < 2:
            raise ValueError(
                "database.managed.synchronous needs database.managed.instances >= 2"
                " (a standby to confirm commits)"
            )
        return self

    @property
    def image_or_default(self) -> str:
        return self.image or f"postgres:{self.version}"


class DatabaseSecretRef(Model):
    name: SecretName
    primary_key: SecretKey = "url"
    replica_key: SecretKey | None = None


class ExternalDatabase(Model):
    secret_ref: DatabaseSecretRef


#: A Secret key: letters, digits, ``-``, ``_`` and ``.`` (Kubernetes' rule for ``data`` keys).
_SECRET_DATA_KEY_RE = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a password


class ImportFromPVC(Model):
    """The Go service's SQLite file on a PersistentVolumeClaim, at ``path`` inside it."""

    claim_name: str = Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN_RE)
    path: str = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _relative(self) -> ImportFromPVC:
        parts = self.path.split("/")
        if self.path.startswith("/") or ".." in parts or "" in parts or "." in parts:
            raise ValueError(
                "database.importFrom.persistentVolumeClaim.path must be a relative path inside"
                " the claim, without '..', '.' or empty segments"
            )
        return self


class ImportFromSecret(Model):
    """The Go service's SQLite file as one key of a Secret (at most 1 MiB)."""

    name: SecretName
    key: str = Field(min_length=1, max_length=253, pattern=_SECRET_DATA_KEY_RE)

    @model_validator(mode="after")
    def _not_dots(self) -> ImportFromSecret:
        if self.key in (".", ".."):
            raise ValueError("database.importFrom.secret.key must not be '.' or '..'")
        return self


class ImportFrom(Model):
    """Where the Go SSO service's database file is: imported once, before the service starts."""

    persistent_volume_claim: ImportFromPVC | None = None
    secret: ImportFromSecret | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImportFrom:
        if (self.persistent_volume_claim is None) == (self.secret is None):
            raise ValueError(
                "exactly one of database.importFrom.persistentVolumeClaim and"
                " database.importFrom.secret must be set"
            )
        return self


class Database(Model):
    managed: ManagedDatabase | None = None
    external: ExternalDatabase | None = None
    reclaim_policy: Literal["Retain", "Delete"] = "Retain"
    import_from: ImportFrom | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Database:
        if (self.managed is None) == (self.external is None):
            raise ValueError("exactly one of database.managed and database.external must be set")
        return self


class ManagedRedis(Model):
    image: ImageRef = "redis:7"
    storage: Storage | None = None
    resources: Resources = Field(default_factory=Resources)


class RedisSecretRef(Model):
    name: SecretName
    key: SecretKey = "url"


class ExternalRedis(Model):
    secret_ref: RedisSecretRef


class Redis(Model):
    managed: ManagedRedis | None = None
    external: ExternalRedis | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Redis:
        if (self.managed is None) == (self.external is None):
            raise ValueError("exactly one of redis.managed and redis.external must be set")
        return self


class Retention(Model):
    days: int = Field(7, ge=1, le=3650)
    weeks: int = Field(4, ge=0, le=520)


class Backup(Model):
    enabled: bool = True
    schedule: CronSchedule = "0 3 * * *"
    retention: Retention = Field(default_factory=Retention)
    storage: Storage = Field(default_factory=lambda: Storage(size="20Gi"))


class RestoreTest(Model):
    enabled: bool = True
    schedule: CronSchedule = "0 5 * * 0"
    max_backup_age: Duration = timedelta(hours=26)


class SmtpSecretRef(Model):
    name: SecretName
    username_key: SecretKey = "username"
    password_key: SecretKey = "password"  # noqa: S105 - a key name, not a password


class Smtp(Model):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(587, ge=1, le=65535)
    from_: str = Field(alias="from", max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    secret_ref: SmtpSecretRef | None = None
    tls: Literal["none", "starttls", "tls"] = "starttls"


class Metrics(Model):
    enabled: bool = True
    service_monitor: bool = False


class Tracing(Model):
    endpoint: str = Field(max_length=253, pattern=r"^https?://[^\s]+$")
    sampling_ratio: float = Field(0.1, ge=0.0, le=1.0)


class Observability(Model):
    metrics: Metrics = Field(default_factory=Metrics)
    tracing: Tracing | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Scheduling(Model):
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: Passthrough | None = None
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list, max_length=8
    )


class PodDisruptionBudget(Model):
    enabled: bool = True
    min_available: IntOrString | None = None
    max_unavailable: IntOrString | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> PodDisruptionBudget:
        if self.min_available is not None and self.max_unavailable is not None:
            raise ValueError(
                "set at most one of podDisruptionBudget.minAvailable"
                " and podDisruptionBudget.maxUnavailable"
            )
        return self


class NetworkPolicy(Model):
    enabled: bool = True
    ingress_from: list[NetworkPolicyPeer] = Field(default_factory=list, max_length=32)
    # Who may reach the admin port; empty = the operator's pods (network.OPERATOR_PEER).
    admin_ingress_from: list[NetworkPolicyPeer] = Field(default_factory=list, max_length=32)


class SSOInstanceSpec(Model):
    """The spec of an SSOInstance, defaults applied as the CRD schema applies them."""

    image: ImageRef = "sso-service:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    replicas: int = Field(2, ge=1, le=100)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    issuer: str | None = Field(None, max_length=253, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    tokens: Tokens = Field(default_factory=Tokens)
    signing: Signing = Field(default_factory=Signing)
    security: Security = Field(default_factory=Security)
    database: Database = Field(default_factory=lambda: Database(managed=ManagedDatabase()))
    redis: Redis = Field(default_factory=lambda: Redis(managed=ManagedRedis()))
    backup: Backup = Field(default_factory=Backup)
    restore_test: RestoreTest = Field(default_factory=RestoreTest)
    smtp: Smtp | None = None
    observability: Observability = Field(default_factory=Observability)
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    pod_disruption_budget: PodDisruptionBudget = Field(default_factory=PodDisruptionBudget)
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy)

    @model_validator(mode="after")
    def _cross_field(self) -> SSOInstanceSpec:
        if self.signing.overlap < self.tokens.access_token_ttl:
            raise ValueError(
                "signing.overlap must be at least tokens.accessTokenTTL, so every token"
                " signed by a retired key expires before the key is unpublished"
            )
        if self.restore_test.enabled and not self.backup.enabled:
            raise ValueError(
                "restoreTest.enabled requires backup.enabled, there is nothing to restore otherwise"
            )
        return self

    @property
    def desired_replicas(self) -> int:
        """Replicas the Deployment starts with (the HPA's minimum when autoscaling)."""
        return self.autoscaling.min_replicas if self.autoscaling.enabled else self.replicas


# ------------------------------------------------------------------ ClientApp


class InstanceRef(Model):
    name: str = Field(min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN_RE)
    namespace: str | None = Field(
        None, min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )


class SecretRotation(Model):
    enabled: bool = True
    interval: Duration = timedelta(hours=2160)
    overlap: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _order(self) -> SecretRotation:
        if self.overlap >= self.interval:
            raise ValueError("secretRotation.overlap must be shorter than secretRotation.interval")
        return self


class CredentialsSecret(Model):
    name: str | None = Field(None, min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN_RE)


class AppRateLimit(Model):
    attempts: int = Field(100, ge=1, le=100000)
    window: Duration = timedelta(minutes=1)


RedirectUri = Annotated[str, Field(max_length=2048, pattern=r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s#]+$")]


class ClientAppSpec(Model):
    """The spec of a ClientApp, defaults applied as the CRD schema applies them."""

    instance_ref: InstanceRef
    display_name: str | None = Field(None, min_length=1, max_length=128)
    redirect_uris: list[RedirectUri] = Field(default_factory=list, max_length=32)
    secret_rotation: SecretRotation = Field(default_factory=SecretRotation)
    credentials_secret: CredentialsSecret = Field(default_factory=CredentialsSecret)
    rate_limit: AppRateLimit | None = None


# -------------------------------------------------------------------- parsing


def format_validation_error(error: ValidationError, root: str = "spec") -> str:
    """One line per problem: ``spec.backup.schedule: minute field: 75 is out of range 0-59``."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join([root, *(str(part) for part in item["loc"])])
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def parse_instance_spec(spec: Mapping[str, Any]) -> SSOInstanceSpec:
    """Validate an SSOInstance spec; raise :class:`InvalidSpecError` with every problem."""
    try:
        return SSOInstanceSpec.model_validate(dict(spec))
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error)) from None


def parse_clientapp_spec(spec: Mapping[str, Any]) -> ClientAppSpec:
    """Validate a ClientApp spec; raise :class:`InvalidSpecError` with every problem."""
    try:
        return ClientAppSpec.model_validate(dict(spec))
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error)) from None
