"""``spec.database.importFrom`` against a real apiserver, the operator running as a process.

kwok plays the kubelets: it completes every Job pod it schedules, without
running it, so a Job that it ran reports no result. Three things are therefore
produced by the test the way the control plane would produce them:

- an import that is still running: the Job of the expected name exists before
  the operator would create it, and its pod cannot be scheduled (no such node);
- a failed import: the same, with a one-second deadline (the Job controller
  marks it Failed, ``DeadlineExceeded``), as the migration failure test does;
- a result: **the test simulates the kubelet** by writing the pod's status
  (phase Succeeded, the container terminated with a message). The message is
  what the Job's command really writes: the test runs that command (the real
  ``sso import legacy-sqlite --json`` on a small Go-schema database) locally.
  The Job controller then marks the Job Complete, as it does for a real pod.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from operator_support import (
    MANIFESTS,
    REPO,
    apply_instance,
    condition,
    current_crd,  # noqa: F401 - module fixture: this checkout's CRD (with importFrom)
    events,
    get_or_none,
    running_operator,
    wait_for,
)

from sso_operator import names
from sso_operator.resources import common, legacy_import
from sso_operator.spec import parse_instance_spec

EXAMPLE = MANIFESTS / "ssoinstance-import.yaml"
PVC_SPEC = {
    "database": {
        "managed": {},
        "importFrom": {"persistentVolumeClaim": {"claimName": "go-sso-data", "path": "sso.db"}},
    }
}


def import_job_name(spec: dict[str, Any]) -> str:
    import_from = parse_instance_spec(spec).database.import_from
    assert import_from is not None
    return names.legacy_import_job("sso", legacy_import.source_hash(import_from))


def example_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["spec"]
    return spec


def stuck_import_job(name: str, *, deadline: int | None) -> str:
    """A Job of the operator's import-Job name whose pod never schedules."""
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "import"}},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"sso.dev/no-such-node": "true"},
                "containers": [{"name": "import", "image": "sso-service:0.1.0"}],
            },
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return json.dumps(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/name": "sso",
                    "app.kubernetes.io/instance": "sso",
                    "app.kubernetes.io/component": "import",
                },
            },
            "spec": spec,
        }
    )


def instance_manifest(spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "sso.dev/v1alpha1",
            "kind": "SSOInstance",
            "metadata": {"name": "sso"},
            "spec": spec,
        }
    )


def ts(value: str) -> float:
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))


def assert_no_deployment_for(kube_cluster: Any, namespace: str, seconds: float) -> None:
    """Several operator resyncs (every 2 s) pass without a Deployment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert get_or_none(kube_cluster, "deployment", "sso", namespace) is None
        time.sleep(0.5)


def real_termination_message(tmp_path: Path, sqlite_url: str) -> str:
    """Run the import Job's command as its container does; return what it wrote to the log."""
    from sso.security.secretbox import generate_data_key

    loader = importlib.util.spec_from_file_location(
        "legacy_db_k8s", REPO / "tests" / "legacy_import" / "legacy_db.py"
    )
    assert loader is not None and loader.loader is not None
    db = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(db)
    source = db.create(tmp_path / "go-sso.db")
    good = db.hash_go("correct horse battery")
    db.add_users(source, [(1, "alice@example.com", good, False), (2, "broken", good, False)])
    db.add_apps(source, [(7, "billing", "s3cret")])
    owner = common.Owner(name="sso", namespace="x", uid="u")
    job = legacy_import.job(parse_instance_spec(PVC_SPEC), owner)
    log = tmp_path / "termination-log"
    command = [
        part.replace(legacy_import.RESULT_FILE, str(tmp_path / "result.json")).replace(
            "/dev/termination-log", str(log)
        )
        for part in job["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    command[4] = str(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
        SSO_DATABASE__URL=sqlite_url,
        SSO_DATA_KEY=generate_data_key(),
        SSO_HOME=str(tmp_path),
    )
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return log.read_text()


# ----------------------------------------------------------------------- tests


def test_import_runs_after_the_migration_and_before_the_deployment(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    legacy = base64.b64encode(b"SQLite format 3\x00 (kwok never reads it)").decode()
    kube_cluster.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "go-sso-db"},
                "data": {"sso.db": legacy},
            }
        ),
        namespace,
    )
    job_name = import_job_name(example_spec())
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(kube_cluster, namespace, EXAMPLE.read_text())
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: bool(o and (o.get("status") or {}).get("import", {}).get("completed")),
            "status.import.completed",
        )
        deployment = wait_for(
            lambda: get_or_none(kube_cluster, "deployment", "sso", namespace),
            lambda d: d is not None,
            "the Deployment",
        )
        jobs = kube_cluster.get_json(
            "jobs", "-n", namespace, "-l", "app.kubernetes.io/instance=sso"
        )["items"]
        by_component = {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in jobs}
        migration, imported = by_component["migration"], by_component["import"]
        assert imported["metadata"]["name"] == job_name
        # Order: the import Job after the migration finished, the Deployment after the import.
        assert ts(imported["metadata"]["creationTimestamp"]) >= ts(
            migration["status"]["completionTime"]
        )
        assert ts(deployment["metadata"]["creationTimestamp"]) >= ts(
            imported["status"]["completionTime"]
        )
        status = obj["status"]["import"]
        assert status["phase"] == "Succeeded" and status["job"] == job_name
        assert job_name.endswith("-" + status["source"][:10]) and status["completed"] is True
        assert status["message"] == legacy_import.NO_RESULT  # kwok ran no pod: no result
        assert status["completedAt"] == imported["status"]["completionTime"]
        ready = condition(obj, "ImportReady")
        assert ready["status"] == "True" and ready["reason"] == "Imported"
        container = imported["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][4] == "/import/sso.db"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        reasons = wait_for(
            lambda: events(kube_cluster, namespace, "sso"),
            lambda r: "LegacyImportSucceeded" in r,
            "the LegacyImportSucceeded event",
        )
        assert "LegacyImportStarted" in reasons and "LegacyImportFailed" not in reasons

        # Once: deleting the finished Job does not run the import again.
        kube_cluster.kubectl("delete", "job", job_name, "-n", namespace, "--wait=true")
        time.sleep(5)  # two resyncs
        assert get_or_none(kube_cluster, "job", job_name, namespace) is None


