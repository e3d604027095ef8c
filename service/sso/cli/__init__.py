"""The `sso` command: serve, migrate, keys, apps, maintenance, client.

Each subcommand is a thin shell over the same composition root the server uses,
so what the CLI does is what the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import timedelta

from sso import logs
from sso.config import Settings


def _settings() -> Settings:
    return Settings()


def cmd_migrate(args: argparse.Namespace) -> int:
    from sso.storage import migrate

    settings = _settings()
    if settings.database.is_sqlite:
        settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.database.url.get_secret_value()
    if args.action == "down":
        migrate.downgrade(url, args.revision or "base")
    else:
        migrate.upgrade(url, args.revision or "head")
    print(f"database at revision {migrate.current(url)}")
    return 0


def _given_secret(args: argparse.Namespace) -> str | None:
    """`--secret`, or `--secret-file` (`-` = stdin; one trailing newline dropped)."""
    if args.secret_file is not None:
        if args.secret_file == "-":  # noqa: S105 (a file name, not a secret)
            raw = sys.stdin.read()
        else:
            try:
                with open(args.secret_file, encoding="utf-8") as handle:
                    raw = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise SystemExit(f"cannot read --secret-file: {exc}") from None
        secret: str | None = raw.removesuffix("\n").removesuffix("\r")
    else:
        secret = args.secret
    if secret is not None and (not secret or "\x00" in secret or len(secret) > 4096):
        raise SystemExit("the app secret must be 1-4096 characters")
    return secret


async def _apps(args: argparse.Namespace) -> int:
    # Only the database and the data key: registering an app needs no signing
    # keys, Redis or mail (a Job or a shell next to PostgreSQL has none of them).
    # A new app is in no cache, so nothing needs invalidating.
    from sso.security.secretbox import SecretBox, load_data_key
    from sso.storage.apps import SqlAppRepository
    from sso.storage.db import create_engine

    settings = _settings()
    if settings.database.is_sqlite:
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database)
    try:
        apps = SqlAppRepository(engine, SecretBox.from_data_key(load_data_key(settings)))
        if args.action == "list":
            for app in await apps.list():
                print(json.dumps({"app_id": app.id, "name": app.name}))
            return 0
        name = args.name or "demo"
        existing = await apps.get_by_name(name)
        if existing is not None:
            if args.action == "create":
                print(f"app {name!r} already exists (id {existing.id})", file=sys.stderr)
                return 1
            print(f"demo app: app_id={existing.id} (secret shown only when it was created)")
            return 0
        from sso.security.opaque import new_refresh_token

        given = _given_secret(args)
        if args.id is not None:  # keeps an app's identity (docs/migrating-from-go-sso.md)
            if not 0 < args.id < 2**31:
                print("--id must be between 1 and 2147483647", file=sys.stderr)
                return 2
            if await apps.get(args.id) is not None:
                print(f"app id {args.id} already exists", file=sys.stderr)
                return 1
        app = await apps.create(name, given or new_refresh_token(), app_id=args.id)
        if given is not None:  # the caller has the secret: never echo it
            print(json.dumps({"app_id": app.id, "name": app.name}))
            return 0
        print(json.dumps({"app_id": app.id, "name": app.name, "secret": app.secret}))
        print("store the secret now: it is never shown again", file=sys.stderr)
        return 0
    finally:
        await engine.dispose()


async def _maintenance(args: argparse.Namespace) -> int:
    from sso.app import Container, cleanup_once

    container = await Container.build(_settings())
    try:
        keep = timedelta(seconds=args.keep_revoked)
        removed = await cleanup_once(container, keep_revoked_for=keep)
        print(json.dumps({"removed_rows": removed}))
        return 0
    finally:
        await container.close()


def build_parser() -> argparse.ArgumentParser:
    from sso.cli import client, importer, serve

    parser = argparse.ArgumentParser(prog="sso", description="Single sign-on service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)

    p = sub.add_parser("migrate", help="apply database migrations (SSO_DATABASE__URL)")
    p.add_argument("action", nargs="?", choices=["up", "down"], default="up")
    p.add_argument("--revision", default=None)
    p.set_defaults(func=cmd_migrate)

    sub.add_parser("keys", help="manage the signing key set (docs/keys.md; `sso keys -h`)")
    p = sub.add_parser("apps", help="register applications (prints id and secret once)")
    p.add_argument("action", choices=["create", "list", "ensure-demo"])
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--id", type=int, default=None, help="create: keep this app id")
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--secret", default=None, help="create: keep this secret (visible in shell history)"
    )
    given.add_argument(
        "--secret-file", default=None, help="create: read the secret from a file, `-` = stdin"
    )
    p.set_defaults(func=lambda a: asyncio.run(_apps(a)))

    p = sub.add_parser(
        "maintenance", help="delete expired sessions, refresh tokens, MFA challenges and links"
    )
    p.add_argument("--keep-revoked", type=float, default=86400.0, help="seconds")
    p.set_defaults(func=lambda a: asyncio.run(_maintenance(a)))

    client.add_parser(sub)
    from sso.cli import client_account

    client_account.register(sub.choices["client"])  # verify, reset, history, outbox …
    from sso.cli import client_mfa

    client_mfa.register(sub.choices["client"])  # TOTP enrolment, mfa-login, backup codes
    from sso.cli import admin

    admin.add_parser(sub)  # `sso admin …`: the sso.v1.Admin API over gRPC
    importer.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["keys"]:
        from sso.security import keytool

        return keytool.main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    settings = _settings()
    level = settings.log_level if args.command == "serve" else "WARNING"
    logs.configure(level, settings=settings.logging)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
