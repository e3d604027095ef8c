"""Smoke tests of the local Kubernetes control plane (e2e/cluster.py).

Why this exists: the operator tests rely on the harness behaving like a real
cluster: controllers reconcile Deployments, StatefulSets (with provisioned,
bound volumes) and Jobs, kwok makes pods Ready/Completed, and the garbage
collector removes dependents when their owner goes. If one of these breaks,
these tests say so directly instead of an operator test timing out obscurely.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.k8s.conftest import KubeCluster

WAIT_S = 90
# kwok fakes the containers and never pulls it; on a real cluster
# (SSO_E2E_KUBECONFIG, e.g. kind) it runs, so the same tests hold there.
IMAGE = "busybox:1.36"


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)


def get_or_none(kube: KubeCluster, *args: str) -> Any:
    proc = kube.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)


def pod_template(labels: dict[str, str], command: str = "sleep 3600") -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Always" if command.startswith("sleep") else "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "command": ["sh", "-c", command]}],
        },
    }


def default_storage_class(kube: KubeCluster) -> str:
    for sc in kube.get_json("storageclasses")["items"]:
        annotations = sc["metadata"].get("annotations", {})
        if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
            return str(sc["metadata"]["name"])
    raise AssertionError("the cluster has no default StorageClass")


def test_nodes_are_ready(kube_cluster: KubeCluster) -> None:
    nodes = kube_cluster.get_json("nodes")["items"]
    assert nodes, "the cluster has no Node"
    for node in nodes:
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions.get("Ready") == "True", node["metadata"]["name"]


def test_deployment_becomes_available_and_gc_removes_its_pods(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": pod_template(labels),
        },
    }
    kube_cluster.apply(json.dumps(deployment))

    def available() -> bool:
        status = kube_cluster.get_json("deployment", "web", "-n", namespace).get("status", {})
        return bool(status.get("availableReplicas") == 2)

    wait_until("Deployment web to have 2 available replicas", available)
    pods = kube_cluster.get_json("pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["spec"].get("nodeName") for p in pods), "pods were not scheduled"
    replicasets = kube_cluster.get_json("replicasets", "-n", namespace, "-l", "app=web")["items"]
    assert len(replicasets) == 1
    assert replicasets[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    # Deleting the owner: the garbage collector removes the ReplicaSet, which
    # takes its pods with it (kwok finishes their termination).
    kube_cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")

    def dependents_gone() -> bool:
        rs = kube_cluster.get_json("replicasets", "-n", namespace, "-l", "app=web")["items"]
        pods = kube_cluster.get_json("pods", "-n", namespace, "-l", "app=web")["items"]
        return not rs and not pods

    wait_until("the ReplicaSet and pods of Deployment web to be garbage-collected", dependents_gone)


def test_statefulset_gets_ready_pods_and_bound_volumes(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    labels = {"app": "db"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 5432}]},
    }
    template = pod_template(labels)
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": template,
            # No storageClassName: the default StorageClass (kwok-volume) applies.
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    kube_cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": [service]}))
    kube_cluster.apply(json.dumps(statefulset))

    def ready() -> bool:
        status = kube_cluster.get_json("statefulset", "db", "-n", namespace).get("status", {})
        return bool(status.get("readyReplicas") == 2)

    wait_until("StatefulSet db to have 2 ready replicas", ready)
    storage_class = default_storage_class(kube_cluster)  # kwok-volume locally
    for ordinal in (0, 1):
        pvc = kube_cluster.get_json("pvc", f"data-db-{ordinal}", "-n", namespace)
        assert pvc["status"]["phase"] == "Bound"
        assert pvc["spec"]["storageClassName"] == storage_class
        pv = kube_cluster.get_json("pv", pvc["spec"]["volumeName"])
        assert pv["status"]["phase"] == "Bound"
        pod = kube_cluster.get_json("pod", f"db-{ordinal}", "-n", namespace)
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["Ready"] == "True"


def test_job_completes(kube_cluster: KubeCluster, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template({"app": "once"}, command="true"),
        },
    }
    kube_cluster.apply(json.dumps(job))

    def complete() -> bool:
        status = kube_cluster.get_json("job", "once", "-n", namespace).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        assert conditions.get("Failed") != "True", status
        return conditions.get("Complete") == "True"

    wait_until("Job once to complete", complete)
    status = kube_cluster.get_json("job", "once", "-n", namespace)["status"]
    assert status["succeeded"] == 1


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    owner = kube_cluster.get_json("configmap", "owner", "-n", namespace)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"c": "d"},
    }
    kube_cluster.apply(json.dumps(dependent))
    assert get_or_none(kube_cluster, "configmap", "dependent", "-n", namespace) is not None

    kube_cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_until(
        "ConfigMap dependent to be garbage-collected",
        lambda: get_or_none(kube_cluster, "configmap", "dependent", "-n", namespace) is None,
    )
