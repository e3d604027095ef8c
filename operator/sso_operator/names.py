"""Names and addresses derived from a custom resource's name.

Why this module exists: the status the operator writes (endpoint, issuer, JWKS
URI, Secret names) and the objects it will create must agree on every name.
Deriving them in one place keeps the handlers, the status and the resource
builders from drifting apart.
"""

from __future__ import annotations

import hashlib

GRPC_PORT = 50051
HTTP_PORT = 8080
# sso.v1.Admin's own listener (SSO_SERVER__ADMIN_PORT), behind the ``<name>-admin`` Service.
ADMIN_PORT = 50052
CLUSTER_DOMAIN_SUFFIX = "svc"


def service_host(name: str, namespace: str) -> str:
    """DNS name of the SSO service's Kubernetes Service inside the cluster."""
    return f"{name}.{namespace}.{CLUSTER_DOMAIN_SUFFIX}"


def grpc_endpoint(name: str, namespace: str) -> str:
    """``host:port`` that applications dial for gRPC."""
    return f"{service_host(name, namespace)}:{GRPC_PORT}"


def admin_service(name: str) -> str:
    """The ClusterIP Service of the admin port (the public Service does not carry it)."""
    return f"{name}-admin"


def admin_endpoint(name: str, namespace: str) -> str:
    """``host:port`` of an instance's sso.v1.Admin: what the operator dials for ClientApps."""
    return f"{admin_service(name)}.{namespace}.{CLUSTER_DOMAIN_SUFFIX}:{ADMIN_PORT}"


def default_issuer(name: str, namespace: str) -> str:
    """The issuer used when the spec leaves ``issuer`` empty: the in-cluster HTTP listener."""
    return f"http://{service_host(name, namespace)}:{HTTP_PORT}"


def jwks_uri(issuer: str) -> str:
    """Where the service publishes its signing keys, relative to the issuer."""
    return f"{issuer.rstrip('/')}/.well-known/jwks.json"


def database_rw_service(name: str) -> str:
    return f"{name}-db-rw"


def database_ro_service(name: str) -> str:
    return f"{name}-db-ro"


def signing_keys_secret(name: str) -> str:
    return f"{name}-signing-keys"


def credentials_secret(app_name: str, explicit: str | None = None) -> str:
    """The Secret a ClientApp's credentials go to: ``spec.credentialsSecret.name`` or a default."""
    return explicit or f"{app_name}-sso-credentials"


# Names shared by the workload, database, key and backup reconcilers. Every
# child object of an SSOInstance called ``name`` is named from here.


def database_credentials_secret(name: str) -> str:
    """Generated PostgreSQL credentials: keys ``username``, ``password``, ``database``,
    ``primary-dsn`` and ``replica-dsn`` (asyncpg URLs the service reads)."""
    return f"{name}-db-credentials"


def database_replication_secret(name: str) -> str:
    """The replication role's credentials (keys ``username``, ``password``)."""
    return f"{name}-db-replication"


def database_primary(name: str) -> str:
    """StatefulSet (and headless Service) of the PostgreSQL primary."""
    return f"{name}-db-primary"


def database_replicas(name: str) -> str:
    """StatefulSet of the PostgreSQL streaming replicas."""
    return f"{name}-db-replica"


def redis(name: str) -> str:
    """Deployment and Service of the managed Redis."""
    return f"{name}-redis"


def redis_secret(name: str) -> str:
    """Generated Redis password (key ``password``) and URL (key ``url``)."""
    return f"{name}-redis"


def admin_token_secret(name: str) -> str:
    """The admin token the operator generates for an instance (key ``token``)."""
    return f"{name}-admin-token"


def config_map(name: str) -> str:
    """The service's non-secret configuration (``SSO_*`` variables)."""
    return f"{name}-config"


def migration_job(name: str, image: str) -> str:
    """One migration Job per image, so an image change runs a fresh one."""
    return f"{name}-migrate-{hashlib.sha256(image.encode()).hexdigest()[:10]}"


def legacy_import_job(name: str, source: str) -> str:
    """The legacy-import Job of one ``spec.database.importFrom`` (``source``: its hash)."""
    return f"{name}-import-{source[:10]}"


def backup_pvc(name: str) -> str:
    return f"{name}-backups"


def backup_cronjob(name: str) -> str:
    return f"{name}-backup"


def restore_test_cronjob(name: str) -> str:
    return f"{name}-restore-test"


def data_key_secret(name: str) -> str:
    """The generated data key (key ``key``, ``SSO_DATA_KEY``) that encrypts app secrets at rest."""
    return f"{name}-data-key"


def database_init_config_map(name: str) -> str:
    """The managed PostgreSQL's first-start script (roles, database, replication access)."""
    return f"{name}-db-init"


def network_policy(name: str, component: str) -> str:
    """NetworkPolicy of one component: ``server``, ``database`` or ``cache``."""
    return f"{name}-{component}"


def backup_scripts_config_map(name: str) -> str:
    """The backup and restore-test scripts the two CronJobs mount."""
    return f"{name}-backup-scripts"


#: Longest SSOInstance name whose derived names all fit: a StatefulSet's pods carry the
#: label ``controller-revision-hash: <name>-db-replica-<10 chars>`` and a Job's pods
#: ``job-name: <name>-migrate-<10 hex>``; label values are at most 63 characters.
MAX_INSTANCE_NAME = 40


def instance_name_problem(name: str) -> str | None:
    """Why an SSOInstance cannot be called ``name`` (the CRD allows 253 characters), or None."""
    if len(name) > MAX_INSTANCE_NAME:
        return (
            f"metadata.name: {len(name)} characters is too long; an SSOInstance name has at most"
            f" {MAX_INSTANCE_NAME}, so that the names and labels derived from it fit in 63"
        )
    return None
