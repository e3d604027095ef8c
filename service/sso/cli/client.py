"""`sso client …`: walk through every flow from a terminal, no code needed.

Talks gRPC to a running service. The last token pair is kept in
`.sso/client-session.json` (mode 0600) so `refresh`, `validate`, `sessions`
and `logout` work without copy-pasting tokens. Errors print their gRPC code,
message and machine-readable reason, and exit 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from sso_proto.auth import auth_pb2 as legacy_pb2
from sso_proto.auth import auth_pb2_grpc as legacy_grpc
from sso_proto.sso.v1 import auth_pb2, auth_pb2_grpc, sessions_pb2, sessions_pb2_grpc

STATE = Path(os.environ.get("SSO_CLIENT_STATE", ".sso/client-session.json"))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("client", help="call a running service (try the flows)")
    p.add_argument("--target", default=os.environ.get("SSO_TARGET", "127.0.0.1:50051"))
    csub = p.add_subparsers(dest="client_command", required=True)

    def creds(c: argparse.ArgumentParser) -> None:
        c.add_argument("email")
        c.add_argument("--password", default=None, help="prompted when omitted")

    c = csub.add_parser("register", help="sso.v1.Auth/Register")
    creds(c)
    c = csub.add_parser("login", help="sso.v1.Auth/Login; stores the token pair")
    creds(c)
    c.add_argument("--app-id", type=int, default=1)
    c.add_argument("--device", default="sso-cli")
    csub.add_parser("refresh", help="rotate the stored refresh token")
    c = csub.add_parser("validate", help="validate the stored (or given) access token")
    c.add_argument("--token", default=None)
    csub.add_parser("sessions", help="list my sessions")
    c = csub.add_parser("revoke", help="end one of my sessions (or all with --all)")
    c.add_argument("session_id", nargs="?", default="")
    c.add_argument("--all", action="store_true")
    c.add_argument("--keep-current", action="store_true")
    csub.add_parser("logout", help="end the stored session")
    csub.add_parser("jwks", help="the public signing keys")
    c = csub.add_parser("legacy-login", help="auth.Auth/Login (the seed API's HS256 token)")
    creds(c)
    c.add_argument("--app-id", type=int, default=1)
    c = csub.add_parser("legacy-register", help="auth.Auth/Register (the seed API)")
    creds(c)
    c = csub.add_parser("is-admin", help="auth.Auth/IsAdmin")
    c.add_argument("user_id", type=int)
    p.set_defaults(func=run)


def prompt_secret(value: str | None, prompt: str, env: str = "SSO_CLIENT_PASSWORD") -> str:
    """The option's value, else `$env`, else asked for without echo."""
    if value is not None:
        return str(value)
    return os.environ.get(env) or getpass.getpass(prompt)


def _password(args: argparse.Namespace) -> str:
    return prompt_secret(args.password, "password: ")


def _load() -> dict[str, Any]:
    if not STATE.exists():
        raise SystemExit("no stored session: run `sso client login` first")
    data: dict[str, Any] = json.loads(STATE.read_text())
    return data


def write_private(path: Path, data: bytes) -> Path:
    """Write a file readable by the owner only (tokens, a QR code holding a TOTP secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path.resolve()


def _save(tokens: auth_pb2.TokenPair) -> None:
    pair = MessageToDict(tokens, preserving_proto_field_name=True)
    write_private(STATE, json.dumps(pair).encode())


def _show(message: Message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _bearer() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {_load()['access_token']}"),)


def _reason(error: grpc.RpcError) -> str:
    trailers: Any = error.trailing_metadata() if isinstance(error, grpc.Call) else ()
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


def report_error(error: grpc.RpcError) -> int:
    """Print a failed call's code, message and reason as JSON on stderr; the exit status."""
    call: Any = error
    report = {"code": call.code().name, "message": call.details(), "reason": _reason(error)}
    print(json.dumps(report), file=sys.stderr)
    return 1


def call_service(target: str, dispatch: Callable[[grpc.Channel], None]) -> int:
    """Run `dispatch` on a channel to `target`; a gRPC error is reported, exit status 1."""
    with grpc.insecure_channel(target) as channel:
        try:
            dispatch(channel)
        except grpc.RpcError as error:
            return report_error(error)
    return 0


def subcommands(
    client_parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]
) -> Callable[[str, str], argparse.ArgumentParser]:
    """For modules that add commands to `sso client`: `command(name, help)` → its parser."""
    csub = next(a for a in client_parser._actions if isinstance(a, argparse._SubParsersAction))

    def command(name: str, text: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = csub.add_parser(name, help=text)
        c.set_defaults(func=run)
        return c

    return command


def run(args: argparse.Namespace) -> int:
    return call_service(args.target, lambda channel: _dispatch(args, channel))


def _dispatch(args: argparse.Namespace, channel: grpc.Channel) -> None:
    auth = auth_pb2_grpc.AuthStub(channel)
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    legacy = legacy_grpc.AuthStub(channel)
    command = args.client_command
    if command == "register":
        _show(auth.Register(auth_pb2.RegisterRequest(email=args.email, password=_password(args))))
    elif command == "login":
        request = auth_pb2.LoginRequest(
            email=args.email, password=_password(args), app_id=args.app_id, device_name=args.device
        )
        response = auth.Login(request)
        _save(response.tokens)
        _show(response)
    elif command == "refresh":
        refreshed = auth.Refresh(auth_pb2.RefreshRequest(refresh_token=_load()["refresh_token"]))
        _save(refreshed.tokens)
        _show(refreshed)
    elif command == "validate":
        token = args.token or _load()["access_token"]
        _show(auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token)))
    elif command == "sessions":
        _show(sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=_bearer()))
    elif command == "revoke":
        if args.all:
            request_all = sessions_pb2.RevokeAllSessionsRequest(keep_current=args.keep_current)
            _show(sessions.RevokeAllSessions(request_all, metadata=_bearer()))
        else:
            request_one = sessions_pb2.RevokeSessionRequest(session_id=args.session_id)
            _show(sessions.RevokeSession(request_one, metadata=_bearer()))
    elif command == "logout":
        _show(auth.Logout(auth_pb2.LogoutRequest(refresh_token=_load()["refresh_token"])))
        STATE.unlink(missing_ok=True)
    elif command == "jwks":
        print(json.dumps(json.loads(auth.GetJwks(auth_pb2.GetJwksRequest()).jwks_json), indent=2))
    elif command == "legacy-login":
        request_legacy = legacy_pb2.LoginRequest(
            email=args.email, password=_password(args), app_id=args.app_id
        )
        _show(legacy.Login(request_legacy))
    elif command == "legacy-register":
        _show(
            legacy.Register(legacy_pb2.RegisterRequest(email=args.email, password=_password(args)))
        )
    elif command == "is-admin":
        _show(legacy.IsAdmin(legacy_pb2.IsAdminRequest(user_id=args.user_id)))
