"""Delivering one rendered mail: over SMTP (aiosmtplib) or into a file outbox.

Why this module exists: production mail goes through a real SMTP server
(STARTTLS or implicit TLS, optional AUTH, timeouts); `make run` has no mail
server, so embedded mode writes each mail as an `.eml` file the developer can
open (`.sso/outbox/`). Both raise `TransientMailError` for what a later
attempt may fix (connection trouble, timeouts, 4xx replies) and
`PermanentMailError` for the rest (5xx: a retry would be refused again).
Error texts carry the SMTP code only, never the server's words or the mail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from sso.config import MailSettings
from sso.mail.templates import Rendered


class TransientMailError(Exception):
    """Raised when delivery failed in a way a later attempt may fix (4xx, network, timeout)."""


class PermanentMailError(Exception):
    """Raised when the server refused the mail for good (5xx) or it cannot be built."""


class Transport(Protocol):
    async def deliver(self, message: EmailMessage) -> None: ...


def build_message(sender: str, to: str, rendered: Rendered, *, kind: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["X-SSO-Mail-Kind"] = kind
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


class SmtpTransport:
    """One SMTP connection per mail (mails are rare: no pool to keep healthy)."""

    def __init__(self, settings: MailSettings) -> None:
        self._s = settings

    async def deliver(self, message: EmailMessage) -> None:
        s = self._s
        password = s.password.get_secret_value() if s.password is not None else None
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=password if s.username else None,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",
                validate_certs=s.validate_certs,
                timeout=s.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            if all(400 <= c < 500 for c in codes):
                raise TransientMailError(f"recipient deferred ({codes})") from None
            raise PermanentMailError(f"recipient refused ({codes})") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TransientMailError(f"server deferred ({exc.code})") from None
            raise PermanentMailError(f"server refused ({exc.code})") from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise TransientMailError(f"delivery failed ({type(exc).__name__})") from None


class FileOutbox:
    """Writes each mail as `<time>-<kind>-<random>.eml` (mode 0600) into a 0700 directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def deliver(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, message: EmailMessage) -> Path:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            kind = str(message.get("X-SSO-Mail-Kind", "mail"))
            path = self.directory / f"{stamp}-{kind}-{secrets.token_hex(3)}.eml"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(message.as_bytes())
        except OSError as exc:
            raise TransientMailError(f"outbox write failed ({type(exc).__name__})") from None
        return path
