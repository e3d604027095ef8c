"""Labels, metadata and hardened security contexts shared by every child of an SSOInstance.

Why this module exists: selectors, NetworkPolicies and ``kubectl get -l`` all
depend on the same labels; one definition keeps them from drifting apart. The
``Owner`` value carries what every child's metadata needs (name, namespace and
the ownerReference to the SSOInstance), so builders stay pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAME = "sso"
MANAGED_BY = "sso-operator"
PART_OF = "sso-platform"

COMPONENT_SERVER = "server"
COMPONENT_DATABASE = "database"
COMPONENT_CACHE = "cache"
COMPONENT_MIGRATION = "migration"
#: Backup and restore-test pods carry this component (they may reach the database).
COMPONENT_BACKUP = "backup"
ROLE_LABEL = "sso.dev/role"

CHECKSUM_ANNOTATION = "sso.dev/config-checksum"
SERVICE_UID = 10001
POSTGRES_UID = 999


@dataclass(frozen=True)
class Owner:
    """The SSOInstance children belong to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "sso.dev/v1alpha1"
    kind: str = "SSOInstance"
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            api_version=body.get("apiVersion", "sso.dev/v1alpha1"),
            kind=body.get("kind", "SSOInstance"),
        )

    def reference(self) -> dict[str, Any]:
        """ownerReference: children are garbage-collected with the instance."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def selector(owner: Owner, component: str) -> dict[str, str]:
    """The labels that select one component's pods (stable: never change them)."""
    return {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
    }


def labels(owner: Owner, component: str, version: str | None = None) -> dict[str, str]:
    """The common ``app.kubernetes.io/*`` labels of one component."""
    result = {
        **selector(owner, component),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
    }
    if version:
        result["app.kubernetes.io/version"] = version[:63].strip("-_.")
    return result


def image_version(image: str) -> str:
    """The tag of an image reference (``repo:tag`` or ``repo@sha256:…``), for a label."""
    if "@" in image:
        return image.rsplit("@", 1)[1].replace(":", "-")[:63]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def metadata(
    owner: Owner,
    name: str,
    component: str,
    *,
    annotations: Mapping[str, str] | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**labels(owner, component), **(extra_labels or {})},
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def checksum(*parts: Any) -> str:
    """SHA-256 of JSON-serialised parts: a pod-template annotation that rolls pods on change."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def pod_security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid: int) -> dict[str, Any]:
    """Non-root, read-only root filesystem, no capabilities, no privilege escalation."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(spec_resources: Any) -> dict[str, Any]:
    """A core/v1 ResourceRequirements from the spec's ``Resources`` model (empty parts dropped)."""
    result: dict[str, Any] = {}
    if spec_resources.requests:
        result["requests"] = dict(spec_resources.requests)
    if spec_resources.limits:
        result["limits"] = dict(spec_resources.limits)
    return result


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def dump(model: Any) -> Any:
    """A passthrough pydantic model (affinity, label selectors) back to plain JSON."""
    return model.model_dump(by_alias=True, exclude_none=True) if model is not None else None


def termination_message(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The newest pod's termination message (a Job's last attempt), if any.

    The import and backup Jobs report through it (``FallbackToLogsOnError``: the
    log tail when the script wrote no message).
    """
    ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in reversed(ordered):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                return str(terminated["message"])
    return None
