"""The SSOInstance builders (spec -> manifests): golden files and the promises they encode.

Each example spec in ``e2e/manifests`` is rendered with fixed names, uid and
generated values into ``tests/unit/golden/<example>.yaml``; a change to any
builder shows up as a diff there. Regenerate after an intended change with
``SSO_UPDATE_GOLDEN=1 pytest tests/unit/test_operator_resources.py``.
The other tests check the properties a reviewer should not have to find in a
golden file: hardening, probes, replication mode, no credentials in ConfigMaps.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sso_operator import names
from sso_operator.reconcile import readiness
from sso_operator.reconcile.children import FAILED, RUNNING, SUCCEEDED, MigrationState, Outcome
from sso_operator.resources import (
    common,
    config,
    database,
    migration,
    network,
    redis,
    secrets,
    service,
)
from sso_operator.spec import SSOInstanceSpec, parse_instance_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = ("ssoinstance-minimal", "ssoinstance-full", "ssoinstance-external")
OWNER = common.Owner(name="sso", namespace="team-a", uid="00000000-0000-0000-0000-000000000001")


def counter_token() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"generated-{next(numbers)}"


def example(name: str) -> SSOInstanceSpec:
    doc = yaml.safe_load((REPO / "e2e" / "manifests" / f"{name}.yaml").read_text())
    return parse_instance_spec(doc["spec"])


def render(spec: SSOInstanceSpec, owner: common.Owner = OWNER) -> list[dict[str, Any]]:
    """Every manifest of one instance, in the order the reconciler applies them."""
    docs: list[dict[str, Any] | None] = [*secrets.generated(spec, owner, counter_token())]
    config_map = config.config_map(spec, owner)
    docs.append(config_map)
    if spec.database.managed is not None:
        docs += [database.init_config_map(owner), *database.services(spec, owner)]
        docs += [database.primary(spec, owner), database.replicas(spec, owner)]
        docs.append(network.database(owner))
    if spec.redis.managed is not None:
        docs += [redis.service(owner), redis.deployment(spec, owner), network.cache(owner)]
    docs += [
        network.server(spec, owner),
        service.service(spec, owner),
        service.admin_service(owner),
        service.pod_disruption_budget(spec, owner),
        service.horizontal_pod_autoscaler(spec, owner),
        migration.job(spec, owner),
        service.deployment(
            spec, owner, image=spec.image, config_checksum=common.checksum(config_map["data"])
        ),
    ]
    return [doc for doc in docs if doc is not None]


@pytest.mark.parametrize("name", EXAMPLES)
def test_golden(name: str) -> None:
    rendered = yaml.safe_dump_all(render(example(name)), sort_keys=True)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("SSO_UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert path.exists(), f"run SSO_UPDATE_GOLDEN=1 pytest {__file__} to create {path}"
    assert rendered == path.read_text(), f"{path} is stale (SSO_UPDATE_GOLDEN=1 to update)"


def test_builders_are_pure() -> None:
    spec = example("ssoinstance-full")
    assert render(spec) == render(spec)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_child_is_owned_and_labelled(name: str) -> None:
    for doc in render(example(name)):
        meta = doc["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [OWNER.reference()], doc["kind"]
        assert meta["ownerReferences"][0]["controller"] is True
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == "sso"
        assert labels["app.kubernetes.io/managed-by"] == "sso-operator"
        assert labels["app.kubernetes.io/part-of"] == "sso-platform"
        assert labels["app.kubernetes.io/component"]


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_pod_is_hardened(name: str) -> None:
    for pod_name, pod in _pod_specs(render(example(name))):
        assert pod["securityContext"]["runAsNonRoot"] is True, pod_name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False, pod_name
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (pod_name, container["name"])
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["runAsNonRoot"] is True


def test_service_deployment_probes_rollout_and_mounts() -> None:
    spec = example("ssoinstance-minimal")
    deployment = service.deployment(spec, OWNER, image="img:1", config_checksum="c1")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {common.CHECKSUM_ANNOTATION: "c1"}
    (container,) = template["spec"]["containers"]
    assert container["image"] == "img:1" and container["args"] == ["serve"]
    assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 50051, "service": "readiness"}
    assert container["startupProbe"]["grpc"]["service"] == "liveness"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[config.KEYS_DIR] == "signing-keys"
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["signing-keys"]["secret"]["secretName"] == names.signing_keys_secret("sso")
    assert volumes["admin-token"]["secret"]["secretName"] == names.admin_token_secret("sso")
    env = config.environment(spec, name="sso", namespace="team-a")
    assert env["SSO_KEYS__DIR"] == config.KEYS_DIR
    assert env["SSO_KEYS__GENERATE_IF_MISSING"] == "false"
    assert env[config.ADMIN_TOKEN_ENV] == config.ADMIN_TOKEN_FILE
    assert env["SSO_TOKENS__ACCESS_TTL"] == "PT300S"


def test_config_change_changes_the_checksum_and_autoscaling_drops_replicas() -> None:
    base = example("ssoinstance-minimal")
    changed = base.model_copy(
        update={"observability": base.observability.model_copy(update={"log_level": "debug"})}
    )
    before = common.checksum(config.config_map(base, OWNER)["data"])
    after = common.checksum(config.config_map(changed, OWNER)["data"])
    assert before != after
    full = example("ssoinstance-full")
    deployment = service.deployment(full, OWNER, image="i", config_checksum="c")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = service.horizontal_pod_autoscaler(full, OWNER)
    assert hpa is not None and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert service.horizontal_pod_autoscaler(base, OWNER) is None


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_credential_in_a_config_map_or_pod_spec(name: str) -> None:
    docs = render(example(name))
    generated = [
        value
        for doc in docs
        if doc["kind"] == "Secret"
        for key, value in doc["stringData"].items()
        if key not in ("username", "database", "superuser-username")
    ]
    assert generated
    others = yaml.safe_dump_all([doc for doc in docs if doc["kind"] != "Secret"])
    for value in generated:
        assert value not in others


def test_generated_secrets_are_strong_and_distinct() -> None:
    docs = secrets.generated(example("ssoinstance-minimal"), OWNER)
    values = [
        doc["stringData"][key]
        for doc in docs
        for key in ("password", "token", "key", "superuser-password")
        if key in doc["stringData"]
    ]
    assert len(values) == len(set(values)) == 6
    assert all(len(value) >= 43 for value in values)  # 256 bits, base64url
    credentials = next(d for d in docs if d["metadata"]["name"] == "sso-db-credentials")
    data = credentials["stringData"]
    assert data["primary-dsn"].startswith("postgresql+asyncpg://sso:")
    assert "@sso-db-rw.team-a.svc:5432/sso" in data["primary-dsn"]
    assert "@sso-db-ro.team-a.svc:5432/sso" in data["replica-dsn"]


@pytest.mark.parametrize(
    ("instances", "synchronous", "mode", "standbys"),
    [
        (1, False, "none", ""),
        (2, False, "asynchronous", ""),
        (2, True, "synchronous", 'ANY 1 ("sso-db-replica-0")'),
        (3, False, "synchronous", 'ANY 1 ("sso-db-replica-0", "sso-db-replica-1")'),
    ],
)
def test_replication_mode(instances: int, synchronous: bool, mode: str, standbys: str) -> None:
    spec = parse_instance_spec(
        {"database": {"managed": {"instances": instances, "synchronous": synchronous}}}
    )
    assert spec.database.managed is not None
    replication = database.replication("sso", spec.database.managed)
    assert (replication.mode, replication.standby_names) == (mode, standbys)
    args = database.primary(spec, OWNER)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (f"synchronous_standby_names={standbys}" in args) == bool(standbys)
    replicas = database.replicas(spec, OWNER)
    assert (replicas is None) == (instances == 1)
    if replicas is not None:
        assert replicas["spec"]["replicas"] == instances - 1
        (init,) = replicas["spec"]["template"]["spec"]["initContainers"]
        script = init["command"][-1]
        assert "pg_basebackup" in script and "standby.signal" in script
        assert "primary_conninfo" in script
        env = {e["name"]: e for e in init["env"]}
        assert env["REPLICATION_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
            "sso-db-replication"
        )
    ro = next(s for s in database.services(spec, OWNER) if s["metadata"]["name"] == "sso-db-ro")
    assert ro["spec"]["selector"][common.ROLE_LABEL] == ("replica" if instances > 1 else "primary")


def test_network_policies_limit_database_and_redis() -> None:
    spec = example("ssoinstance-minimal")
    db = network.database(OWNER)["spec"]
    (rule,) = db["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sso",
        "app.kubernetes.io/instance": "sso",
    }
    (expression,) = peer["podSelector"]["matchExpressions"]
    assert expression["values"] == ["backup", "database", "import", "migration", "server"]
    cache = network.cache(OWNER)["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert cache["app.kubernetes.io/component"] == "server"
    open_server = network.server(spec, OWNER)["spec"]["ingress"][0]
    assert "from" not in open_server and {p["port"] for p in open_server["ports"]} == {50051, 8080}
    restricted = network.server(example("ssoinstance-full"), OWNER)["spec"]["ingress"][0]
    assert len(restricted["from"]) == 2


def test_migration_job_is_named_after_the_image() -> None:
    spec = example("ssoinstance-minimal")
    job = migration.job(spec, OWNER)
    assert job["metadata"]["name"] == names.migration_job("sso", spec.image)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"] and container["image"] == spec.image
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    other = spec.model_copy(update={"image": "sso-service:9"})
    assert migration.job(other, OWNER)["metadata"]["name"] != job["metadata"]["name"]


# ------------------------------------------------------------------ readiness


def _ready(kind: str, ready: int, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "spec": {"replicas": ready}, "status": {"readyReplicas": ready, **extra}}


def _available(replicas: int) -> dict[str, Any]:
    return _ready(
        "Deployment",
        replicas,
        updatedReplicas=replicas,
        replicas=replicas,
        conditions=[{"type": "Available", "status": "True"}],
    )


def test_status_converges_to_ready_only_with_foreign_conditions() -> None:
    spec = example("ssoinstance-minimal")
    observed = readiness.Observed(
        deployment=_available(2), primary=_ready("StatefulSet", 1), redis=_ready("Deployment", 1)
    )
    outcome = Outcome(migration=MigrationState("job", SUCCEEDED), deployment_image=spec.image)
    doc = readiness.status(spec, OWNER, observed, outcome, current={}, generation=4, timestamp="T")
    assert doc["phase"] == "Provisioning"
    ready = next(c for c in doc["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "not ready: KeysReady, BackupReady"
    foreign = [
        {"type": t, "status": "True", "reason": "x", "message": "", "lastTransitionTime": "T"}
        for t in ("KeysReady", "BackupReady")
    ]
    doc = readiness.status(
        spec, OWNER, observed, outcome, current={"conditions": foreign}, generation=4, timestamp="T"
    )
    assert doc["phase"] == "Ready" and doc["replicas"]["summary"] == "2/2"
    assert doc["observedGeneration"] == 4
    assert [c["type"] for c in doc["conditions"]][:5] == [
        "Ready",
        "DatabaseReady",
        "CacheReady",
        "ServiceReady",
        "MigrationsReady",
    ]
    # A dependency going away after Ready is Degraded, not Provisioning.
    observed_down = readiness.Observed(
        deployment=_available(2), primary=_ready("StatefulSet", 0), redis=_ready("Deployment", 1)
    )
    degraded = readiness.status(
        spec, OWNER, observed_down, outcome, current=doc, generation=4, timestamp="U"
    )
    assert degraded["phase"] == "Degraded"
    assert readiness.changes(doc, doc) == {}
    assert set(readiness.changes(doc, degraded)) == {"phase", "conditions", "database"}


def test_synchronous_database_without_a_standby_is_not_ready() -> None:
    spec = parse_instance_spec({"database": {"managed": {"instances": 3}}})
    outcome = Outcome()
    observed = readiness.Observed(
        primary=_ready("StatefulSet", 1), replicas=_ready("StatefulSet", 0)
    )
    condition, doc = readiness.database_condition(spec, "sso", observed, outcome)
    assert (condition.status, condition.reason) == ("False", "NoSynchronousStandby")
    assert doc["replication"] == "synchronous" and doc["readyInstances"] == 1
    observed = readiness.Observed(
        primary=_ready("StatefulSet", 1), replicas=_ready("StatefulSet", 1)
    )
    condition, doc = readiness.database_condition(spec, "sso", observed, outcome)
    assert (condition.status, condition.reason) == ("True", "ReplicasNotReady")


@pytest.mark.parametrize(
    ("result", "status", "reason"),
    [
        (RUNNING, "False", "Running"),
        (SUCCEEDED, "True", "Succeeded"),
        (FAILED, "False", "BackoffLimitExceeded"),
    ],
)
def test_migrations_condition(result: str, status: str, reason: str) -> None:
    spec = example("ssoinstance-minimal")
    state = MigrationState(
        "job", result, "BackoffLimitExceeded" if result == FAILED else "", "boom"
    )
    condition = readiness.migrations_condition(
        spec, Outcome(migration=state, deployment_image="sso-service:0.0.9")
    )
    assert (condition.status, condition.reason) == (status, reason)
    if result == FAILED:
        assert "still serving sso-service:0.0.9" in condition.message


def test_external_secret_missing_is_pending() -> None:
    spec = example("ssoinstance-external")
    outcome = Outcome(database_missing="Secret team-a/sso-database does not exist")
    doc = readiness.status(
        spec, OWNER, readiness.Observed(), outcome, current={}, generation=1, timestamp="T"
    )
    assert doc["phase"] == "Pending"
    db = next(c for c in doc["conditions"] if c["type"] == "DatabaseReady")
    assert (db["reason"], db["message"]) == ("SecretMissing", outcome.database_missing)


# ------------------------------------------- the service reads what we write


def test_the_service_parses_the_environment_the_operator_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ConfigMap and Secret refs, resolved, are valid settings of the real service."""
    from sso.config import Settings

    spec = example("ssoinstance-full")
    for key in list(os.environ):
        if key.startswith("SSO_"):
            monkeypatch.delenv(key)
    for key, value in config.environment(spec, name="sso", namespace="team-a").items():
        monkeypatch.setenv(key, value)
    resolved = {
        "SSO_DATABASE__URL": "postgresql+asyncpg://sso:pw@sso-db-rw.team-a.svc:5432/sso",
        # The Secret's replica-dsn: one bare URL (the -ro Service), not a JSON list.
        "SSO_DATABASE__REPLICA_URLS": "postgresql+asyncpg://sso:pw@sso-db-ro.team-a.svc:5432/sso",
        "SSO_DATA_KEY": secrets.new_token(),
        "SSO_REDIS__URL": "redis://:pw@sso-redis.team-a.svc:6379/0",
        "SSO_MAIL__USERNAME": "mailer",
        "SSO_MAIL__PASSWORD": "mail-password",
    }
    assert {e["name"] for e in config.secret_environment(spec, OWNER)} == set(resolved)
    for key, value in resolved.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    replicas = [url.get_secret_value() for url in settings.database.replica_urls]
    assert replicas == [resolved["SSO_DATABASE__REPLICA_URLS"]]
    assert settings.tokens.issuer == "https://sso.example.com"
    assert settings.tokens.access_ttl.total_seconds() == 300
    assert settings.tokens.refresh_idle_ttl.total_seconds() == 168 * 3600
    assert str(settings.keys.dir) == config.KEYS_DIR and not settings.keys.generate_if_missing
    assert settings.keys.algorithm == "ES256"
    assert str(settings.admin.token_file) == config.ADMIN_TOKEN_FILE
    assert settings.admin.allowed_cidrs == ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 50051)  # noqa: S104
    assert settings.server.drain_delay == 5
    assert settings.lockout.threshold == 5 and settings.lockout.max_delay.total_seconds() == 900
    assert settings.ratelimit.login_per_email == 10
    assert settings.passwords.min_length == 12
    assert settings.account.unverified_login == "refuse"
    assert (settings.mail.mode, settings.mail.host, settings.mail.security) == (
        "smtp",
        "smtp.example.com",
        "starttls",
    )
    assert settings.log_level == "INFO" and not settings.embedded
    assert settings.server.reflection is False  # checklist I4: not in production by default
    assert settings.server.admin_port == names.ADMIN_PORT  # checklist I4: Admin on its own port


