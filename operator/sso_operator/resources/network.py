"""NetworkPolicies: who may reach the service, the database and Redis.

Why this module exists: the database holds password hashes and the Redis
password is the only thing between a pod and the rate-limit counters. So
PostgreSQL accepts only the service, migration, legacy-import and backup pods
of its own instance (backup and restore-test pods carry ``app.kubernetes.io/component:
backup``), and its own replicas (streaming replication); Redis accepts only
the service. The service itself is reachable on its two public ports from the
peers in ``spec.networkPolicy.ingressFrom`` (from anywhere when that list is
empty), and on its admin port only from ``spec.networkPolicy.adminIngressFrom``:
by default the operator's own pods, in whatever namespace the chart put them.
"""

from __future__ import annotations

from typing import Any

from sso_operator import names
from sso_operator.resources.common import (
    COMPONENT_BACKUP,
    COMPONENT_CACHE,
    COMPONENT_DATABASE,
    COMPONENT_MIGRATION,
    COMPONENT_SERVER,
    NAME,
    Owner,
    dump,
    metadata,
    selector,
)
from sso_operator.resources.legacy_import import COMPONENT_IMPORT
from sso_operator.resources.secrets import POSTGRES_PORT, REDIS_PORT
from sso_operator.spec import SSOInstanceSpec


def _policy(owner: Owner, component: str, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, names.network_policy(owner.name, component), component),
        "spec": {
            "podSelector": {"matchLabels": selector(owner, component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


#: The chart's operator pods (its selector label), in any namespace: the ClientApp
#: controller is the admin port's one client unless ``adminIngressFrom`` names others.
OPERATOR_PEER: dict[str, Any] = {
    "namespaceSelector": {},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "sso-operator"}},
}


def server(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    policy = spec.network_policy
    rule: dict[str, Any] = {"ports": _tcp(names.GRPC_PORT, names.HTTP_PORT)}
    if policy.ingress_from:
        rule["from"] = [dump(peer) for peer in policy.ingress_from]
    admin_from = [dump(peer) for peer in policy.admin_ingress_from] or [OPERATOR_PEER]
    admin = {"ports": _tcp(names.ADMIN_PORT), "from": admin_from}
    return _policy(owner, COMPONENT_SERVER, [rule, admin])


def database(owner: Owner) -> dict[str, Any]:
    clients = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": NAME,
                "app.kubernetes.io/instance": owner.name,
            },
            "matchExpressions": [
                {
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": sorted(
                        [
                            COMPONENT_SERVER,
                            COMPONENT_MIGRATION,
                            COMPONENT_BACKUP,
                            COMPONENT_DATABASE,
                            COMPONENT_IMPORT,
                        ]
                    ),
                }
            ],
        }
    }
    return _policy(owner, COMPONENT_DATABASE, [{"from": [clients], "ports": _tcp(POSTGRES_PORT)}])


def cache(owner: Owner) -> dict[str, Any]:
    clients = {"podSelector": {"matchLabels": selector(owner, COMPONENT_SERVER)}}
    return _policy(owner, COMPONENT_CACHE, [{"from": [clients], "ports": _tcp(REDIS_PORT)}])
