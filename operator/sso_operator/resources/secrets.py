"""The Secrets the operator generates for an SSOInstance: passwords, the data key, the admin token.

Why this module exists: generated credentials must be created exactly once and
never regenerated (a new database password would lock the service out of its
own data; a new data key would make every stored app secret unreadable). The
reconciler creates these manifests only when the Secret is missing and never
updates their data; this module decides what they hold. Values come from
``secrets.token_urlsafe`` (256 bits) and are never logged: callers log names only.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sso_operator import names
from sso_operator.resources.common import COMPONENT_CACHE, COMPONENT_DATABASE, Owner, metadata
from sso_operator.spec import SSOInstanceSpec

DB_USER = "sso"
DB_NAME = "sso"
DB_SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
POSTGRES_PORT = 5432
REDIS_PORT = 6379
#: Keys of the database Secret that must survive the instance when PVCs are retained.
Token = Callable[[], str]


def new_token() -> str:
    """256 random bits, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def _secret(owner: Owner, name: str, component: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(owner, name, component),
        "type": "Opaque",
        "stringData": data,
    }


def database_dsn(host: str, password: str, namespace: str) -> str:
    return (
        f"postgresql+asyncpg://{DB_USER}:{password}@{host}.{namespace}.svc:{POSTGRES_PORT}/"
        f"{DB_NAME}"
    )


def database_credentials(owner: Owner, token: Token = new_token) -> dict[str, Any]:
    """The application role, the superuser, and the DSNs the service and Jobs read."""
    password = token()
    return _secret(
        owner,
        names.database_credentials_secret(owner.name),
        COMPONENT_DATABASE,
        {
            "username": DB_USER,
            "password": password,
            "database": DB_NAME,
            "superuser-username": DB_SUPERUSER,
            "superuser-password": token(),
            "primary-dsn": database_dsn(
                names.database_rw_service(owner.name), password, owner.namespace
            ),
            "replica-dsn": database_dsn(
                names.database_ro_service(owner.name), password, owner.namespace
            ),
        },
    )


def replication_credentials(owner: Owner, token: Token = new_token) -> dict[str, Any]:
    return _secret(
        owner,
        names.database_replication_secret(owner.name),
        COMPONENT_DATABASE,
        {"username": REPLICATION_USER, "password": token()},
    )


def redis_credentials(owner: Owner, token: Token = new_token) -> dict[str, Any]:
    password = token()
    host = f"{names.redis(owner.name)}.{owner.namespace}.svc"
    return _secret(
        owner,
        names.redis_secret(owner.name),
        COMPONENT_CACHE,
        {"password": password, "url": f"redis://:{password}@{host}:{REDIS_PORT}/0"},
    )


def admin_token(owner: Owner, token: Token = new_token) -> dict[str, Any]:
    return _secret(owner, names.admin_token_secret(owner.name), "server", {"token": token()})


def data_key(owner: Owner, token: Token = new_token) -> dict[str, Any]:
    """``SSO_DATA_KEY``: 32 random bytes, base64url (the format ``sso keys data-key`` prints)."""
    return _secret(owner, names.data_key_secret(owner.name), "server", {"key": token()})


def generated(
    spec: SSOInstanceSpec, owner: Owner, token: Token = new_token
) -> list[dict[str, Any]]:
    """Every Secret this spec needs generated, in creation order."""
    result = [data_key(owner, token), admin_token(owner, token)]
    if spec.database.managed is not None:
        result += [database_credentials(owner, token), replication_credentials(owner, token)]
    if spec.redis.managed is not None:
        result.append(redis_credentials(owner, token))
    return result


def retained_with_database(name: str) -> tuple[str, ...]:
    """Secrets kept (orphaned, not deleted) when the database's volumes are retained:
    without them a retained database could not be opened, nor its app secrets decrypted."""
    return (
        names.database_credentials_secret(name),
        names.database_replication_secret(name),
        names.data_key_secret(name),
    )