def test_running_import_gates_the_deployment_and_its_result_is_recorded(
    kube_cluster: Any, namespace: str, tmp_path: Path, sqlite_url: str
) -> None:
    message = real_termination_message(tmp_path, sqlite_url)
    job_name = import_job_name(PVC_SPEC)
    kube_cluster.apply(stuck_import_job(job_name, deadline=None), namespace)
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(kube_cluster, namespace, instance_manifest(PVC_SPEC))
        wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: bool(o) and condition(o, "ImportReady").get("reason") == "Running",
            "ImportReady=False Running",
        )
        assert (
            condition(get_or_none(kube_cluster, "ssoi", "sso", namespace), "MigrationsReady")[
                "status"
            ]
            == "True"
        )
        assert_no_deployment_for(kube_cluster, namespace, 6)

        # Simulated kubelet: the pod ran and terminated with the command's real message.
        (pod,) = kube_cluster.get_json(
            "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job_name}"
        )["items"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        terminated = {
            "exitCode": 0,
            "reason": "Completed",
            "message": message,
            "startedAt": now,
            "finishedAt": now,
        }
        pod_status = {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "import",
                        "image": "sso-service:0.1.0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        }
        kube_cluster.kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(pod_status),
        )
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: bool((o.get("status") or {}).get("import", {}).get("completed")),
            "status.import.completed",
        )
        status = obj["status"]["import"]
        assert status["users"] == {
            "read": 2,
            "imported": 1,
            "unchanged": 0,
            "updated": 0,
            "conflicts": 0,
            "skipped": 1,
        }
        assert status["apps"]["imported"] == 1
        assert status["skipped"] == [{"table": "users", "id": 2, "reason": "invalid_email"}]
        assert status["message"].startswith("users: 1 imported")
        wait_for(
            lambda: get_or_none(kube_cluster, "deployment", "sso", namespace),
            lambda d: d is not None,
            "the Deployment after the import",
        )
        assert "LegacyImportSucceeded" in events(kube_cluster, namespace, "sso")


def test_failed_import_starts_no_service_until_the_job_is_deleted(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    # The Secret variant: kwok schedules its pod (a PVC that no provisioner binds would not).
    job_name = import_job_name(example_spec())
    kube_cluster.apply(stuck_import_job(job_name, deadline=1), namespace)
    with running_operator(kube_cluster, namespace, tmp_path):
        apply_instance(kube_cluster, namespace, EXAMPLE.read_text())
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: bool(o) and condition(o, "ImportReady").get("reason") == "ImportFailed",
            "ImportReady=False ImportFailed",
        )
        ready = condition(obj, "ImportReady")
        assert ready["status"] == "False" and "DeadlineExceeded" in ready["message"]
        assert "delete the Job" in ready["message"]
        assert obj["status"]["import"]["phase"] == "Failed"
        assert obj["status"]["import"]["completed"] is False
        assert_no_deployment_for(kube_cluster, namespace, 6)
        wait_for(
            lambda: events(kube_cluster, namespace, "sso"),
            lambda r: "LegacyImportFailed" in r,
            "the LegacyImportFailed event",
        )
        # The retry: delete the failed Job; the operator's own (completed by kwok) follows.
        kube_cluster.kubectl("delete", "job", job_name, "-n", namespace, "--wait=true")
        wait_for(
            lambda: get_or_none(kube_cluster, "deployment", "sso", namespace),
            lambda d: d is not None,
            "the Deployment after the retried import",
        )
        # The Deployment is applied in the same pass whose status patch lands after it.
        obj = wait_for(
            lambda: get_or_none(kube_cluster, "ssoi", "sso", namespace),
            lambda o: bool(o) and o["status"].get("import", {}).get("completed") is True,
            "status.import.completed after the retried import",
        )
        assert condition(obj, "ImportReady")["status"] == "True"


def test_the_apiserver_refuses_a_bad_import_from(kube_cluster: Any, namespace: str) -> None:
    for bad, expected in (
        (
            {
                "secret": {"name": "s", "key": "k"},
                "persistentVolumeClaim": {"claimName": "c", "path": "p"},
            },
            "exactly one of database.importFrom.persistentVolumeClaim",
        ),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "a/../b"}}, "relative path"),
        ({"persistentVolumeClaim": {"claimName": "c", "path": "/abs"}}, "relative path"),
        ({"secret": {"name": "s", "key": "a/b"}}, "key"),
    ):
        manifest = instance_manifest({"database": {"managed": {}, "importFrom": bad}})
        proc = kube_cluster.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest, check=False
        )
        assert proc.returncode != 0, bad
        assert expected in proc.stderr, proc.stderr