def test_admin_port_is_only_on_the_admin_service_and_open_only_to_the_operator() -> None:
    """Checklist I4: the public Service (even a LoadBalancer) never carries the admin port."""
    spec = example("ssoinstance-full")
    exposed = spec.model_copy(
        update={"service": spec.service.model_copy(update={"type": "LoadBalancer"})}
    )
    public = service.service(exposed, OWNER)["spec"]
    assert public["type"] == "LoadBalancer"
    assert names.ADMIN_PORT not in {p["port"] for p in public["ports"]}
    admin = service.admin_service(OWNER)
    assert admin["metadata"]["name"] == "sso-admin" and admin["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [(50052, "admin")]
    assert admin["spec"]["selector"] == public["selector"]
    pod = service.deployment(exposed, OWNER, image=spec.image, config_checksum="c")
    (container,) = pod["spec"]["template"]["spec"]["containers"]
    assert {"name": "admin", "containerPort": 50052, "protocol": "TCP"} in container["ports"]
    # NetworkPolicy: the public rule does not open 50052; the admin rule opens only it,
    # by default to the operator's pods, else to spec.networkPolicy.adminIngressFrom.
    public_rule, admin_rule = network.server(spec, OWNER)["spec"]["ingress"]
    assert 50052 not in {p["port"] for p in public_rule["ports"]}
    assert [p["port"] for p in admin_rule["ports"]] == [50052]
    assert admin_rule["from"] == [network.OPERATOR_PEER]
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    policy = spec.network_policy.model_copy(
        update={
            "admin_ingress_from": parse_instance_spec(
                {"networkPolicy": {"adminIngressFrom": [peer]}}
            ).network_policy.admin_ingress_from
        }
    )
    custom = spec.model_copy(update={"network_policy": policy})
    assert network.server(custom, OWNER)["spec"]["ingress"][1]["from"] == [peer]


def test_grpc_reflection_is_opt_in() -> None:
    spec = example("ssoinstance-full")
    env = config.environment(spec, name="sso", namespace="team-a")
    assert env["SSO_SERVER__REFLECTION"] == "false"
    security = spec.security.model_copy(update={"grpc_reflection": True})
    debugging = spec.model_copy(update={"security": security})
    env = config.environment(debugging, name="sso", namespace="team-a")
    assert env["SSO_SERVER__REFLECTION"] == "true"


def test_resync_interval_is_configurable() -> None:
    from sso_operator.settings import ConfigError, OperatorConfig

    assert OperatorConfig.from_env({}).resync == 15.0
    assert OperatorConfig.from_env({"SSO_OPERATOR_RESYNC": "2"}).resync == 2.0
    with pytest.raises(ConfigError, match="RESYNC"):
        OperatorConfig.from_env({"SSO_OPERATOR_RESYNC": "0"})
