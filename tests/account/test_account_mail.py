"""The mail subsystem against a real SMTP server (aiosmtpd in this process) and a real
directory: retries with backoff on 4xx, no retry on 5xx, the bounded queue, the outbox,
templates, and no link token in any log line."""

from __future__ import annotations

import io
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import grpc
import pytest
from account_helpers import SmtpSink, account, mail_settings, register, settle, start_account_server
from sso_harness import make_settings, start, stop

from sso import logs
from sso.config import LogSettings, MailSettings
from sso.domain.account_models import Mail, MailKind
from sso.mail.dispatcher import MailDispatcher
from sso.mail.templates import Renderer
from sso_proto.sso.v1 import account_pb2


def reset_mail(to: str = "jane@example.com") -> Mail:
    token = secrets.token_urlsafe(32)
    return Mail(MailKind.PASSWORD_RESET, to, {"email": to, "token": token, "ttl": "30 minutes"})


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("DEBUG", stream, LogSettings(), replace=False)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_a_4xx_is_retried_with_backoff_then_delivered(
    smtp_sink: SmtpSink, captured: io.StringIO
) -> None:
    smtp_sink.fail_next = 2
    mailer = MailDispatcher.from_settings(
        mail_settings(smtp_sink.port), embedded=False, home=Path()
    )
    mail = reset_mail()
    assert mailer.submit(mail)
    await mailer.join()
    await mailer.close()
    assert smtp_sink.attempts == 3
    assert mailer.stats.retried == 2 and mailer.stats.sent == 1 and mailer.stats.failed == 0
    (received,) = smtp_sink.all()
    assert received.rcpt == ["jane@example.com"] and received.token == mail.values["token"]
    text = captured.getvalue()
    assert text.count("mail delivery failed, retrying") == 2 and "451" in text
    assert mail.values["token"] not in text


def test_backoff_doubles_up_to_the_cap() -> None:
    mailer = MailDispatcher(None, Renderer("https://x"), "a@b", backoff_initial=1, backoff_max=5)
    for attempt, base in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        delay = mailer.backoff(attempt)
        assert base <= delay <= base * 1.25


async def test_a_5xx_is_not_retried(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next, smtp_sink.fail_code = 1, "550 5.1.1 no such user"
    mailer = MailDispatcher.from_settings(
        mail_settings(smtp_sink.port), embedded=False, home=Path()
    )
    mailer.submit(reset_mail())
    await mailer.join()
    await mailer.close()
    assert smtp_sink.attempts == 1 and smtp_sink.all() == []
    assert mailer.stats.failed == 1 and mailer.stats.retried == 0


async def test_an_unreachable_server_gives_up_after_the_retries(tmp_path: Path) -> None:
    settings = mail_settings(1, retries=2, backoff_initial=0.01)  # nothing listens on port 1
    mailer = MailDispatcher.from_settings(settings, embedded=False, home=tmp_path)
    mailer.submit(reset_mail())
    await mailer.join()
    await mailer.close()
    assert mailer.stats.retried == 2 and mailer.stats.failed == 1 and mailer.stats.sent == 0


async def test_a_full_queue_drops_instead_of_growing(smtp_sink: SmtpSink) -> None:
    smtp_sink.delay = 0.5
    settings = mail_settings(smtp_sink.port, queue_size=1, workers=1)
    mailer = MailDispatcher.from_settings(settings, embedded=False, home=Path())
    assert mailer.submit(reset_mail("one@example.com"))
    await smtp_sink_started(smtp_sink)
    assert mailer.submit(reset_mail("two@example.com"))  # waits in the queue
    assert not mailer.submit(reset_mail("three@example.com"))  # dropped
    await mailer.join()
    await mailer.close()
    assert mailer.stats.dropped == 1
    assert sorted(m.rcpt[0] for m in smtp_sink.all()) == ["one@example.com", "two@example.com"]


async def smtp_sink_started(sink: SmtpSink) -> None:
    import asyncio

    for _ in range(200):
        if sink.attempts:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first mail never reached the server")


async def test_disabled_mode_sends_nothing(tmp_path: Path) -> None:
    mailer = MailDispatcher.from_settings(
        MailSettings(mode="disabled"), embedded=True, home=tmp_path
    )
    assert not mailer.submit(reset_mail())
    assert mailer.stats.dropped == 1


def test_templates_escape_values_and_build_links() -> None:
    rendered = Renderer("https://sso.example/").render(
        MailKind.NEW_DEVICE,
        {
            "email": "a@b.c",
            "when": "now",
            "ip": "1.2.3.4",
            "device": "<script>x</script>",
            "app": "A & B",
        },
    )
    assert "<script>" in rendered.text and "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html and "A &amp; B" in rendered.html
    link = Renderer("https://sso.example/").render(
        MailKind.VERIFY_EMAIL, {"email": "a@b.c", "token": "t0k-en_", "ttl": "24 hours"}
    )
    assert "https://sso.example/account/verify-email?token=t0k-en_" in link.text
    assert '<a href="https://sso.example/account/verify-email?token=t0k-en_">' in link.html


async def test_embedded_mode_writes_the_outbox(tmp_path: Path, sqlite_url: str) -> None:
    """`make run`'s default: no SMTP server, each mail a private .eml file under home/outbox."""
    settings = make_settings(tmp_path, sqlite_url)
    assert settings.embedded and settings.mail.mode == "auto"
    running = await start(settings)
    try:
        email = f"outbox.{secrets.token_hex(3)}@example.com"
        await register(running, email)
        await account(running).RequestPasswordReset(
            account_pb2.RequestPasswordResetRequest(email=email)
        )
        await settle(running)
    finally:
        await stop(running)
    outbox = tmp_path / "outbox"
    assert stat.S_IMODE(os.stat(outbox).st_mode) == 0o700
    files = sorted(outbox.glob("*.eml"))
    # Both mails go out in the background, so either may be written first.
    assert sorted(f.name.split("-")[1] for f in files) == ["password_reset", "verify_email"]
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert message["To"] == email
        body = message.get_body(("plain",))
        assert body is not None and "token=" in str(body.get_content())


async def test_no_link_token_reaches_a_log_line(
    tmp_path: Path, sqlite_url: str, smtp_sink: SmtpSink, captured: io.StringIO
) -> None:
    """Registration, resend, reset request, a retried delivery, reset and verification:
    every token the mails carried is absent from the DEBUG logs."""
    running = await start_account_server(tmp_path, sqlite_url, smtp_sink)
    try:
        email = f"logs.{secrets.token_hex(3)}@example.com"
        smtp_sink.fail_next = 1
        await register(running, email)
        stub = account(running)
        await stub.ResendVerification(account_pb2.ResendVerificationRequest(email=email))
        await stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=email))
        await settle(running)
        # The retried registration mail may arrive after the resend's (which superseded it).
        verified = 0
        for mail in smtp_sink.to(email, "verify_email"):
            try:
                await stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=mail.token))
                verified += 1
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert verified == 1
        reset = smtp_sink.to(email, "password_reset")[-1].token
        await stub.ResetPassword(
            account_pb2.ResetPasswordRequest(token=reset, new_password="fresh horse staple x")
        )
        await settle(running)
    finally:
        await stop(running)
    text = captured.getvalue()
    assert "mail delivery failed, retrying" in text and "mail sent" in text
    tokens = [m.token for m in smtp_sink.all() if m.kind in ("verify_email", "password_reset")]
    assert len(tokens) >= 3
    assert [t for t in tokens if t in text] == []
