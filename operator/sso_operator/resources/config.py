"""The service's configuration: the ``SSO_*`` environment, split into a ConfigMap and Secret refs.

Why this module exists: the service reads every setting from ``SSO_*``
variables (``service/sso/config.py``, ``docs/configuration.md``). This module
is the one translation from the SSOInstance spec to those variables.
Non-secret values go into a ConfigMap (whose checksum rolls the pods);
secret ones (database and Redis URLs, the data key, SMTP credentials) are
``secretKeyRef`` entries, so no credential is ever written to a ConfigMap.

Durations are ISO 8601 (``PT300S``), the form the service's pydantic settings parse.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sso_operator import names
from sso_operator.resources.common import COMPONENT_SERVER, Owner, metadata, secret_env
from sso_operator.spec import SSOInstanceSpec

KEYS_DIR = "/etc/sso/keys"
ADMIN_TOKEN_DIR = "/etc/sso/admin"  # noqa: S105 - a path
ADMIN_TOKEN_FILE = f"{ADMIN_TOKEN_DIR}/token"
#: The service's setting that names the admin-token file (its ``admin`` settings group).
ADMIN_TOKEN_ENV = "SSO_ADMIN__TOKEN_FILE"  # noqa: S105 - a variable name
TMP_DIR = "/tmp"  # noqa: S108 - an emptyDir, the container's only writable path


def iso(value: timedelta) -> str:
    return f"PT{int(value.total_seconds())}S"


def environment(spec: SSOInstanceSpec, *, name: str, namespace: str) -> dict[str, str]:
    """The non-secret ``SSO_*`` (and ``OTEL_*``) variables of the service and its Jobs."""
    issuer = spec.issuer or names.default_issuer(name, namespace)
    security = spec.security
    replicas = spec.autoscaling.max_replicas if spec.autoscaling.enabled else spec.replicas
    env = {
        "SSO_HOME": TMP_DIR + "/sso",
        "SSO_LOG_LEVEL": spec.observability.log_level.upper(),
        "SSO_SERVER__HOST": "0.0.0.0",  # noqa: S104 - inside the pod; NetworkPolicy guards it
        "SSO_SERVER__HTTP_HOST": "0.0.0.0",  # noqa: S104
        "SSO_SERVER__PORT": str(names.GRPC_PORT),
        # Admin on its own port, which only the <name>-admin Service carries (checklist I4).
        "SSO_SERVER__ADMIN_PORT": str(names.ADMIN_PORT),
        "SSO_SERVER__HTTP_PORT": str(names.HTTP_PORT),
        "SSO_SERVER__DRAIN_DELAY": "5",
        "SSO_SERVER__REFLECTION": str(security.grpc_reflection).lower(),
        "SSO_SERVER__SHUTDOWN_GRACE": "20",
        "SSO_TOKENS__ISSUER": issuer,
        "SSO_TOKENS__ACCESS_TTL": iso(spec.tokens.access_token_ttl),
        "SSO_TOKENS__REFRESH_IDLE_TTL": iso(spec.tokens.refresh_idle_ttl),
        "SSO_TOKENS__REFRESH_ABSOLUTE_TTL": iso(spec.tokens.refresh_absolute_ttl),
        "SSO_KEYS__DIR": KEYS_DIR,
        "SSO_KEYS__ALGORITHM": spec.signing.algorithm,
        "SSO_KEYS__GENERATE_IF_MISSING": "false",
        "SSO_PASSWORDS__MIN_LENGTH": str(security.password_min_length),
        "SSO_RATELIMIT__LOGIN_PER_EMAIL": str(security.login_rate_limit.attempts),
        "SSO_RATELIMIT__LOGIN_PER_EMAIL_WINDOW": iso(security.login_rate_limit.window),
        # Each pod enforces its share alone while Redis is unreachable (checklist L1).
        "SSO_RATELIMIT__FALLBACK_FRACTION": f"{min(1.0, 2 / replicas):.4g}",
        "SSO_LOCKOUT__ENABLED": str(security.lockout.enabled).lower(),
        "SSO_LOCKOUT__THRESHOLD": str(security.lockout.max_failures),
        "SSO_LOCKOUT__MAX_DELAY": iso(security.lockout.duration),
        "SSO_ACCOUNT__UNVERIFIED_LOGIN": (
            "refuse" if security.require_email_verification else "allow"
        ),
        "SSO_OBSERVABILITY__METRICS_ENABLED": str(spec.observability.metrics.enabled).lower(),
        ADMIN_TOKEN_ENV: ADMIN_TOKEN_FILE,
    }
    if security.admin_allowed_cidrs:
        env["SSO_ADMIN__ALLOWED_CIDRS"] = (
            "[" + ",".join(f'"{cidr}"' for cidr in security.admin_allowed_cidrs) + "]"
        )
    tracing = spec.observability.tracing
    if tracing is not None:
        env.update(
            {
                "SSO_OBSERVABILITY__TRACING_ENABLED": "true",
                "OTEL_SERVICE_NAME": f"sso-{name}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": tracing.endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": f"{tracing.sampling_ratio:g}",
            }
        )
    else:
        env["SSO_OBSERVABILITY__TRACING_ENABLED"] = "false"
    smtp = spec.smtp
    if smtp is not None:
        env.update(
            {
                "SSO_MAIL__MODE": "smtp",
                "SSO_MAIL__HOST": smtp.host,
                "SSO_MAIL__PORT": str(smtp.port),
                "SSO_MAIL__SECURITY": smtp.tls,
                "SSO_MAIL__FROM_ADDRESS": smtp.from_,
                "SSO_MAIL__BASE_URL": issuer,
            }
        )
    else:
        env["SSO_MAIL__MODE"] = "disabled"
    return env


def config_map(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, names.config_map(owner.name), COMPONENT_SERVER),
        "data": environment(spec, name=owner.name, namespace=owner.namespace),
    }


def database_url_env(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    """``SSO_DATABASE__URL`` from the generated Secret, or the external one."""
    external = spec.database.external
    if external is not None:
        ref = external.secret_ref
        return secret_env("SSO_DATABASE__URL", ref.name, ref.primary_key)
    return secret_env(
        "SSO_DATABASE__URL", names.database_credentials_secret(owner.name), "primary-dsn"
    )


def database_replica_env(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any] | None:
    """``SSO_DATABASE__REPLICA_URLS`` (one URL: the ``-ro`` Service) when there is a replica.

    Managed: only with two or more instances (with one, ``-ro`` points at the
    primary and the service would report it as an unhealthy "replica").
    External: when the referenced Secret names a replica key.
    """
    external = spec.database.external
    if external is not None:
        ref = external.secret_ref
        if ref.replica_key is None:
            return None
        return secret_env("SSO_DATABASE__REPLICA_URLS", ref.name, ref.replica_key)
    managed = spec.database.managed
    if managed is None or managed.instances < 2:
        return None
    return secret_env(
        "SSO_DATABASE__REPLICA_URLS", names.database_credentials_secret(owner.name), "replica-dsn"
    )


def secret_environment(spec: SSOInstanceSpec, owner: Owner) -> list[dict[str, Any]]:
    """The ``secretKeyRef`` variables of the service (and, minus Redis, of its Jobs)."""
    env = [
        database_url_env(spec, owner),
        secret_env("SSO_DATA_KEY", names.data_key_secret(owner.name), "key"),
    ]
    replica = database_replica_env(spec, owner)
    if replica is not None:
        env.insert(1, replica)
    if spec.redis.external is not None:
        ref = spec.redis.external.secret_ref
        env.append(secret_env("SSO_REDIS__URL", ref.name, ref.key))
    else:
        env.append(secret_env("SSO_REDIS__URL", names.redis_secret(owner.name), "url"))
    smtp = spec.smtp
    if smtp is not None and smtp.secret_ref is not None:
        env.append(
            secret_env("SSO_MAIL__USERNAME", smtp.secret_ref.name, smtp.secret_ref.username_key)
        )
        env.append(
            secret_env("SSO_MAIL__PASSWORD", smtp.secret_ref.name, smtp.secret_ref.password_key)
        )
    return env
