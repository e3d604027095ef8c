"""`sso admin …`: every `sso.v1.Admin` RPC from a terminal, over gRPC.

Why this module exists: operators need the Admin API without writing code, and
a CLI that goes through gRPC (not straight to the database) runs the same gate,
audit and rules as any other admin client. One command per RPC, named after it
in kebab case (`CreateApp` → `create-app`); answers print as JSON; errors print
code, message and reason on stderr and exit 1.

The admin credential comes from `--token` or, better (a flag shows in `ps`),
`SSO_ADMIN_TOKEN`: an admin token or an admin user's access token. An imported
app secret is read from stdin (`--secret-stdin`), never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from sso.cli.client import report_error
from sso_proto.sso.v1 import admin_pb2, admin_pb2_grpc

Build = Callable[[argparse.Namespace], Message]


def command_name(method: str) -> str:
    """`RotateAppSecret` → `rotate-app-secret`."""
    return re.sub(r"(?<!^)([A-Z])", r"-\1", method).lower()


def _app_fields(c: argparse.ArgumentParser) -> None:
    c.add_argument("--display-name", default=None)
    c.add_argument("--redirect-uri", action="append", default=None, dest="redirect_uris")
    c.add_argument("--rate-limit", type=int, default=None, help="logins per minute (0 = none)")


def _create(args: argparse.Namespace) -> Message:
    secret = sys.stdin.readline().strip() if args.secret_stdin else ""
    return admin_pb2.CreateAppRequest(
        name=args.name,
        display_name=args.display_name or "",
        redirect_uris=args.redirect_uris or [],
        login_rate_limit_per_minute=args.rate_limit or 0,
        app_id=args.app_id,
        secret=secret,
    )


def _update(args: argparse.Namespace) -> Message:
    mask = [
        name
        for name, value in (
            ("display_name", args.display_name),
            ("redirect_uris", args.redirect_uris),
            ("login_rate_limit_per_minute", args.rate_limit),
        )
        if value is not None
    ]
    return admin_pb2.UpdateAppRequest(
        app_id=args.app_id,
        update_mask=mask,
        display_name=args.display_name or "",
        redirect_uris=args.redirect_uris or [],
        login_rate_limit_per_minute=args.rate_limit or 0,
    )


def _bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1", "on"):
        return True
    if value.lower() in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def _by_user(request: Callable[..., Message]) -> Build:
    def build(args: argparse.Namespace) -> Message:
        return request(user_id=args.user_id)

    return build


def _commands(sub: Any) -> dict[str, Build]:
    """Declare one subcommand per Admin RPC; returns RPC name → request builder."""
    builds: dict[str, Build] = {}

    def add(method: str, help_text: str, build: Build) -> argparse.ArgumentParser:
        builds[method] = build
        parser: argparse.ArgumentParser = sub.add_parser(command_name(method), help=help_text)
        parser.set_defaults(method=method)
        return parser

    c = add("CreateApp", "register an app; prints its secret once", _create)
    c.add_argument("name")
    _app_fields(c)
    c.add_argument("--app-id", type=int, default=0, help="keep an existing id (0 = allocate)")
    c.add_argument("--secret-stdin", action="store_true", help="keep an existing secret")
    c = add("GetApp", "one app", lambda a: admin_pb2.GetAppRequest(app_id=a.app_id))
    c.add_argument("app_id", type=int)
    c = add(
        "ListApps",
        "apps, a page at a time (--all follows the pages)",
        lambda a: admin_pb2.ListAppsRequest(page_size=a.page_size, page_token=a.page_token),
    )
    c = add("UpdateApp", "change the fields given", _update)
    c.add_argument("app_id", type=int)
    _app_fields(c)
    c = add(
        "DeleteApp",
        "delete an app and end its sessions",
        lambda a: admin_pb2.DeleteAppRequest(app_id=a.app_id),
    )
    c.add_argument("app_id", type=int)
    c = add(
        "RotateAppSecret",
        "new secret (printed once); the old one works for the overlap",
        lambda a: admin_pb2.RotateAppSecretRequest(app_id=a.app_id, overlap_seconds=a.overlap),
    )
    c.add_argument("app_id", type=int)
    c.add_argument("--overlap", type=int, default=0, help="seconds (0 = configured default)")
    c = add(
        "ListUsers",
        "users, a page at a time; --email-prefix matches literally",
        lambda a: admin_pb2.ListUsersRequest(
            page_size=a.page_size, page_token=a.page_token, email_prefix=a.email_prefix
        ),
    )
    c.add_argument("--email-prefix", default="")
    by_user: tuple[tuple[str, str, Callable[..., Message]], ...] = (
        ("GetUser", "one user", admin_pb2.GetUserRequest),
        ("UnlockUser", "lift an administrative lock and the lockout", admin_pb2.UnlockUserRequest),
        ("DeleteUser", "delete a user and everything of theirs", admin_pb2.DeleteUserRequest),
        ("RevokeUserSessions", "end all of a user's sessions", admin_pb2.RevokeUserSessionsRequest),
        ("ExportUser", "everything held about a user (JSON)", admin_pb2.ExportUserRequest),
    )
    for method, help_text, request in by_user:
        c = add(method, help_text, _by_user(request))
        c.add_argument("user_id", type=int)
    c = add(
        "LockUser",
        "lock until unlocked; ends the user's sessions",
        lambda a: admin_pb2.LockUserRequest(user_id=a.user_id, reason=a.reason),
    )
    c.add_argument("user_id", type=int)
    c.add_argument("--reason", default="")
    c = add(
        "SetAdmin",
        "grant or remove the admin flag",
        lambda a: admin_pb2.SetAdminRequest(user_id=a.user_id, is_admin=a.is_admin),
    )
    c.add_argument("user_id", type=int)
    c.add_argument("is_admin", type=_bool)
    add("GetStats", "usage statistics", lambda a: admin_pb2.GetStatsRequest(days=a.days))
    return builds


BUILDS: dict[str, Build] = {}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("admin", help="call the sso.v1.Admin API (docs/admin.md)")
    p.add_argument(
        "--target",
        default=os.environ.get("SSO_ADMIN_TARGET")
        or os.environ.get("SSO_TARGET", "127.0.0.1:50051"),
        help="host:port of sso.v1.Admin (default: $SSO_ADMIN_TARGET, else $SSO_TARGET;"
        " the admin port when the server sets SSO_SERVER__ADMIN_PORT)",
    )
    p.add_argument("--token", default=None, help="admin credential (default: $SSO_ADMIN_TOKEN)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    p.add_argument("--page-size", type=int, default=0)
    p.add_argument("--page-token", default="")
    p.add_argument("--all", action="store_true", help="list commands: follow every page")
    p.add_argument("--days", type=int, default=0, help="stats: days of daily logins")
    asub = p.add_subparsers(dest="admin_command", required=True)
    BUILDS.update(_commands(asub))
    p.set_defaults(func=run)


def _show(message: Message) -> None:
    data = MessageToDict(message, preserving_proto_field_name=True)
    if isinstance(message, admin_pb2.ExportUserResponse):
        data = json.loads(message.json)
    print(json.dumps(data, indent=2, ensure_ascii=False))


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("SSO_ADMIN_TOKEN", "")
    if not token:
        print("an admin credential is required: --token or SSO_ADMIN_TOKEN", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(args.target) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        call = getattr(stub, args.method)
        request = BUILDS[args.method](args)
        try:
            response = call(request, metadata=metadata, timeout=args.timeout)
            _show(response)
            while args.all and getattr(response, "next_page_token", ""):
                request.page_token = response.next_page_token  # type: ignore[attr-defined]
                response = call(request, metadata=metadata, timeout=args.timeout)
                _show(response)
        except grpc.RpcError as error:
            return report_error(error)
    if args.method in ("CreateApp", "RotateAppSecret"):
        print("store the secret now: it is never shown again", file=sys.stderr)
    return 0
