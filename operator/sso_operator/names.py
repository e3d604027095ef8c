"""Names and addresses derived from a custom resource's name.

Why this module exists: the status the operator writes (endpoint, issuer, JWKS
URI, Secret names) and the objects it will create must agree on every name.
Deriving them in one place keeps the handlers, the status and the resource
builders from drifting apart.
"""

from __future__ import annotations

GRPC_PORT = 50051
HTTP_PORT = 8080
CLUSTER_DOMAIN_SUFFIX = "svc"


def service_host(name: str, namespace: str) -> str:
    """DNS name of the SSO service's Kubernetes Service inside the cluster."""
    return f"{name}.{namespace}.{CLUSTER_DOMAIN_SUFFIX}"


def grpc_endpoint(name: str, namespace: str) -> str:
    """``host:port`` that applications dial for gRPC."""
    return f"{service_host(name, namespace)}:{GRPC_PORT}"


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
