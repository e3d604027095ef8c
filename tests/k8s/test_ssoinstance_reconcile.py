"""SSOInstance provisioning against a real apiserver (pods simulated by kwok).

The operator runs as a real process (``python -m sso_operator``) watching the
test's namespace, so it can also be killed with SIGKILL mid-way
(``test_ssoinstance_lifecycle.py``). What is checked is what the control plane
holds (every child, exactly once, owned and labelled) and the status the
operator writes as kwok makes pods Running/Ready and Jobs Complete.

``KeysReady`` and ``BackupReady`` belong to the signing-key and backup
handlers; where a test needs the instance Ready it writes those two conditions
on the status subresource itself, as those handlers would, unless they already
did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from operator_support import (
    CHILD_KINDS,
    EXPECTED_MINIMAL,
    FOREIGN_COMPONENTS,
    MANIFESTS,
    apply_instance,
    children,
    condition,
    current_crd,  # noqa: F401 - module fixture: this checkout's CRD
    events,
    get_or_none,
    mark_foreign_conditions_ready,
    own_conditions_true,
    running_operator,
    secret_value,
    wait_for,
)


def patch_spec(kube_cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> int:
    kube_cluster.kubectl(
        "patch", "ssoi", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )
    generation: int = kube_cluster.get_json("ssoi", name, "-n", namespace)["metadata"]["generation"]
    return generation


# ----------------------------------------------------------------------- tests


def test_minimal_instance_provisions_every_child_and_becomes_ready(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(
            kube_cluster, namespace, (MANIFESTS / "ssoinstance-minimal.yaml").read_text()
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: own_conditions_true(o, 1),
            "own conditions True",
        )
        # Without KeysReady/BackupReady it is not Ready yet, and says why.
        if condition(obj, "KeysReady").get("status") != "True":
            assert obj["status"]["phase"] == "Provisioning"
            assert "KeysReady" in condition(obj, "Ready")["message"]
        assert children(kube_cluster, namespace, "sso") == EXPECTED_MINIMAL
        uid = obj["metadata"]["uid"]
        for kind in CHILD_KINDS:
            for item in kube_cluster.get_json(
                kind, "-n", namespace, "-l", "app.kubernetes.io/instance=sso"
            )["items"]:
                if item["metadata"]["labels"].get("app.kubernetes.io/component") in (
                    FOREIGN_COMPONENTS
                ):
                    continue
                refs = item["metadata"]["ownerReferences"]
                assert {r["uid"] for r in refs} == {uid}, item["metadata"]["name"]
                labels = item["metadata"]["labels"]
                assert labels["app.kubernetes.io/managed-by"] == "sso-operator"

        mark_foreign_conditions_ready(kube_cluster, "sso", namespace)
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: o["status"].get("phase") == "Ready",
            "phase Ready",
        )
        status = obj["status"]
        assert status["replicas"] == {"desired": 2, "ready": 2, "summary": "2/2"}
        assert status["database"]["readyInstances"] == 1
        assert status["database"]["replication"] == "none"
        assert status["migrations"]["result"] == "Succeeded"
        assert status["endpoint"] == f"sso.{namespace}.svc:50051"
        assert status["adminEndpoint"] == f"sso-admin.{namespace}.svc:50052"
        # Checklist I4: the admin port is on its own Service, not on the public one.
        public_ports = kube_cluster.get_json("service", "sso", "-n", namespace)["spec"]["ports"]
        assert 50052 not in {p["port"] for p in public_ports}
        admin_ports = kube_cluster.get_json("service", "sso-admin", "-n", namespace)["spec"][
            "ports"
        ]
        assert [(p["port"], p["targetPort"]) for p in admin_ports] == [(50052, "admin")]
        table = kube_cluster.kubectl("get", "ssoi", "-n", namespace).stdout.splitlines()
        assert table[1].split()[:5] == ["sso", "Ready", "True", status["endpoint"], "2/2"]
        reasons = events(kube_cluster, namespace, "sso")
        for reason in ("SecretGenerated", "MigrationStarted", "DeploymentCreated", "Ready"):
            assert reason in reasons, reasons

        # The Deployment: mounts, probes, hardening, migrations first.
        deployment = kube_cluster.get_json("deployment", "sso", "-n", namespace)
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["signing-keys"]["secret"]["secretName"] == "sso-signing-keys"
        assert pod["containers"][0]["readinessProbe"]["grpc"]["service"] == "readiness"
        config = kube_cluster.get_json("configmap", "sso-config", "-n", namespace)["data"]
        password = secret_value(kube_cluster, namespace, "sso-db-credentials", "password")
        assert password not in json.dumps(config) and password not in json.dumps(deployment)
        job = kube_cluster.get_json("job", "sso-migrate-d0e2064910", "-n", namespace)
        job_done = job["status"]["completionTime"]
        assert job_done <= deployment["metadata"]["creationTimestamp"]


def test_spec_changes_are_reconciled(kube_cluster: Any, namespace: str, tmp_path: Path) -> None:
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(
            kube_cluster, namespace, (MANIFESTS / "ssoinstance-minimal.yaml").read_text()
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: own_conditions_true(o, 1),
            "own conditions True",
        )
        data_key = secret_value(kube_cluster, namespace, "sso-data-key", "key")
        old_checksum = kube_cluster.get_json("deployment", "sso", "-n", namespace)["spec"][
            "template"
        ]["metadata"]["annotations"]["sso.dev/config-checksum"]

        # Replicas, resources, log level (a config change rolls the pods), three instances.
        generation = patch_spec(
            kube_cluster,
            namespace,
            "sso",
            {
                "replicas": 3,
                "resources": {"requests": {"cpu": "100m"}},
                "observability": {"logLevel": "debug"},
                "database": {"managed": {"instances": 3}},
            },
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (
                own_conditions_true(o, generation)
                and o["status"]["database"]["readyInstances"] == 3
                and o["status"]["replicas"]["ready"] == 3
            ),
            "three replicas and three database instances",
        )
        assert obj["status"]["database"]["replication"] == "synchronous"
        deployment = kube_cluster.get_json(
            "deployment", "sso", "-n", namespace, "--show-managed-fields"
        )
        assert deployment["spec"]["replicas"] == 3
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"] == {"requests": {"cpu": "100m"}}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["sso.dev/config-checksum"] != old_checksum
        primary = kube_cluster.get_json("statefulset", "sso-db-primary", "-n", namespace)
        args = primary["spec"]["template"]["spec"]["containers"][0]["args"]
        assert 'synchronous_standby_names=ANY 1 ("sso-db-replica-0", "sso-db-replica-1")' in args
        replicas = kube_cluster.get_json("statefulset", "sso-db-replica", "-n", namespace)
        assert replicas["spec"]["replicas"] == 2

        # A new image: its migration Job first, then the Deployment; old Jobs pruned.
        generation = patch_spec(
            kube_cluster,
            namespace,
            "sso",
            {"image": "sso-service:0.2.0", "database": {"managed": {"instances": 2}}},
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (
                own_conditions_true(o, generation)
                and o["status"]["migrations"].get("image") == "sso-service:0.2.0"
                and o["status"]["database"]["readyInstances"] == 2
            ),
            "image 0.2.0 migrated, two database instances",
        )
        assert obj["status"]["database"]["replication"] == "asynchronous"
        assert "failover may lose" in obj["status"]["database"]["replicationMessage"]
        deployment = kube_cluster.get_json("deployment", "sso", "-n", namespace)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "sso-service:0.2.0"
        )
        jobs = children(kube_cluster, namespace, "sso")["Job"]
        assert len(jobs) == 1 and jobs != EXPECTED_MINIMAL["Job"]
        job = kube_cluster.get_json("job", jobs[0], "-n", namespace)
        assert (
            job["status"]["completionTime"]
            <= (
                kube_cluster.get_json(
                    "replicaset", "-n", namespace, "-l", "app.kubernetes.io/version=0.2.0"
                )["items"][0]["metadata"]["creationTimestamp"]
            )
        )
        assert "RollingOut" in events(kube_cluster, namespace, "sso")

        # Autoscaling on: an HPA, and the Deployment's replicas left to it; PDB off.
        generation = patch_spec(
            kube_cluster,
            namespace,
            "sso",
            {
                "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
                "podDisruptionBudget": {"enabled": False},
            },
        )
        wait_for(
            lambda: children(kube_cluster, namespace, "sso"),
            lambda c: (
                c.get("HorizontalPodAutoscaler") == ["sso"] and "PodDisruptionBudget" not in c
            ),
            "HPA present, PDB gone",
        )
        hpa = kube_cluster.get_json("hpa", "sso", "-n", namespace)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
        # The HPA took over the replica count without a drop to 1 at the handover.
        deployment = kube_cluster.get_json(
            "deployment", "sso", "-n", namespace, "--show-managed-fields"
        )
        assert deployment["spec"]["replicas"] == 3
        managers = {
            entry["manager"]
            for entry in deployment["metadata"]["managedFields"]
            if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
        }
        assert "sso-operator" not in managers
        # Generated credentials were never regenerated.
        assert secret_value(kube_cluster, namespace, "sso-data-key", "key") == data_key


def test_failed_migration_keeps_the_running_version(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(
            kube_cluster, namespace, (MANIFESTS / "ssoinstance-minimal.yaml").read_text()
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: own_conditions_true(o, 1),
            "own conditions True",
        )
        # kwok completes every Job pod, so a failing migration is made the real way a Job
        # fails without a kubelet: the Job of the new image exists already, its pod cannot
        # be scheduled, and its deadline passes (the Job controller marks it Failed).
        image = "sso-service:0.3.0-broken"
        job_name = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from sso_operator import names; print(names.migration_job('sso', {image!r}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        failing = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "labels": {
                    "app.kubernetes.io/name": "sso",
                    "app.kubernetes.io/instance": "sso",
                    "app.kubernetes.io/component": "migration",
                },
            },
            "spec": {
                "activeDeadlineSeconds": 1,
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {"sso.dev/no-such-node": "true"},
                        "containers": [{"name": "migrate", "image": image, "args": ["migrate"]}],
                    }
                },
            },
        }
        kube_cluster.apply(json.dumps(failing), namespace)
        generation = patch_spec(kube_cluster, namespace, "sso", {"image": image})
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: (
                o["status"].get("observedGeneration") == generation
                and condition(o, "MigrationsReady").get("status") == "False"
                and condition(o, "MigrationsReady").get("reason") == "DeadlineExceeded"
            ),
            "MigrationsReady False with the Job's reason",
        )
        message = condition(obj, "MigrationsReady")["message"]
        assert "still serving sso-service:0.1.0" in message
        assert condition(obj, "ServiceReady")["status"] == "True"
        deployment = kube_cluster.get_json("deployment", "sso", "-n", namespace)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
            "sso-service:0.1.0"
        )
        assert "MigrationFailed" in events(kube_cluster, namespace, "sso")

        # Deleting the failed Job retries: the operator's own Job completes, the image rolls.
        kube_cluster.kubectl("delete", "job", job_name, "-n", namespace)
        wait_for(
            lambda: get_or_none(kube_cluster, "deployment", "sso", namespace),
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == image,
            "the Deployment to roll to the new image",
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: own_conditions_true(o, generation),
            "own conditions True again",
        )


def test_external_database_and_redis_wait_for_their_secrets(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(
            kube_cluster, namespace, (MANIFESTS / "ssoinstance-external.yaml").read_text()
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso-external", namespace),
            lambda o: (
                o is not None and condition(o, "DatabaseReady").get("reason") == "SecretMissing"
            ),
            "DatabaseReady SecretMissing",
        )
        assert obj["status"]["phase"] == "Pending"
        assert "sso-database" in condition(obj, "DatabaseReady")["message"]
        assert "Deployment" not in children(kube_cluster, namespace, "sso-external")
        kube_cluster.kubectl(
            "create",
            "secret",
            "generic",
            "sso-database",
            "-n",
            namespace,
            "--from-literal=url=postgresql+asyncpg://u:p@db.example:5432/sso",
            "--from-literal=replica-url=postgresql+asyncpg://u:p@db-ro.example:5432/sso",
        )
        kube_cluster.kubectl(
            "create",
            "secret",
            "generic",
            "sso-redis",
            "-n",
            namespace,
            "--from-literal=url=redis://:p@redis.example:6379/0",
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso-external", namespace),
            lambda o: own_conditions_true(o, 1),
            "own conditions True",
        )
        assert obj["status"]["database"] == {"mode": "external"}
        found = children(kube_cluster, namespace, "sso-external")
        assert "StatefulSet" not in found and found["Deployment"] == ["sso-external"]
        assert found["NetworkPolicy"] == ["sso-external-server"]
        env = {
            e["name"]: e
            for e in kube_cluster.get_json("deployment", "sso-external", "-n", namespace)["spec"][
                "template"
            ]["spec"]["containers"][0]["env"]
        }
        assert env["SSO_DATABASE__URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "sso-database",
            "key": "url",
        }
        assert env["SSO_REDIS__URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "sso-redis",
            "key": "url",
        }

        # Ready; then its Redis Secret goes away: Degraded (a Warning), and back.
        mark_foreign_conditions_ready(kube_cluster, "sso-external", namespace)
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso-external", namespace),
            lambda o: o["status"].get("phase") == "Ready",
            "phase Ready",
        )
        kube_cluster.kubectl("delete", "secret", "sso-redis", "-n", namespace)
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso-external", namespace),
            lambda o: o["status"].get("phase") == "Degraded",
            "phase Degraded",
        )
        assert condition(obj, "CacheReady")["reason"] == "SecretMissing"
        assert condition(obj, "Ready")["message"] == "not ready: CacheReady"
        warnings = kube_cluster.get_json(
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=sso-external,type=Warning",
        )["items"]
        assert any(e["reason"] == "Degraded" for e in warnings)
        # Drift is repaired too: a deleted child comes back.
        kube_cluster.kubectl("delete", "service", "sso-external", "-n", namespace)
        kube_cluster.kubectl(
            "create",
            "secret",
            "generic",
            "sso-redis",
            "-n",
            namespace,
            "--from-literal=url=redis://:p@redis.example:6379/0",
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso-external", namespace),
            lambda o: o["status"].get("phase") == "Ready",
            "phase Ready again",
        )
        wait_for(
            lambda: get_or_none(kube_cluster, "service", "sso-external", namespace),
            lambda svc: svc is not None,
            "the deleted Service to be recreated",
        )

        # Deleted: the external database outlives it, so its data key is kept (orphaned).
        data_key = secret_value(kube_cluster, namespace, "sso-external-data-key", "key")
        kube_cluster.kubectl("delete", "ssoi", "sso-external", "-n", namespace, timeout=120)
        wait_for(
            lambda: children(kube_cluster, namespace, "sso-external"),
            lambda c: c == {"Secret": ["sso-external-data-key"]},
            "everything but the data key collected",
        )
        kept = kube_cluster.get_json("secret", "sso-external-data-key", "-n", namespace)
        assert "ownerReferences" not in kept["metadata"]
        assert secret_value(kube_cluster, namespace, "sso-external-data-key", "key") == data_key


def test_a_name_too_long_for_its_children_fails_permanently(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    name = "s" * 41
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(
            kube_cluster,
            namespace,
            json.dumps(
                {
                    "apiVersion": "sso.dev/v1alpha1",
                    "kind": "SSOInstance",
                    "metadata": {"name": name},
                    "spec": {},
                }
            ),
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", name, namespace),
            lambda o: (
                o is not None
                and o.get("status", {}).get("phase") == "Failed"
                and condition(o, "Ready").get("reason") == "InvalidSpec"
            ),
            "phase Failed, Ready=False InvalidSpec",
        )
        ready = condition(obj, "Ready")
        assert ready["reason"] == "InvalidSpec" and "at most 40" in ready["message"]
        assert children(kube_cluster, namespace, name) == {}
        assert "InvalidSpec" in events(kube_cluster, namespace, name)
