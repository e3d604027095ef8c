"""SSOInstance: the operator killed during creation, and deletion with each reclaim policy.

Checklist N1: kopf may re-run any handler after a crash; the reconcile must
converge to exactly one of every child, never regenerate a credential, and
finish the status. The operator is SIGKILLed (no graceful stop) at several
points of one creation and restarted each time. N3: deletion runs the
finalizer, which applies ``spec.database.reclaimPolicy`` to the volumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from operator_support import (
    EXPECTED_MINIMAL,
    MANIFESTS,
    apply_instance,
    children,
    events,
    get_or_none,
    mark_foreign_conditions_ready,
    own_conditions_true,
    running_operator,
    secret_value,
    wait_for,
)


def test_operator_killed_at_every_step_of_creation_converges(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    # The points at which the operator is killed, each a state of the creation.
    points = [
        ("the first generated Secret", lambda c: "Secret" in c),
        ("the database StatefulSet", lambda c: "StatefulSet" in c),
        ("the migration Job", lambda c: "Job" in c),
        ("the service Deployment", lambda c: "sso" in c.get("Deployment", [])),
    ]
    first_values: dict[str, str] = {}
    with running_operator(kube_cluster, namespace, tmp_path) as operator:
        apply_instance(
            kube_cluster, namespace, (MANIFESTS / "ssoinstance-minimal.yaml").read_text()
        )
        for what, reached in points:
            wait_for(lambda: children(kube_cluster, namespace, "sso"), reached, what)
            operator.kill()
            if not first_values and get_or_none(kube_cluster, "secret", "sso-data-key", namespace):
                first_values["data-key"] = secret_value(
                    kube_cluster, namespace, "sso-data-key", "key"
                )
            operator.start()
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: own_conditions_true(o, 1),
            "own conditions True after the restarts",
        )
        assert operator.starts == len(points) + 1
        # Exactly one of every child, whatever was interrupted.
        assert children(kube_cluster, namespace, "sso") == EXPECTED_MINIMAL
        assert obj["status"]["replicas"]["summary"] == "2/2"
        if first_values:
            assert (
                secret_value(kube_cluster, namespace, "sso-data-key", "key")
                == (first_values["data-key"])
            )

        # One more crash and restart after convergence changes nothing.
        def generations() -> dict[str, int]:
            return {
                f"{kind}/{name}": kube_cluster.get_json(kind, name, "-n", namespace)["metadata"][
                    "generation"
                ]
                for kind, name in (("deployment", "sso"), ("statefulset", "sso-db-primary"))
            }

        before = generations()
        operator.kill()
        operator.start()
        mark_foreign_conditions_ready(kube_cluster, "sso", namespace)
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: o["status"].get("phase") == "Ready",
            "phase Ready",
        )
        assert children(kube_cluster, namespace, "sso") == EXPECTED_MINIMAL
        secret_generated = [
            r for r in events(kube_cluster, namespace, "sso") if r == "SecretGenerated"
        ]
        assert len(secret_generated) <= len(EXPECTED_MINIMAL["Secret"])
        # The specs of the children did not change: the re-run applied identical manifests.
        assert generations() == before


def _instance(name: str, policy: str) -> str:
    return json.dumps(
        {
            "apiVersion": "sso.dev/v1alpha1",
            "kind": "SSOInstance",
            "metadata": {"name": name},
            "spec": {"database": {"managed": {"instances": 2}, "reclaimPolicy": policy}},
        }
    )


def test_deletion_applies_the_reclaim_policy(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(kube_cluster, namespace, _instance("keep", "Retain"))
        apply_instance(kube_cluster, namespace, _instance("drop", "Delete"))
        for name in ("keep", "drop"):
            obj = wait_for(
                lambda name=name: get_or_none(kube_cluster, "ssoi", name, namespace),
                lambda o: own_conditions_true(o, 1),
                f"{name} provisioned",
            )
            assert "sso.dev/finalizer" in obj["metadata"]["finalizers"]

        def claims(instance: str) -> list[str]:
            items = kube_cluster.get_json(
                "pvc",
                "-n",
                namespace,
                "-l",
                f"app.kubernetes.io/instance={instance},app.kubernetes.io/component=database",
            )["items"]
            return sorted(item["metadata"]["name"] for item in items)

        assert claims("keep") == ["data-keep-db-primary-0", "data-keep-db-replica-0"]
        password = secret_value(kube_cluster, namespace, "keep-db-credentials", "password")
        for name in ("keep", "drop"):
            kube_cluster.kubectl("delete", "ssoi", name, "-n", namespace, timeout=120)
        wait_for(lambda: claims("drop"), lambda c: c == [], "drop's PVCs deleted")
        # Retain: the volumes and the Secrets needed to open them stay; the rest goes.
        wait_for(
            lambda: children(kube_cluster, namespace, "keep"),
            lambda c: (
                c.get("Secret") == ["keep-data-key", "keep-db-credentials", "keep-db-replication"]
                and set(c) == {"Secret"}
            ),
            "keep's children collected except the retained Secrets",
        )
        assert claims("keep") == ["data-keep-db-primary-0", "data-keep-db-replica-0"]
        assert children(kube_cluster, namespace, "drop") == {}

        # Re-creating the instance adopts the retained Secrets: same credentials.
        apply_instance(kube_cluster, namespace, _instance("keep", "Delete"))
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "keep", namespace),
            lambda o: own_conditions_true(o, 1),
            "keep provisioned again",
        )
        assert secret_value(kube_cluster, namespace, "keep-db-credentials", "password") == password
        assert "SecretAdopted" in events(kube_cluster, namespace, "keep")
        uid = get_or_none(kube_cluster, "ssoi", "keep", namespace)["metadata"]["uid"]
        secret = kube_cluster.get_json("secret", "keep-db-credentials", "-n", namespace)
        assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [uid]
