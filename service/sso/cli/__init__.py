"""The `sso` command: serve, migrate, keys, apps, maintenance, client.

Each subcommand is a thin shell over the same composition root the server uses,
so what the CLI does is what the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

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


async def _apps(args: argparse.Namespace) -> int:
    from sso.app import Container

    container = await Container.build(_settings())
    try:
        apps = container.auth.apps
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

        app = await apps.create(name, new_refresh_token())
        print(json.dumps({"app_id": app.id, "name": app.name, "secret": app.secret}))
        print("store the secret now: it is never shown again", file=sys.stderr)
        return 0
    finally:
        await container.close()


async def _maintenance(args: argparse.Namespace) -> int:
    from sso.app import Container

    container = await Container.build(_settings())
    try:
        removed = await container.auth.sessions.cleanup(
            datetime.now(UTC), keep_revoked_for=timedelta(seconds=args.keep_revoked)
        )
        print(json.dumps({"removed_rows": removed}))
        return 0
    finally:
        await container.close()


def build_parser() -> argparse.ArgumentParser:
    from sso.cli import client, serve

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
    p.set_defaults(func=lambda a: asyncio.run(_apps(a)))

    p = sub.add_parser("maintenance", help="delete expired sessions and refresh tokens")
    p.add_argument("--keep-revoked", type=float, default=86400.0, help="seconds")
    p.set_defaults(func=lambda a: asyncio.run(_maintenance(a)))

    client.add_parser(sub)
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
