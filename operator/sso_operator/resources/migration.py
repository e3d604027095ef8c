"""The migration Job: ``sso migrate`` against the primary, once per service image.

Why this module exists: a new image may need a new schema, and the old pods
must keep serving until it is in place. The Job is named after the image
(``names.migration_job``), so an image change creates a fresh Job, and the
reconciler rolls the Deployment to that image only after the Job succeeded.
Alembic migrations are idempotent (``upgrade head`` at head does nothing), so a
Job re-created after a crash is harmless.
"""

from __future__ import annotations

from typing import Any

from sso_operator import names
from sso_operator.resources import config
from sso_operator.resources.common import (
    COMPONENT_MIGRATION,
    SERVICE_UID,
    Owner,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
)
from sso_operator.spec import SSOInstanceSpec

IMAGE_ANNOTATION = "sso.dev/image"
BACKOFF_LIMIT = 2
DEADLINE_S = 900


def job(spec: SSOInstanceSpec, owner: Owner) -> dict[str, Any]:
    name = names.migration_job(owner.name, spec.image)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(SERVICE_UID),
        "containers": [
            {
                "name": "migrate",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "args": ["migrate"],
                "envFrom": [{"configMapRef": {"name": names.config_map(owner.name)}}],
                "env": [
                    config.database_url_env(spec, owner),
                    {"name": "HOME", "value": config.TMP_DIR},
                ],
                "securityContext": container_security_context(SERVICE_UID),
                "volumeMounts": [{"name": "tmp", "mountPath": config.TMP_DIR}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            owner, name, COMPONENT_MIGRATION, annotations={IMAGE_ANNOTATION: spec.image}
        ),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": DEADLINE_S,
            "template": {
                "metadata": {"labels": labels(owner, COMPONENT_MIGRATION)},
                "spec": pod,
            },
        },
    }
