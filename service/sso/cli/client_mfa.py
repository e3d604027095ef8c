"""`sso client …` for the TOTP second factor: enrol, log in with a code, backup codes.

Why this module exists: so a person can turn two-factor authentication on and use
it from a terminal (docs/two-factor.md):

    sso client totp-enroll                      # password prompted; writes the QR code PNG
    sso client totp-confirm 123456              # prints the 10 backup codes, once
    sso client mfa-login alice@example.com      # password, then the code, prompted
    sso client mfa-login alice@example.com --backup-code xxxx-xxxx-xxxx-xxxx-xxxx-xxxx

Registered on `sso client` by `sso.cli.__init__`; shares the stored session
(`.sso/client-session.json`) and the error output of `sso.cli.client`. Codes and
passwords are prompted without echo when not given as options.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

import grpc

from sso.cli.client import (
    _bearer,
    _password,
    _save,
    _show,
    call_service,
    subcommands,
    write_private,
)
from sso_proto.sso.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

DEFAULT_QR = Path(".sso/totp-qr.png")


def register(client_parser: argparse.ArgumentParser) -> None:
    """Add the two-factor subcommands to the `sso client` parser."""
    command = subcommands(client_parser, run)

    def factor(c: argparse.ArgumentParser) -> None:
        group = c.add_mutually_exclusive_group()
        group.add_argument("--code", default=None, help="a 6-digit TOTP code (prompted if none)")
        group.add_argument("--backup-code", default=None, help="one of the backup codes")

    c = command("totp-enroll", "start TOTP enrolment: secret, otpauth:// URI, QR code PNG")
    c.add_argument("--password", default=None, help="prompted when omitted")
    c.add_argument("--qr-file", type=Path, default=DEFAULT_QR, help=f"default {DEFAULT_QR}")
    c = command("totp-confirm", "activate TOTP with a code from the app; prints backup codes")
    c.add_argument("code", nargs="?", default=None, help="prompted when omitted")
    c = command("mfa-login", "sso.v1.Auth/Login, then VerifyMfa with a code; stores the tokens")
    c.add_argument("email")
    c.add_argument("--password", default=None, help="prompted when omitted")
    c.add_argument("--app-id", type=int, default=1)
    c.add_argument("--device", default="sso-cli")
    factor(c)
    c = command("verify-mfa", "finish a login that returned mfa_required; stores the tokens")
    c.add_argument("challenge_id")
    factor(c)
    c = command("totp-disable", "turn TOTP off (password and a current code)")
    c.add_argument("--password", default=None, help="prompted when omitted")
    factor(c)
    c = command("backup-codes", "a new set of backup codes; the old set stops working")
    c.add_argument("--password", default=None, help="prompted when omitted")
    factor(c)
    command("totp-status", "is TOTP on, and how many backup codes are left")


def _code(args: argparse.Namespace) -> dict[str, str]:
    """{"backup_code": …} or {"totp_code": …} from the options, else prompted."""
    if getattr(args, "backup_code", None):
        return {"backup_code": str(args.backup_code)}
    code = getattr(args, "code", None) or getpass.getpass("code from the authenticator app: ")
    return {"totp_code": code.strip()}


def run(args: argparse.Namespace) -> int:
    return call_service(args.target, lambda channel: _dispatch(args, channel))


def _dispatch(args: argparse.Namespace, channel: grpc.Channel) -> None:
    account = account_pb2_grpc.AccountStub(channel)
    auth = auth_pb2_grpc.AuthStub(channel)
    command = args.client_command
    if command == "totp-enroll":
        begun = account.BeginTotpEnrollment(
            account_pb2.BeginTotpEnrollmentRequest(password=_password(args)), metadata=_bearer()
        )
        where = write_private(args.qr_file, begun.qr_png)  # it holds the TOTP secret
        print(f"QR code written to {where} (scan it, then delete the file)")
        print(f"secret (to type in instead): {begun.secret}")
        print(f"otpauth URI: {begun.otpauth_uri}")
        print(f"confirm within {begun.expires_in} s: sso client totp-confirm <code>")
    elif command == "totp-confirm":
        code = args.code or getpass.getpass("code from the authenticator app: ")
        confirmed = account.ConfirmTotpEnrollment(
            account_pb2.ConfirmTotpEnrollmentRequest(totp_code=code.strip()), metadata=_bearer()
        )
        print("TOTP is on. Backup codes (each works once; shown only now):")
        for backup in confirmed.backup_codes:
            print(f"  {backup}")
        print(f"other sessions ended: {confirmed.sessions_revoked}")
    elif command == "mfa-login":
        login = auth.Login(
            auth_pb2.LoginRequest(
                email=args.email,
                password=_password(args),
                app_id=args.app_id,
                device_name=args.device,
            )
        )
        if login.WhichOneof("result") == "tokens":
            _save(login.tokens)
            _show(login)
            return
        _verify(auth, login.mfa_required.challenge_id, args)
    elif command == "verify-mfa":
        _verify(auth, args.challenge_id, args)
    elif command == "totp-disable":
        request = account_pb2.DisableTotpRequest(password=_password(args), **_code(args))
        _show(account.DisableTotp(request, metadata=_bearer()))
    elif command == "backup-codes":
        regen = account_pb2.RegenerateBackupCodesRequest(password=_password(args), **_code(args))
        fresh = account.RegenerateBackupCodes(regen, metadata=_bearer())
        print("New backup codes (the old ones no longer work):")
        for backup in fresh.backup_codes:
            print(f"  {backup}")
    elif command == "totp-status":
        status = account_pb2.GetTwoFactorStatusRequest()
        _show(account.GetTwoFactorStatus(status, metadata=_bearer()))


def _verify(auth: auth_pb2_grpc.AuthStub, challenge_id: str, args: argparse.Namespace) -> None:
    request = auth_pb2.VerifyMfaRequest(challenge_id=challenge_id, **_code(args))
    verified = auth.VerifyMfa(request)
    _save(verified.tokens)
    _show(verified)
