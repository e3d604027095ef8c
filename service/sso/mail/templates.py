"""Plain-text and HTML bodies of every mail the service sends.

Why this module exists: wording and links live in one place, apart from the
use cases that decide *when* to mail. Values are escaped for the HTML part;
links are built here from the configured base URL, so the domain only hands
over the token.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from urllib.parse import quote

from sso.domain.account_models import MailKind


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


_TEXT: dict[MailKind, tuple[str, str]] = {
    MailKind.VERIFY_EMAIL: (
        "Confirm your email address",
        "Hello,\n\nplease confirm that $email is your address by opening this link:\n\n"
        "$link\n\nThe link works once and expires in $ttl. If you did not create an "
        "account, ignore this mail.\n",
    ),
    MailKind.PASSWORD_RESET: (
        "Reset your password",
        "Hello,\n\nsomeone (hopefully you) asked to reset the password of $email. "
        "To choose a new password, open this link:\n\n$link\n\nThe link works once and "
        "expires in $ttl. If you did not ask for this, ignore this mail: your password "
        "stays as it is.\n",
    ),
    MailKind.PASSWORD_CHANGED: (
        "Your password was changed",
        "Hello,\n\nthe password of $email was changed ($how) at $when from $ip.\n"
        "$sessions other session(s) were signed out.\n\nIf this was not you, reset your "
        "password at once and contact your administrator.\n",
    ),
    MailKind.NEW_DEVICE: (
        "New sign-in to your account",
        "Hello,\n\nyour account $email was signed in to from a device we had not seen "
        "before:\n\n  when:   $when\n  from:   $ip\n  device: $device\n  app:    $app\n\n"
        "If this was you, nothing to do. If not, change your password and sign out your "
        "sessions.\n",
    ),
}

_LINK_PATHS: dict[MailKind, str] = {
    MailKind.VERIFY_EMAIL: "/account/verify-email",
    MailKind.PASSWORD_RESET: "/account/reset-password",
}


class Renderer:
    """Renders a mail kind with its values; `base_url` prefixes every link."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")

    def link(self, kind: MailKind, token: str) -> str:
        return f"{self._base}{_LINK_PATHS[kind]}?token={quote(token, safe='')}"

    def render(self, kind: MailKind, values: Mapping[str, str]) -> Rendered:
        subject, body = _TEXT[kind]
        data = dict(values)
        if kind in _LINK_PATHS:
            data["link"] = self.link(kind, data.pop("token", ""))
        text = Template(body).safe_substitute(data)
        escaped = {k: html.escape(v) for k, v in data.items()}
        paragraphs = []
        for block in (
            Template(body).safe_substitute({k: f"\x00{k}\x00" for k in data}).split("\n\n")
        ):
            part = html.escape(block)
            for key, value in escaped.items():
                marker = html.escape(f"\x00{key}\x00")
                if key == "link":
                    value = f'<a href="{value}">{value}</a>'
                part = part.replace(marker, value)
            paragraphs.append(f"<p>{part.replace(chr(10), '<br>')}</p>")
        body_html = (
            '<!doctype html><html><body style="font-family:sans-serif">'
            f"<h2>{html.escape(subject)}</h2>{''.join(paragraphs)}</body></html>"
        )
        return Rendered(subject, text, body_html)
