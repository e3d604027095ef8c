"""`sso client …` for the account lifecycle: verify the address, reset or change the
password, read the login history, connected apps, export, and the embedded outbox.

Why this module exists: so a person can walk through every mail-driven flow from
a terminal. With `make run` no mail server exists; the service writes each mail
into `.sso/outbox/` and `sso client outbox` lists them with their links, while
`--from-outbox EMAIL` picks the newest link for that address, so

    sso client forgot-password alice@example.com
    sso client reset-password --from-outbox alice@example.com --password '…'

works without copying a token by hand. Registered on `sso client` by
`sso.cli.__init__`; shares the stored session and error output of `sso.cli.client`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from sso.cli.client import _bearer, _show, call_service, prompt_secret, subcommands
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc

LINK = re.compile(r"https?://\S+?token=[A-Za-z0-9_\-%]+")


def register(client_parser: argparse.ArgumentParser) -> None:
    """Add the account subcommands to the `sso client` parser."""
    command = subcommands(client_parser, run)

    def from_outbox(c: argparse.ArgumentParser) -> None:
        c.add_argument("token", nargs="?", default="", help="the token from the mailed link")
        c.add_argument(
            "--from-outbox",
            metavar="EMAIL",
            default=None,
            help="take the newest link mailed to EMAIL from the outbox",
        )

    c = command("outbox", "list the mails in the embedded outbox (make run) with their links")
    c.add_argument("--email", default=None, help="only mails to this address")
    c = command("verify-email", "sso.v1.Account/VerifyEmail with a mailed token")
    from_outbox(c)
    c = command("resend-verification", "mail a new verification link")
    c.add_argument("email")
    c = command("forgot-password", "sso.v1.Account/RequestPasswordReset")
    c.add_argument("email")
    c = command("reset-password", "set a new password with a mailed reset token")
    from_outbox(c)
    c.add_argument("--password", default=None, help="the new password (prompted when omitted)")
    c = command("change-password", "change my password (needs the current one)")
    c.add_argument("--current", default=None, help="prompted when omitted")
    c.add_argument("--new", default=None, help="prompted when omitted")
    c = command("history", "my login history, newest first")
    c.add_argument("--page-size", type=int, default=20)
    c.add_argument("--page-token", default="")
    command("apps", "apps in which I have live sessions")
    c = command("revoke-app", "end all my sessions in one app")
    c.add_argument("app_id", type=int)
    command("export", "everything the service holds about me, as JSON")


def outbox_dir() -> Path:
    from sso.config import Settings

    settings = Settings()
    return settings.mail.outbox_dir or settings.home / "outbox"


def outbox_mails(email: str | None = None) -> list[tuple[Path, EmailMessage]]:
    """The outbox's mails, oldest first (file names start with the time)."""
    found = []
    for path in sorted(outbox_dir().glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        if email is None or str(message["To"]).casefold() == email.casefold():
            found.append((path, message))
    return found


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    return "" if body is None else str(body.get_content())


def _link_token(email: str, kind: str) -> str:
    for _, message in reversed(outbox_mails(email)):
        if message["X-SSO-Mail-Kind"] == kind:
            link = LINK.search(_text(message))
            if link:
                return parse_qs(urlparse(link.group(0)).query)["token"][0]
    raise SystemExit(f"no {kind} mail to {email} in {outbox_dir()}")


def _token(args: argparse.Namespace, kind: str) -> str:
    if args.from_outbox:
        return _link_token(args.from_outbox, kind)
    if not args.token:
        raise SystemExit("give the token from the link, or --from-outbox EMAIL")
    return str(args.token)


def run(args: argparse.Namespace) -> int:
    if args.client_command == "outbox":
        for path, message in outbox_mails(args.email):
            link = LINK.search(_text(message))
            print(
                json.dumps(
                    {
                        "file": str(path.resolve()),
                        "kind": str(message["X-SSO-Mail-Kind"]),
                        "to": str(message["To"]),
                        "subject": str(message["Subject"]),
                        "link": link.group(0) if link else None,
                    }
                )
            )
        return 0
    return call_service(
        args.target, lambda channel: _dispatch(args, account_pb2_grpc.AccountStub(channel))
    )


def _dispatch(args: argparse.Namespace, stub: account_pb2_grpc.AccountStub) -> None:
    command = args.client_command
    if command == "verify-email":
        token = _token(args, "verify_email")
        _show(stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=token)))
    elif command == "resend-verification":
        stub.ResendVerification(account_pb2.ResendVerificationRequest(email=args.email))
        print("if that address has an unverified account, a new link is on its way")
    elif command == "forgot-password":
        stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email=args.email))
        print("if that address has an account, a reset link is on its way")
    elif command == "reset-password":
        token = _token(args, "password_reset")
        password = prompt_secret(args.password, "new password: ")
        request = account_pb2.ResetPasswordRequest(token=token, new_password=password)
        _show(stub.ResetPassword(request))
        print("password changed; every session was signed out: log in again", file=sys.stderr)
    elif command == "change-password":
        current = prompt_secret(args.current, "current password: ")
        new = prompt_secret(args.new, "new password: ", "SSO_CLIENT_NEW_PASSWORD")
        request_change = account_pb2.ChangePasswordRequest(
            current_password=current, new_password=new
        )
        _show(stub.ChangePassword(request_change, metadata=_bearer()))
    elif command == "history":
        request_history = account_pb2.ListLoginHistoryRequest(
            page_size=args.page_size, page_token=args.page_token
        )
        _show(stub.ListLoginHistory(request_history, metadata=_bearer()))
    elif command == "apps":
        _show(stub.ListConnectedApps(account_pb2.ListConnectedAppsRequest(), metadata=_bearer()))
    elif command == "revoke-app":
        request_revoke = account_pb2.RevokeAppAccessRequest(app_id=args.app_id)
        _show(stub.RevokeAppAccess(request_revoke, metadata=_bearer()))
    elif command == "export":
        exported = stub.ExportMyData(account_pb2.ExportMyDataRequest(), metadata=_bearer())
        print(json.dumps(json.loads(exported.json), indent=2))
