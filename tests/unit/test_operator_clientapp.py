"""The ClientApp rules that need neither a cluster nor a server.

Spec → Admin API request mapping, drift comparison, the rotation schedule as a
pure function of (lastRotation, interval, annotation, now), the credentials
Secret's data, the endpoint-override setting, the status builder and the gRPC
error translation. The handlers that apply these against a real apiserver and
a real SSO service are tested in tests/k8s/test_clientapp.py and
tests/k8s/test_e2e_clientapp.py.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import grpc
import kopf
import pytest

from sso_operator import clientapp as logic
from sso_operator import settings as operator_settings
from sso_operator import sso_admin
from sso_operator import status as statuses
from sso_operator.conditions import CLIENTAPP_CONDITION_TYPES, Condition
from sso_operator.handlers.clientapp import resync_due
from sso_operator.spec import ClientAppSpec

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def spec(**fields: object) -> ClientAppSpec:
    return ClientAppSpec.model_validate({"instanceRef": {"name": "sso"}, **fields})


def server(desired: logic.DesiredApp, **changes: object) -> logic.ServerApp:
    fields: dict[str, object] = {
        "app_id": 7,
        "name": desired.name,
        "display_name": desired.display_name,
        "redirect_uris": desired.redirect_uris,
        "login_rate_limit_per_minute": desired.login_rate_limit_per_minute,
        "secret_rotated_at": 1_700_000_000,
    }
    fields.update(changes)
    return logic.ServerApp(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------ spec → request


def test_desired_app_takes_defaults_from_the_resource_name() -> None:
    desired = logic.desired_app(spec(), name="billing", namespace="team-a")
    assert desired == logic.DesiredApp(
        name="team-a.billing",
        display_name="billing",
        redirect_uris=(),
        login_rate_limit_per_minute=0,
    )


def test_desired_app_maps_every_field() -> None:
    desired = logic.desired_app(
        spec(
            displayName="Billing portal",
            redirectUris=["https://b.example.com/cb", "com.example.b://oauth"],
            rateLimit={"attempts": 30, "window": "30s"},
        ),
        name="billing",
        namespace="team-a",
    )
    assert desired.display_name == "Billing portal"
    assert desired.redirect_uris == ("https://b.example.com/cb", "com.example.b://oauth")
    assert desired.login_rate_limit_per_minute == 60
    request = sso_admin.create_request(desired)
    assert (request.name, request.display_name, request.app_id, request.secret) == (
        "team-a.billing",
        "Billing portal",
        0,
        "",
    )
    assert list(request.redirect_uris) == list(desired.redirect_uris)
    assert request.login_rate_limit_per_minute == 60
    again = sso_admin.create_request(desired, app_id=42, secret="kept")
    assert (again.app_id, again.secret) == (42, "kept")


@pytest.mark.parametrize(
    ("attempts", "window", "expected"),
    [(100, timedelta(minutes=1), 100), (10, timedelta(seconds=7), 86), (1, timedelta(hours=1), 1)],
)
def test_rate_limit_per_minute_rounds_up(attempts: int, window: timedelta, expected: int) -> None:
    assert logic.per_minute(attempts, window) == expected


def test_names_cannot_collide_across_namespaces() -> None:
    # Namespaces are DNS labels (no dots), so the first dot separates them.
    assert logic.registered_name("b.c", "a") != logic.registered_name("c", "a-b")
    assert logic.registered_name("b.c", "a").split(".", 1) == ["a", "b.c"]


# ------------------------------------------------------------------- drift


def test_no_drift_means_an_empty_update_mask() -> None:
    desired = logic.desired_app(spec(redirectUris=["https://a/cb"]), name="x", namespace="n")
    assert logic.update_mask(desired, server(desired)) == ()


def test_each_changed_field_is_in_the_update_mask() -> None:
    desired = logic.desired_app(
        spec(redirectUris=["https://a/cb", "https://b/cb"], rateLimit={"attempts": 5}),
        name="x",
        namespace="n",
    )
    assert logic.update_mask(desired, server(desired, display_name="edited")) == ("display_name",)
    reordered = server(desired, redirect_uris=("https://b/cb", "https://a/cb"))
    assert logic.update_mask(desired, reordered) == ("redirect_uris",)
    everything = server(desired, display_name="", redirect_uris=(), login_rate_limit_per_minute=0)
    mask = logic.update_mask(desired, everything)
    assert mask == ("display_name", "redirect_uris", "login_rate_limit_per_minute")
    request = sso_admin.update_request(7, desired, mask)
    assert request.app_id == 7 and list(request.update_mask) == list(mask)
    assert request.login_rate_limit_per_minute == 5


# ---------------------------------------------------------------- rotation


def decide(**overrides: object) -> logic.RotationDecision:
    args: dict[str, object] = {
        "enabled": True,
        "interval": timedelta(hours=24),
        "last_rotation": NOW - timedelta(hours=1),
        "requested": None,
        "handled_request": None,
        "now": NOW,
    }
    args.update(overrides)
    return logic.rotation_decision(**args)  # type: ignore[arg-type]


def test_rotation_not_due_reports_the_next_time() -> None:
    decision = decide()
    assert not decision.rotate
    assert decision.next_rotation == NOW + timedelta(hours=23)


def test_rotation_due_at_and_after_the_interval() -> None:
    at = decide(last_rotation=NOW - timedelta(hours=24))
    assert (at.rotate, at.reason, at.next_rotation) == (
        True,
        "Scheduled",
        NOW + timedelta(hours=24),
    )
    assert decide(last_rotation=NOW - timedelta(days=30)).rotate


def test_rotation_disabled_never_schedules() -> None:
    decision = decide(enabled=False, last_rotation=NOW - timedelta(days=365))
    assert (decision.rotate, decision.next_rotation) == (False, None)


def test_a_new_annotation_value_rotates_once() -> None:
    requested = decide(requested="2026-11-27")
    assert (requested.rotate, requested.reason) == (True, "Requested")
    assert not decide(requested="2026-11-27", handled_request="2026-11-27").rotate
    assert decide(requested="again", handled_request="2026-11-27").rotate
    # On demand works with the schedule off, too.
    assert decide(enabled=False, requested="x").rotate


def test_overlap_is_at_least_one_second() -> None:
    assert logic.overlap_seconds(timedelta(hours=24)) == 86400
    assert logic.overlap_seconds(timedelta(0)) == 1
    assert logic.overlap_seconds(timedelta(milliseconds=1500)) == 2


# --------------------------------------------------------- Secret and addresses


def test_connection_prefers_status_then_spec_then_defaults() -> None:
    derived = logic.instance_connection(
        name="sso", namespace="idp", instance_spec={}, instance_status={}, endpoint_override=None
    )
    assert derived == logic.Connection(
        endpoint="sso.idp.svc:50051",
        issuer="http://sso.idp.svc:8080",
        jwks_uri="http://sso.idp.svc:8080/.well-known/jwks.json",
        admin_endpoint="sso-admin.idp.svc:50052",  # the admin Service, not the public one
    )
    from_spec = logic.instance_connection(
        name="sso",
        namespace="idp",
        instance_spec={"issuer": "https://login.example.com/"},
        instance_status={},
        endpoint_override="127.0.0.1:5000",
    )
    assert from_spec.endpoint == "127.0.0.1:5000"
    assert from_spec.admin == "127.0.0.1:5000"  # one process on the host serves both
    assert from_spec.jwks_uri == "https://login.example.com/.well-known/jwks.json"
    from_status = logic.instance_connection(
        name="sso",
        namespace="idp",
        instance_spec={"issuer": "https://ignored"},
        instance_status={"issuer": "https://i", "endpoint": "e:1", "jwksUri": "https://j"},
        endpoint_override=None,
    )
    assert from_status == logic.Connection(
        endpoint="e:1",
        issuer="https://i",
        jwks_uri="https://j",
        admin_endpoint="sso-admin.idp.svc:50052",
    )
    with_admin = logic.instance_connection(
        name="sso",
        namespace="idp",
        instance_spec={},
        instance_status={"endpoint": "e:1", "adminEndpoint": "a:2"},
        endpoint_override=None,
    )
    assert (with_admin.endpoint, with_admin.admin) == ("e:1", "a:2")
    both = logic.instance_connection(
        name="sso",
        namespace="idp",
        instance_spec={},
        instance_status={"endpoint": "e:1", "adminEndpoint": "a:2"},
        endpoint_override="127.0.0.1:5000",
        admin_override="127.0.0.1:5001",
    )
    assert (both.endpoint, both.admin) == ("127.0.0.1:5000", "127.0.0.1:5001")
    # The credentials Secret carries the public endpoint only.
    data = logic.secret_data(both, app_id=1, client_secret="s")
    assert data["SSO_ENDPOINT"] == "127.0.0.1:5000" and "5001" not in str(data)


def test_secret_data_has_every_key_and_the_hydra_aliases() -> None:
    connection = logic.Connection("e:1", "https://i", "https://i/.well-known/jwks.json")
    data = logic.secret_data(connection, app_id=12, client_secret="s3cret")
    assert tuple(data) == logic.SECRET_KEYS
    assert data["SSO_APP_ID"] == data["CLIENT_ID"] == "12"
    assert data["SSO_CLIENT_SECRET"] == data["CLIENT_SECRET"] == "s3cret"
    assert (data["SSO_ENDPOINT"], data["SSO_ISSUER"]) == ("e:1", "https://i")


def test_secret_drift() -> None:
    connection = logic.Connection("e:1", "https://i", "https://j")
    good = logic.secret_data(connection, app_id=3, client_secret="s")
    assert logic.secret_drift(good, connection, app_id=3) == (True, True)
    assert logic.secret_drift(None, connection, app_id=3) == (False, False)
    assert logic.secret_drift(good, connection, app_id=4) == (False, False)
    assert logic.secret_drift({**good, "SSO_CLIENT_SECRET": ""}, connection, app_id=3)[0] is False
    moved = logic.Connection("e:2", "https://i", "https://j")
    assert logic.secret_drift(good, moved, app_id=3) == (True, False)
    assert logic.secret_drift({**good, "CLIENT_ID": "9"}, connection, app_id=3) == (True, False)


def test_times_round_trip() -> None:
    assert logic.format_time(NOW) == "2026-11-27T12:00:00Z"
    assert logic.parse_time("2026-11-27T12:00:00Z") == NOW
    assert logic.parse_time("garbage") is None and logic.parse_time(None) is None
    assert logic.from_unix(0) is None
    assert logic.from_unix(int(NOW.timestamp())) == NOW


# --------------------------------------------------------------- settings


def test_endpoint_overrides() -> None:
    config = operator_settings.OperatorConfig.from_env(
        {"SSO_OPERATOR_ENDPOINT_OVERRIDES": " a/sso=127.0.0.1:5000, b/x=[::1]:6000 "}
    )
    assert config.grpc_endpoint("sso", "a", "default") == "127.0.0.1:5000"
    assert config.grpc_endpoint("x", "b", "default") == "[::1]:6000"
    assert config.grpc_endpoint("sso", "b", "default") == "default"
    assert operator_settings.OperatorConfig.from_env({}).endpoint_overrides == ()
    admin = operator_settings.OperatorConfig.from_env(
        {"SSO_OPERATOR_ADMIN_ENDPOINT_OVERRIDES": "a/sso=127.0.0.1:5001"}
    )
    assert admin.admin_endpoint("sso", "a", "d") == "127.0.0.1:5001"
    assert admin.admin_endpoint("sso", "b", "d") == "d"
    assert admin.grpc_endpoint("sso", "a", "d") == "d"
    with pytest.raises(operator_settings.ConfigError, match="ADMIN_ENDPOINT_OVERRIDES"):
        operator_settings.OperatorConfig.from_env({"SSO_OPERATOR_ADMIN_ENDPOINT_OVERRIDES": "x"})


@pytest.mark.parametrize("raw", ["sso=1.2.3.4:5", "a/sso=1.2.3.4", "a/sso", "a/sso=host:port"])
def test_bad_endpoint_override_is_rejected(raw: str) -> None:
    with pytest.raises(operator_settings.ConfigError, match="ENDPOINT_OVERRIDES"):
        operator_settings.OperatorConfig.from_env({"SSO_OPERATOR_ENDPOINT_OVERRIDES": raw})


def test_resync_and_admin_timeout_settings() -> None:
    config = operator_settings.OperatorConfig.from_env(
        {"SSO_OPERATOR_CLIENTAPP_RESYNC": "2", "SSO_OPERATOR_ADMIN_TIMEOUT": "3.5"}
    )
    assert (config.clientapp_resync, config.admin_timeout) == (2.0, 3.5)


def test_resync_due() -> None:
    fresh = time.monotonic()
    assert resync_due({}, {}, last_sync=None, resync_seconds=60)
    assert not resync_due({}, {}, last_sync=fresh, resync_seconds=60)
    assert resync_due({}, {}, last_sync=fresh - 61, resync_seconds=60)
    annotations = {logic.ROTATE_ANNOTATION: "now"}
    assert resync_due({}, annotations, last_sync=fresh, resync_seconds=60)
    assert not resync_due(
        {"rotationRequest": "now"}, annotations, last_sync=fresh, resync_seconds=60
    )
    due = {"nextRotationTime": "2026-11-27T11:59:59Z"}
    assert resync_due(due, {}, last_sync=fresh, resync_seconds=60, now=NOW)
    assert not resync_due(due, {}, last_sync=fresh, resync_seconds=60, now=NOW - timedelta(1))


# ------------------------------------------------------------------ status


def test_status_keeps_the_registration_while_waiting() -> None:
    ready = statuses.clientapp_status(
        phase="Ready",
        wanted=[Condition("Ready", "True", "Ready"), Condition("Registered", "True", "Registered")],
        instance="idp/sso",
        secret_name="app-sso-credentials",
        generation=1,
        current=None,
        fields={"appId": 5, "endpoint": "e:1", "rotationRequest": None},
        timestamp="2026-11-27T12:00:00Z",
    )
    assert ready["appId"] == 5 and "rotationRequest" not in ready
    waiting = statuses.clientapp_status(
        phase="Pending",
        wanted=[Condition("Ready", "False", "WaitingForInstance")],
        instance="idp/sso",
        secret_name="app-sso-credentials",
        generation=2,
        current=ready,
    )
    assert (waiting["appId"], waiting["endpoint"], waiting["phase"]) == (5, "e:1", "Pending")
    assert [c["type"] for c in waiting["conditions"]] == ["Ready", "Registered"]
    assert list(CLIENTAPP_CONDITION_TYPES) == ["Ready", "InstanceReady", "Registered"]
    # Removing a field becomes a null in the merge patch.
    cleared = statuses.clientapp_status(
        phase="Ready",
        wanted=[],
        instance="idp/sso",
        secret_name="s",
        generation=2,
        current=waiting,
        fields={"endpoint": None},
    )
    assert statuses.merge_patch(waiting, cleared)["endpoint"] is None


# ------------------------------------------------------------- gRPC errors


def rpc_error(code: grpc.StatusCode, details: str = "nope") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_error_translation() -> None:
    unavailable = sso_admin.translate(rpc_error(grpc.StatusCode.UNAVAILABLE), "GetApp 1")
    assert isinstance(unavailable, sso_admin.AdminUnavailable)
    assert unavailable.delay == sso_admin.UNAVAILABLE_DELAY
    assert isinstance(
        sso_admin.translate(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "x"),
        sso_admin.AdminUnavailable,
    )
    for code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        denied = sso_admin.translate(rpc_error(code), "CreateApp a.b")
        assert isinstance(denied, sso_admin.AdminDenied) and isinstance(denied, kopf.TemporaryError)
        assert denied.delay == sso_admin.DENIED_DELAY and "admin token" in str(denied)
        assert str(denied).startswith("CreateApp a.b failed: ")
    rejected = sso_admin.translate(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad uri"), "x")
    assert isinstance(rejected, kopf.PermanentError) and "bad uri" in str(rejected)
    assert isinstance(
        sso_admin.translate(rpc_error(grpc.StatusCode.NOT_FOUND), "x"), sso_admin.AppNotFound
    )
    assert isinstance(
        sso_admin.translate(rpc_error(grpc.StatusCode.ALREADY_EXISTS), "x"),
        sso_admin.AppAlreadyExists,
    )
    other = sso_admin.translate(rpc_error(grpc.StatusCode.INTERNAL), "x")
    assert isinstance(other, kopf.TemporaryError) and other.delay == sso_admin.OTHER_DELAY


async def test_unreachable_instance_is_a_temporary_error() -> None:
    """A real failure: nothing listens on the port, so the call fails UNAVAILABLE."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = sso_admin.AdminClient(f"127.0.0.1:{port}", "token", timeout=2)
    try:
        with pytest.raises(sso_admin.AdminUnavailable) as caught:
            await client.get_app(1)
        assert "token" not in str(caught.value).replace("admin token", "")
        # One channel per endpoint, reused.
        assert sso_admin.channel(f"127.0.0.1:{port}") is sso_admin.channel(f"127.0.0.1:{port}")
    finally:
        await sso_admin.close_channels()


def test_rotation_request_predicate_and_learnt_state() -> None:
    from sso_operator.handlers import clientapp as handlers

    body = kopf.Body(
        {
            "metadata": {"uid": "u-1", "annotations": {logic.ROTATE_ANNOTATION: "one"}},
            "status": {"rotationRequest": None, "appId": 3},
        }
    )
    assert handlers.rotation_requested(body)
    # A reconcile acted on it: until the status patch is visible, memory says so.
    handlers._learnt["u-1"] = {"appId": 3, "rotationRequest": "one"}
    try:
        assert not handlers.rotation_requested(body)
        assert handlers._current("u-1", {"appId": 3, "phase": "Ready"}) == {
            "appId": 3,
            "phase": "Ready",
            "rotationRequest": "one",
        }
    finally:
        handlers._learnt.pop("u-1")
    deleting = kopf.Body(
        {
            "metadata": {
                "uid": "u-2",
                "annotations": {logic.ROTATE_ANNOTATION: "x"},
                "deletionTimestamp": "2026-11-27T12:00:00Z",
            },
            "status": {},
        }
    )
    assert not handlers.rotation_requested(deleting)
