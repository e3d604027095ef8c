"""The managed Redis: one pod, password from a generated Secret, memory only.

Why this module exists: Redis holds only what can be lost (rate-limit windows,
caches, the session denylist, which is bounded by the access-token TTL and
rebuilt from PostgreSQL), so it runs as a single Deployment without
persistence (``save ""``, no AOF). The password is written into a config file
in an emptyDir at start, never into the command line or the pod spec.
"""

from __future__ import annotations

from typing import Any

from sso_operator import names
from sso_operator.resources.common import (
    COMPONENT_CACHE,
    Owner,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    resources,
    secret_env,
    selector,
)
from sso_operator.resources.secrets import REDIS_PORT
from sso_operator.spec import SSOInstanceSpec

REDIS_UID = 999
START = (
    'printf "requirepass %s\\n" "$REDIS_PASSWORD" > /run/redis/redis.conf && '
    "exec redis-server /run/redis/redis.conf --port 6379 --save '' --appendonly no "
    "--protected-mode no --dir /run/redis"
)


def deployment(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    managed = spec.redis.managed
    assert managed is not None
    tcp = {"tcpSocket": {"port": REDIS_PORT}}
    container: dict[str, Any] = {
        "name": "redis",
        "image": managed.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["sh", "-c", START],
        "env": [secret_env("REDIS_PASSWORD", names.redis_secret(owner.name), "password")],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {**tcp, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": container_security_context(REDIS_UID),
        "volumeMounts": [{"name": "run", "mountPath": "/run/redis"}],
    }
    container_resources = resources(managed.resources)
    if container_resources:
        container["resources"] = container_resources
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(REDIS_UID),
        "containers": [container],
        "volumes": [{"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, names.redis(owner.name), COMPONENT_CACHE),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(owner, COMPONENT_CACHE)},
            "template": {"metadata": {"labels": labels(owner, COMPONENT_CACHE)}, "spec": pod},
        },
    }


def service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, names.redis(owner.name), COMPONENT_CACHE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner, COMPONENT_CACHE),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }
