"""The operator's typed spec models against the CRD schemas, plus its pure helpers.

The CRDs in crds/ are the API; sso_operator.spec mirrors them. These tests keep
the two in step without a cluster: same fields at every level, same defaults
(applied the way the apiserver applies them), every example manifest accepted,
every invalid example rejected, and the operator's own rules on top.
"""

from __future__ import annotations

import ast
import copy
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel

from sso_operator import conditions, kube, names, status
from sso_operator import settings as operator_settings
from sso_operator.__main__ import parse_args
from sso_operator.conditions import Condition
from sso_operator.spec import (
    ClientAppSpec,
    InvalidSpecError,
    SSOInstanceSpec,
    parse_clientapp_spec,
    parse_instance_spec,
)
from sso_operator.values import parse_duration, validate_cron

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
MANIFESTS = REPO / "e2e" / "manifests"
# spec.py's text with implicitly concatenated string literals joined.
SPEC_SOURCE = re.sub(
    r'"\s*\n\s*"', "", (REPO / "operator" / "sso_operator" / "spec.py").read_text()
)
MODELS: dict[str, type[BaseModel]] = {"SSOInstance": SSOInstanceSpec, "ClientApp": ClientAppSpec}


def crd_schema(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the apiserver does it: defaults, then their nested defaults."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], item) for item in value]
        return value
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
        if key in result:
            result[key] = apply_defaults(sub, result[key])
    return result


def load_manifest(path: Path) -> tuple[dict[str, Any], str | None]:
    text = path.read_text()
    expect = next(
        (
            line.removeprefix("# expect:").strip()
            for line in text.splitlines()
            if line.startswith("# expect:")
        ),
        None,
    )
    return yaml.safe_load(text), expect


def defaulted_spec(doc: dict[str, Any]) -> dict[str, Any]:
    schema = crd_schema(doc["kind"])["properties"]["spec"]
    spec: dict[str, Any] = apply_defaults(schema, doc.get("spec") or {})
    return spec


# ------------------------------------------------------------ schema ↔ model


def _is_passthrough(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...] / list[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _compare(schema: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    problems = []
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    properties = schema.get("properties", {})
    for missing in sorted(set(properties) - set(fields)):
        problems.append(f"{path}.{missing}: in the CRD, not in {model.__name__}")
    for extra in sorted(set(fields) - set(properties)):
        problems.append(f"{path}.{extra}: in {model.__name__}, not in the CRD")
    for key in sorted(set(properties) & set(fields)):
        sub = properties[key]
        if sub.get("type") == "array":
            sub = sub["items"]
        nested = _model_of(fields[key].annotation)
        if sub.get("type") == "object" and "properties" in sub and not _is_passthrough(sub):
            if nested is None:
                problems.append(f"{path}.{key}: an object in the CRD, not a model")
            else:
                problems.extend(_compare(sub, nested, f"{path}.{key}"))
    return problems


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_model_fields_match_crd_schema(kind: str) -> None:
    schema = crd_schema(kind)["properties"]["spec"]
    assert _compare(schema, MODELS[kind], "spec") == []


def test_model_defaults_match_crd_defaults() -> None:
    schema = crd_schema("SSOInstance")["properties"]["spec"]
    assert SSOInstanceSpec.model_validate(apply_defaults(schema, {})) == SSOInstanceSpec()
    app_schema = crd_schema("ClientApp")["properties"]["spec"]
    minimal_app = {"instanceRef": {"name": "sso"}}
    assert ClientAppSpec.model_validate(apply_defaults(app_schema, minimal_app)) == (
        ClientAppSpec.model_validate(minimal_app)
    )


def test_defaults_of_optional_sections_match_crd() -> None:
    """Sections without a CRD default (smtp, tracing, redis storage…) default the same inside."""
    schema = crd_schema("SSOInstance")["properties"]["spec"]
    partial = {
        "smtp": {"host": "smtp", "from": "a@b.c", "secretRef": {"name": "s"}},
        "observability": {"tracing": {"endpoint": "http://otel:4317"}},
        "redis": {"managed": {"storage": {}}},
        "database": {"external": {"secretRef": {"name": "db"}}},
    }
    assert SSOInstanceSpec.model_validate(apply_defaults(schema, partial)) == (
        SSOInstanceSpec.model_validate(
            {**partial, "redis": {"managed": {"storage": {"size": "1Gi"}}}}
        )
    )


# ------------------------------------------------------------------ examples


VALID = sorted(MANIFESTS.glob("*.yaml"))
INVALID = sorted((MANIFESTS / "invalid").glob("*.yaml"))
REJECTED_BY_OPERATOR = sorted((MANIFESTS / "rejected-by-operator").glob("*.yaml"))


def test_there_are_enough_invalid_examples() -> None:
    assert len(INVALID) >= 6
    for path in INVALID + REJECTED_BY_OPERATOR:
        assert load_manifest(path)[1], f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_parse(path: Path) -> None:
    doc, _ = load_manifest(path)
    spec = defaulted_spec(doc)
    parsed = (
        parse_instance_spec(spec) if doc["kind"] == "SSOInstance" else parse_clientapp_spec(spec)
    )
    assert parsed is not None


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_by_the_models_too(path: Path) -> None:
    doc, expect = load_manifest(path)
    spec = defaulted_spec(doc)
    parse = parse_instance_spec if doc["kind"] == "SSOInstance" else parse_clientapp_spec
    with pytest.raises(InvalidSpecError) as caught:
        parse(spec)
    assert expect is not None
    cel_messages = [rule["message"] for rule in _all_validations(crd_schema(doc["kind"]))]
    if any(expect in message for message in cel_messages) and expect in SPEC_SOURCE:
        # A CEL rule the operator repeats: it says so in the same words.
        assert expect in str(caught.value)


def _all_validations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(schema.get("x-kubernetes-validations", []))
    for sub in schema.get("properties", {}).values():
        found.extend(_all_validations(sub))
    if "items" in schema:
        found.extend(_all_validations(schema["items"]))
    return found


def test_every_cross_field_cel_rule_is_repeated_by_the_operator() -> None:
    """Rules between fields live in the models too, with the CRD's message."""
    for kind in MODELS:
        for rule in _all_validations(crd_schema(kind)):
            if "isCIDR" in rule["rule"] or "oldSelf" in rule["rule"]:
                continue  # per-value format checks / transition rules: not cross-field
            first_sentence = rule["message"].split(",")[0].split(" (")[0]
            assert first_sentence in SPEC_SOURCE, rule["message"]


@pytest.mark.parametrize("path", REJECTED_BY_OPERATOR, ids=lambda p: p.name)
def test_operator_only_rules(path: Path) -> None:
    doc, expect = load_manifest(path)
    with pytest.raises(InvalidSpecError) as caught:
        parse_instance_spec(defaulted_spec(doc))
    assert expect is not None and expect in str(caught.value)
    assert isinstance(caught.value, kopf.PermanentError)


# ------------------------------------------------------------- value parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("720h", timedelta(hours=720)),
        ("250ms", timedelta(milliseconds=250)),
        ("90s", timedelta(seconds=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "1d", "-5m", "5m ", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "schedule",
    ["0 3 * * *", "*/15 * * * *", "0 0 1,15 * mon-fri", "0 5 * jan-mar 0", "@daily", "0 0 ? * 7"],
)
def test_cron_accepts(schedule: str) -> None:
    assert validate_cron(schedule) == schedule


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("75 3 * * *", "minute field: 75 is out of range 0-59"),
        ("0 24 * * *", "hour field: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("0 10-2 * * *", "runs backwards"),
        ("0 0 * * * *", "must have 5 fields"),
        ("? * * * *", "'?' is only allowed for days"),
        ("x * * * *", "'x' is not a number"),
    ],
)
def test_cron_rejects(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("*", r"\*")):
        validate_cron(schedule)


def test_error_message_names_every_problem() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_instance_spec({"replicas": 0, "signing": {"algorithm": "HS256"}})
    text = str(caught.value)
    assert "spec.replicas:" in text
    assert "spec.signing.algorithm:" in text


def test_desired_replicas_follows_autoscaling() -> None:
    assert SSOInstanceSpec(replicas=3).desired_replicas == 3
    spec = SSOInstanceSpec.model_validate(
        {"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 4}}
    )
    assert spec.desired_replicas == 4


# ------------------------------------------------------------ status & names


def test_conditions_keep_transition_time_when_status_is_unchanged() -> None:
    first = conditions.merge(
        None, [Condition("Ready", "False", "Provisioning")], generation=1, timestamp="T1"
    )
    second = conditions.merge(
        first, [Condition("Ready", "False", "StillProvisioning")], generation=2, timestamp="T2"
    )
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["reason"] == "StillProvisioning"
    assert second[0]["observedGeneration"] == 2
    third = conditions.merge(
        second, [Condition("Ready", "True", "Ready")], generation=2, timestamp="T3"
    )
    assert third[0]["lastTransitionTime"] == "T3"
    assert conditions.is_true(third, "Ready")
    assert not conditions.is_true(third, "DatabaseReady")


def test_conditions_order_is_stable() -> None:
    merged = conditions.merge(
        [{"type": "Zeta", "status": "True"}],
        [Condition("KeysReady", "Unknown", "P"), Condition("Ready", "False", "P")],
        generation=1,
        order=conditions.INSTANCE_CONDITION_TYPES,
    )
    assert [c["type"] for c in merged] == ["Ready", "KeysReady", "Zeta"]


def test_merge_patch_removes_stale_keys_but_not_kopf() -> None:
    current = {"phase": "Pending", "endpoint": "x", "database": {"mode": "managed", "instances": 1}}
    current["kopf"] = {"progress": {}}
    patch = status.merge_patch(current, {"phase": "Failed", "database": {"mode": "external"}})
    assert patch == {
        "phase": "Failed",
        "endpoint": None,
        "database": {"mode": "external", "instances": None},
    }


def test_clientapp_pending_status() -> None:
    spec = ClientAppSpec.model_validate({"instanceRef": {"name": "sso", "namespace": "idp"}})
    doc = status.clientapp_pending(spec, name="app", namespace="team", generation=1, current=None)
    assert doc["phase"] == "Pending"
    assert doc["instance"] == "idp/sso"
    assert doc["secretName"] == "app-sso-credentials"
    assert names.credentials_secret("app", "explicit") == "explicit"


# --------------------------------------------------------- settings & main


def test_config_from_env_defaults() -> None:
    config = operator_settings.OperatorConfig.from_env({})
    assert config.clusterwide and config.standalone
    assert config.liveness == "http://0.0.0.0:8081/healthz"


def test_config_from_env_values() -> None:
    config = operator_settings.OperatorConfig.from_env(
        {
            "SSO_OPERATOR_NAMESPACES": "a, b",
            "SSO_OPERATOR_LIVENESS": "off",
            "SSO_OPERATOR_PEERING": "sso",
            "SSO_OPERATOR_BACKOFF": "1.5",
            "SSO_OPERATOR_LOG_LEVEL": "DEBUG",
        }
    )
    assert config.namespaces == ("a", "b")
    assert config.liveness is None
    assert not config.standalone and config.peering == "sso"
    assert config.backoff == 1.5
    assert config.log_level == "debug"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SSO_OPERATOR_BACKOFF": "soon"}, "not a number"),
        ({"SSO_OPERATOR_WATCH_TIMEOUT": "0"}, "must be positive"),
        ({"SSO_OPERATOR_LOG_FORMAT": "xml"}, "must be one of"),
    ],
)
def test_config_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(operator_settings.ConfigError, match=message):
        operator_settings.OperatorConfig.from_env(env)


def test_apply_settings() -> None:
    settings = kopf.OperatorSettings()
    operator_settings.apply(settings, operator_settings.OperatorConfig(backoff=2, watch_timeout=10))
    assert settings.persistence.finalizer == "sso.dev/finalizer"
    assert settings.peering.standalone is True
    assert settings.execution.default_backoff == 2
    assert settings.watching.server_timeout == 10
    assert isinstance(settings.watching.server_timeout, int)  # the apiserver rejects "10.0"
    assert settings.posting.enabled is True


def test_command_line_overrides_environment() -> None:
    base = operator_settings.OperatorConfig.from_env({"SSO_OPERATOR_NAMESPACES": "a"})
    assert parse_args([], base).namespaces == ("a",)
    assert parse_args(["-n", "x", "-n", "y"], base).namespaces == ("x", "y")
    assert parse_args(["--all-namespaces"], base).clusterwide
    assert parse_args(["--liveness", "off"], base).liveness is None


# ------------------------------------------------------------------- kube.py


def _api_error(status_code: int, message: str = "boom", headers: Any = None) -> ApiException:
    error = ApiException(status=status_code, reason="Reason")
    error.body = f'{{"kind":"Status","message":"{message}"}}'.encode()
    error.headers = headers
    return error


@pytest.mark.parametrize(
    ("code", "kind", "delay"),
    [
        (409, kopf.TemporaryError, 1.0),
        (403, kopf.TemporaryError, 60.0),
        (500, kopf.TemporaryError, 5.0),
        (422, kopf.PermanentError, None),
        (400, kopf.PermanentError, None),
    ],
)
def test_translate_api_errors(code: int, kind: type[Exception], delay: float | None) -> None:
    error = kube.translate(_api_error(code, "the reason"), "create Deployment ns/x")
    assert type(error) is kind
    assert str(error).startswith(f"create Deployment ns/x failed: HTTP {code} the reason")
    if delay is not None:
        assert isinstance(error, kopf.TemporaryError) and error.delay == delay


def test_translate_honours_retry_after() -> None:
    error = kube.translate(_api_error(429, headers={"Retry-After": "7"}), "list Pods")
    assert isinstance(error, kopf.TemporaryError) and error.delay == 7.0


def test_translate_network_errors_and_passthrough() -> None:
    assert isinstance(kube.translate(TimeoutError(), "get x"), kopf.TemporaryError)
    other = ValueError("mine")
    assert kube.translate(other, "get x") is other


async def test_api_call_context() -> None:
    with pytest.raises(kube.NotFoundError):
        async with kube.api_call("get Secret ns/s", missing_ok=True):
            raise _api_error(404)
    with pytest.raises(kopf.TemporaryError):
        async with kube.api_call("get Secret ns/s"):
            raise _api_error(404)


def test_in_cluster_connection(tmp_path: Path) -> None:
    settings = kopf.OperatorSettings()
    assert kube.in_cluster_connection(settings, env={}, account_dir=tmp_path) is None
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "namespace").write_text("sso-system")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    info = kube.in_cluster_connection(settings, env=env, account_dir=tmp_path)
    assert info is not None
    assert info.server == "https://10.0.0.1:6443"
    assert info.token == "tok" and info.default_namespace == "sso-system"
    v6 = kube.in_cluster_connection(
        settings, env={"KUBERNETES_SERVICE_HOST": "fd00::1"}, account_dir=tmp_path
    )
    assert v6 is not None and v6.server == "https://[fd00::1]:443"


def test_connection_reads_kubeconfig_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "abc"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = kube.connection(kopf.OperatorSettings(), logging.getLogger("test"))
    assert info.server == "https://127.0.0.1:1" and info.token == "abc"


# ------------------------------------------------------------------ layering


def test_operator_never_imports_the_service() -> None:
    """The contract with the service is the CRDs, Secrets, env vars and gRPC API, not code."""
    for path in (REPO / "operator" / "sso_operator").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module != "sso" and not module.startswith("sso."), f"{path}: {module}"


def _field_paths(schema: dict[str, Any], path: str) -> list[str]:
    paths = []
    for key, sub in schema.get("properties", {}).items():
        here = f"{path}.{key}"
        paths.append(here)
        if sub.get("x-kubernetes-preserve-unknown-fields"):
            continue
        paths.extend(_field_paths(sub, here))
        if sub.get("type") == "array":
            paths.extend(_field_paths(sub["items"], here + "[]"))
    return paths


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_crd_field_is_documented(kind: str) -> None:
    docs = (REPO / "docs" / "crds.md").read_text()
    schema = crd_schema(kind)["properties"]
    missing = [
        path
        for part in ("spec", "status")
        for path in _field_paths(schema[part], part)
        if f"`{path}`" not in docs
    ]
    assert missing == [], f"document these fields of {kind} in docs/crds.md"
