"""The SSO service itself: Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler.

The public Service carries the gRPC and HTTP ports; the admin port (sso.v1.Admin
alone, checklist I4) has a ClusterIP Service of its own.

Why this module exists: the Deployment carries the operational promises of the
service (gRPC probes where liveness never depends on the database, a hardened
pod, rolling updates that never drop below the desired count, pods rolled when
their configuration changes); building it in one pure function makes each of
those promises visible in a golden file.
"""

from __future__ import annotations

from typing import Any

from sso_operator import names
from sso_operator.resources import config
from sso_operator.resources.common import (
    CHECKSUM_ANNOTATION,
    COMPONENT_SERVER,
    SERVICE_UID,
    Owner,
    container_security_context,
    dump,
    image_version,
    labels,
    metadata,
    pod_security_context,
    resources,
    selector,
)
from sso_operator.spec import SSOInstanceSpec

GRPC = "grpc"
HTTP = "http"
ADMIN = "admin"


def _grpc_probe(service: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "grpc": {"port": names.GRPC_PORT, "service": service},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _scheduling(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    scheduling = spec.scheduling
    pod: dict[str, Any] = {}
    if scheduling.node_selector:
        pod["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        pod["tolerations"] = [dump(t) for t in scheduling.tolerations]
    if scheduling.affinity is not None:
        pod["affinity"] = dump(scheduling.affinity)
    if scheduling.topology_spread_constraints:
        constraints = []
        for constraint in scheduling.topology_spread_constraints:
            item = dump(constraint)
            item.setdefault("labelSelector", {"matchLabels": selector(owner, COMPONENT_SERVER)})
            constraints.append(item)
        pod["topologySpreadConstraints"] = constraints
    return pod


def deployment(
    spec: SSOInstanceSpec, owner: Owner, *, image: str, config_checksum: str
) -> dict[str, Any]:
    """The service's Deployment running ``image`` (the spec's, once its migration succeeded)."""
    container: dict[str, Any] = {
        "name": "sso",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["serve"],
        "ports": [
            {"name": GRPC, "containerPort": names.GRPC_PORT, "protocol": "TCP"},
            {"name": HTTP, "containerPort": names.HTTP_PORT, "protocol": "TCP"},
            {"name": ADMIN, "containerPort": names.ADMIN_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": names.config_map(owner.name)}}],
        "env": config.secret_environment(spec, owner),
        # Startup covers warm-up (key set, pools); liveness is the process and its
        # event loop only, never a backend (checklist M2); readiness follows the database.
        "startupProbe": _grpc_probe("liveness", period=2, failures=60),
        "livenessProbe": _grpc_probe("liveness", period=10, failures=3),
        "readinessProbe": _grpc_probe("readiness", period=5, failures=2),
        "securityContext": container_security_context(SERVICE_UID),
        "volumeMounts": [
            {"name": "signing-keys", "mountPath": config.KEYS_DIR, "readOnly": True},
            {"name": "admin-token", "mountPath": config.ADMIN_TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": config.TMP_DIR},
        ],
    }
    container_resources = resources(spec.resources)
    if container_resources:
        container["resources"] = container_resources
    pod: dict[str, Any] = {
        "serviceAccountName": "default",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security_context(SERVICE_UID),
        "containers": [container],
        "volumes": [
            {
                "name": "signing-keys",
                "secret": {
                    "secretName": names.signing_keys_secret(owner.name),
                    "defaultMode": 0o440,
                },
            },
            {
                "name": "admin-token",
                "secret": {
                    "secretName": names.admin_token_secret(owner.name),
                    "defaultMode": 0o440,
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
        **_scheduling(spec, owner),
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector(owner, COMPONENT_SERVER)},
        "revisionHistoryLimit": 5,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": labels(owner, COMPONENT_SERVER, image_version(image)),
                "annotations": {CHECKSUM_ANNOTATION: config_checksum},
            },
            "spec": pod,
        },
    }
    if not spec.autoscaling.enabled:  # with an HPA, the HPA owns the replica count
        body["replicas"] = spec.replicas
    meta = metadata(owner, owner.name, COMPONENT_SERVER)
    meta["labels"] = labels(owner, COMPONENT_SERVER, image_version(image))
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}


def service(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            owner, owner.name, COMPONENT_SERVER, annotations=spec.service.annotations
        ),
        "spec": {
            "type": spec.service.type,
            "selector": selector(owner, COMPONENT_SERVER),
            "ports": [
                {
                    "name": GRPC,
                    "port": names.GRPC_PORT,
                    "targetPort": GRPC,
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": HTTP,
                    "port": names.HTTP_PORT,
                    "targetPort": HTTP,
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def admin_service(owner: Owner) -> dict[str, Any]:
    """The admin port's own Service: always ClusterIP, whatever ``spec.service.type`` says,
    so a LoadBalancer or NodePort public Service never exposes sso.v1.Admin."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, names.admin_service(owner.name), COMPONENT_SERVER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(owner, COMPONENT_SERVER),
            "ports": [
                {
                    "name": ADMIN,
                    "port": names.ADMIN_PORT,
                    "targetPort": ADMIN,
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def pod_disruption_budget(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any] | None:
    """None when disabled (the reconciler then deletes any existing one)."""
    pdb = spec.pod_disruption_budget
    if not pdb.enabled:
        return None
    body: dict[str, Any] = {"selector": {"matchLabels": selector(owner, COMPONENT_SERVER)}}
    if pdb.min_available is not None:
        body["minAvailable"] = pdb.min_available
    else:
        body["maxUnavailable"] = pdb.max_unavailable if pdb.max_unavailable is not None else 1
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, owner.name, COMPONENT_SERVER),
        "spec": body,
    }


def horizontal_pod_autoscaler(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any] | None:
    """None when autoscaling is off (the reconciler then deletes any existing one)."""
    scaling = spec.autoscaling
    if not scaling.enabled:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, owner.name, COMPONENT_SERVER),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }
