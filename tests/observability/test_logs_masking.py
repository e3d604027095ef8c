"""H1/H3: the JSON log handler masks every record by itself, per level, and stays one line.

Drives `sso.logs` the way the service uses it: `configure()` on a stream, plain
`logging` calls from any logger (no call site helps), then reads the JSON lines.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sso import logs
from sso.config import LogSettings, Settings


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("DEBUG", stream, LogSettings(), replace=False)
    yield stream, logging.getLogger("some.library.module")
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    raw = stream.getvalue().splitlines()
    return [json.loads(line) for line in raw]


def one(stream: io.StringIO) -> dict[str, Any]:
    (entry,) = lines(stream)
    return entry


def test_password_fields_are_removed_everywhere(capture: Any) -> None:
    stream, log = capture
    log.info(
        "x",
        extra={
            "password": "pw-one",
            "newPassword": "pw-two",
            "old_passwd": "pw-three",
            "form": {"user": "u", "confirm_password": "pw-four", "list": [{"pwd": "pw-five"}]},
        },
    )
    entry, text = one(stream), stream.getvalue()
    assert "password" not in entry and "newPassword" not in entry and "old_passwd" not in entry
    assert entry["form"] == {"user": "u", "list": [{}]}
    assert all(f"pw-{n}" not in text for n in ("one", "two", "three", "four", "five"))


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "refresh_token",
        "accessToken",
        "client_secret",
        "authorization",
        "Authorization",
        "cookie",
        "dsn",
        "totp_secret",
        "otp",
        "backup_code",
        "recovery_code",
        "api_key",
        "x-api-key",
        "private_key",
    ],
)
def test_secret_fields_are_fully_masked(capture: Any, key: str) -> None:
    stream, log = capture
    log.warning("x", extra={key: "s3cr3t-value"})
    assert one(stream)[key] == "***"
    assert "s3cr3t-value" not in stream.getvalue()


def test_ordinary_fields_stay_readable(capture: Any) -> None:
    stream, log = capture
    log.info("rpc", extra={"method": "/sso.v1.Auth/Login", "code": "OK", "duration_ms": 1.5})
    entry = one(stream)
    assert (entry["method"], entry["code"], entry["duration_ms"]) == (
        "/sso.v1.Auth/Login",
        "OK",
        1.5,
    )
    assert "scan_masked" not in entry


def test_emails_partially_masked_in_fields_and_text(capture: Any) -> None:
    stream, log = capture
    log.info("mail to jane.doe@example.com failed", extra={"email": "Jane.Doe@Example.com"})
    entry = one(stream)
    assert entry["email"] == "J***@Example.com"
    assert entry["msg"] == "mail to j***@example.com failed"
    assert "jane.doe" not in stream.getvalue().lower()


def test_email_and_ip_rules_per_level() -> None:
    stream = io.StringIO()
    settings = LogSettings(
        email_by_level={"DEBUG": "clear", "ERROR": "full"}, ip_by_level={"INFO": "network"}
    )
    handler = logs.handler(stream, settings)
    log = logging.getLogger("per.level")
    log.addHandler(handler)
    log.propagate, log.level = False, logging.DEBUG
    try:
        for level in (logging.DEBUG, logging.INFO, logging.ERROR):
            log.log(level, "for a@example.com", extra={"email": "a@example.com", "ip": "10.1.2.3"})
        log.info("v6", extra={"peer_ip": "2001:db8:1:2::7"})
    finally:
        log.removeHandler(handler)
    debug, info, error, v6 = lines(stream)
    assert (debug["email"], debug["msg"], debug["ip"]) == (
        "a@example.com",
        "for a@example.com",
        "10.1.2.3",
    )
    assert (info["email"], info["msg"], info["ip"]) == (
        "a***@example.com",
        "for a***@example.com",
        "10.1.2.0/24",
    )
    assert (error["email"], error["msg"], error["ip"]) == ("***", "for ***", "10.1.2.3")
    assert v6["peer_ip"] == "2001:db8:1::/48"
    # mask_emails=false writes emails in clear; password and tokens stay masked regardless.
    rules = logs.Rules.from_settings(LogSettings(mask_emails=False))
    assert rules.email_mode(logging.INFO) == "clear"


def test_rules_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_LOGGING__EMAIL_BY_LEVEL", '{"DEBUG": "clear"}')
    monkeypatch.setenv("SSO_LOGGING__EXTRA_SECRET_FIELDS", '["iban"]')
    rules = logs.Rules.from_settings(Settings().logging)
    assert rules.email_mode(logging.DEBUG) == "clear"
    assert rules.email_mode(logging.INFO) == "partial"
    stream = io.StringIO()
    handler = logs.handler(stream, rules)
    record = logging.makeLogRecord({"msg": "x", "levelno": 20, "levelname": "INFO", "iban": "DE00"})
    handler.handle(record)
    assert json.loads(stream.getvalue())["iban"] == "***"


def test_session_ids_only_as_hashes(capture: Any) -> None:
    stream, log = capture
    sid = secrets.token_urlsafe(16)
    log.info("revoked", extra={"session_id": sid, "sid": sid})
    entry = one(stream)
    assert entry["session_id"] == entry["sid"] == logs.hash_session(sid)
    assert sid not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("postgresql+asyncpg://sso:hunter2pw@db:5432/sso", "hunter2pw"),
        ("redis://:redispass99@redis:6379/0", "redispass99"),
        ("host=db user=sso password=libpqpass dbname=sso", "libpqpass"),
        ('{"refresh_token": "rt-value-1"}', "rt-value-1"),
        ("authorization: Bearer abc.def-123", "abc.def-123"),
        ("client_secret=cs-value-1&grant=x", "cs-value-1"),
    ],
)
def test_secrets_inside_free_text(capture: Any, text: str, leak: str) -> None:
    stream, log = capture
    log.error("connect failed: %s", text)
    assert leak not in stream.getvalue()


def test_final_check_catches_secret_shapes_under_innocent_keys(capture: Any) -> None:
    stream, log = capture
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLWJ5dGVz"
    random_token = secrets.token_urlsafe(32)
    hex_digest = secrets.token_hex(32)
    before = logs.scan_hits()
    log.info(
        "got %s",
        jwt_like,
        extra={
            "note": f"value {random_token}",
            "items": [hex_digest],
            "obj": _Opaque(random_token),
        },
    )
    entry, text = one(stream), stream.getvalue()
    assert all(v not in text for v in (jwt_like, random_token, hex_digest))
    assert entry["msg"] == "got ***" and entry["note"] == "value ***"
    assert entry["scan_masked"] == 4 and logs.scan_hits() - before == 4
    # Identifiers and prose are not tokens.
    log.info("test_every_forged_token_is_rejected in sso_proto.sso.v1.auth_pb2_grpc")
    assert lines(stream)[-1]["msg"].startswith("test_every_forged_token_is_rejected")
    # A base32 TOTP secret can be all capitals with no digit; constants have underscores.
    base32 = "JBSWYQDPEHPKQPXPKRXWQRLSVNWXQJTM"
    log.info("secret %s of MAX_CONCURRENT_REQUESTS_PER_PROCESS_X", base32)
    assert lines(stream)[-1]["msg"] == "secret *** of MAX_CONCURRENT_REQUESTS_PER_PROCESS_X"


class _Opaque:
    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return f"Opaque({self.value})"


def test_private_keys_are_masked(capture: Any) -> None:
    stream, log = capture
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    log.error("loaded %s", pem)
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in stream.getvalue()
    assert "BEGIN PRIVATE KEY" not in stream.getvalue()


def test_log_injection_stays_one_escaped_line(capture: Any) -> None:
    """H3: CR/LF, a forged JSON record, ANSI escapes and Unicode separators."""
    stream, log = capture
    hostile = 'a\r\n{"level":"INFO","msg":"admin ok"}\x1b[31m\x00\u2028\u0085end'
    log.warning("login for %s", hostile, extra={"user_agent": hostile})
    raw = stream.getvalue()
    assert raw.count("\n") == 1 and "\r" not in raw and "\x1b" not in raw
    assert "\u2028" not in raw and "\u0085" not in raw and "\x00" not in raw
    entry = one(stream)
    assert entry["msg"] == f"login for {hostile}"  # nothing lost, only escaped
    assert entry["user_agent"] == hostile and entry["level"] == "WARNING"


def test_request_secrets_masked_in_messages_and_tracebacks(capture: Any) -> None:
    stream, log = capture
    password, email = "correct horse battery 77", "Canary.User@Example.com"
    token = logs.bind_request_secrets([(password, "secret"), (email, "email"), ("ab", "secret")])
    try:
        try:
            raise RuntimeError(f"db said: {password} for {email.lower()}")
        except RuntimeError:
            log.exception("failed for %s", email)
    finally:
        logs.unbind_request_secrets(token)
    log.info("after the request: ab")
    text = stream.getvalue()
    assert password not in text and "canary.user" not in text.lower()
    first, after = lines(stream)
    assert "RuntimeError: db said: *** for c***@example.com" in first["exc"]
    assert after["msg"] == "after the request: ab"  # short values are not searched for


def test_every_logger_and_other_handlers_see_masked_records(capture: Any) -> None:
    """The filter rewrites the record, so a handler added later by anyone sees it masked."""
    stream, log = capture
    other = io.StringIO()
    plain = logging.StreamHandler(other)
    plain.setFormatter(logging.Formatter("%(message)s %(token)s"))
    logging.getLogger().addHandler(plain)
    try:
        logging.getLogger("deep.child.logger").info(
            "bearer %s", "Bearer abcdef123456", extra={"token": "tok-123456"}
        )
    finally:
        logging.getLogger().removeHandler(plain)
    assert "tok-123456" not in stream.getvalue() + other.getvalue()
    assert "abcdef123456" not in stream.getvalue() + other.getvalue()
    assert log.name == "some.library.module"


def test_request_id_and_trace_ids_on_every_line(capture: Any) -> None:
    stream, log = capture
    token = logs.request_id_var.set("req-123")
    try:
        log.info("no span")
        span = NonRecordingSpan(
            SpanContext(
                trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
                span_id=0x00F067AA0BA902B7,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
        with trace.use_span(span):
            log.info("in span")
    finally:
        logs.request_id_var.reset(token)
    log.info("outside")
    no_span, in_span, outside = lines(stream)
    assert no_span["request_id"] == "req-123" and "trace_id" not in no_span
    assert in_span["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # not masked as a token
    assert in_span["span_id"] == "00f067aa0ba902b7" and in_span["request_id"] == "req-123"
    assert outside["request_id"] == "-"


def test_broken_format_arguments_do_not_lose_the_record(capture: Any) -> None:
    stream, log = capture
    log.info("%d items", "not-a-number")
    assert "unformattable" in one(stream)["msg"]


def test_masking_cost_per_access_line(capture: Any) -> None:
    stream, log = capture
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        log.info("rpc", extra={"method": "/sso.v1.Auth/Login", "code": "OK", "duration_ms": 3.2})
    per_line_us = (time.perf_counter() - started) / n * 1e6
    print(f"\nmasked JSON access line: {per_line_us:.1f} µs")
    assert len(lines(stream)) == n
    assert per_line_us < 500


def test_lazy_request_secrets_are_found_once_and_only_when_a_line_is_written(
    capture: Any,
) -> None:
    """The interceptor binds a callable: a call that logs nothing never decodes its
    token; one that logs twice finds the secrets once."""
    stream, log = capture
    password = "correct horse battery 78"
    found: list[int] = []

    def find() -> list[tuple[str, str]]:
        found.append(1)
        return [(password, "secret")]

    token = logs.bind_request_secrets(find)
    try:
        assert found == []
        log.info("first %s", password)
        log.info("second %s", password)
    finally:
        logs.unbind_request_secrets(token)
    assert found == [1]
    assert password not in stream.getvalue()
    assert [entry["msg"] for entry in lines(stream)] == ["first ***", "second ***"]
