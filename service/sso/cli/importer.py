"""`sso import legacy-sqlite PATH`: move the Go SSO service's users and apps into ours.

Why this module exists: teams switching from the Go service keep their user ids,
app ids, app secrets and passwords (issue 9; docs/migrating-from-go-sso.md).
This is the command an operator runs by hand or as a Kubernetes Job: it reads
the old SQLite file read-only, imports in one transaction (`--dry-run` writes
nothing), and prints a human summary or, with `--json`, one JSON document in the
stable `sso.legacy-import/v1` format the operator records in status.

Exit codes: 0 when the import ran (skipped rows and conflicts included: they are
in the report), 1 when it could not run (unreadable source, database not at the
current migration, database error; nothing was written), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sso.config import Settings
from sso.domain.legacy_import import RowNote
from sso.errors import SSOError

if TYPE_CHECKING:
    from sso.storage.legacy_import import ImportOutcome

FORMAT = "sso.legacy-import/v1"
DEFAULT_REPORT_LIMIT = 1000


def add_parser(sub: Any) -> None:
    p = sub.add_parser("import", help="import users and apps from another SSO service")
    kinds = p.add_subparsers(dest="kind", required=True)
    q = kinds.add_parser(
        "legacy-sqlite",
        help="the Go SSO service's SQLite database (read-only; docs/migrating-from-go-sso.md)",
    )
    q.add_argument("path", type=Path, help="the Go service's SQLite file")
    q.add_argument("--dry-run", action="store_true", help="report what would happen, write nothing")
    q.add_argument("--json", action="store_true", help=f"print one {FORMAT} JSON document")
    q.add_argument(
        "--report-limit",
        type=int,
        default=DEFAULT_REPORT_LIMIT,
        help="rows listed per list (skipped, conflicts, updated); counts are always complete",
    )
    q.set_defaults(func=lambda a: asyncio.run(run(a)))


def _notes(notes: list[RowNote], limit: int) -> list[dict[str, Any]]:
    return [
        {"table": n.table, "id": n.id, "reason": n.reason, "detail": n.detail}
        for n in notes[: max(limit, 0)]
    ]


def report(outcome: ImportOutcome, source: str, limit: int) -> dict[str, Any]:
    """The `sso.legacy-import/v1` document (documented in docs/migrating-from-go-sso.md)."""
    plan = outcome.plan

    def counts(table: str, read: int, imported: int, unchanged: int) -> dict[str, int]:
        return {
            "read": read,
            "imported": imported,
            "unchanged": unchanged,
            "updated": plan.count(plan.updated, table),
            "conflicts": plan.count(plan.conflicts, table),
            "skipped": plan.count(plan.skipped, table),
        }

    lists = (plan.skipped, plan.conflicts, plan.updated)
    return {
        "format": FORMAT,
        "ok": True,
        "dry_run": outcome.dry_run,
        "source": source,
        "users": counts("users", plan.users_read, len(plan.new_users), plan.users_unchanged),
        "apps": counts("apps", plan.apps_read, len(plan.new_apps), plan.apps_unchanged),
        "next_ids": {"users": outcome.next_user_id, "apps": outcome.next_app_id},
        "skipped": _notes(plan.skipped, limit),
        "conflicts": _notes(plan.conflicts, limit),
        "updated": _notes(plan.updated, limit),
        "truncated": any(len(notes) > limit for notes in lists),
        "seconds": round(outcome.seconds, 3),
    }


def _print_human(doc: dict[str, Any]) -> None:
    head = "dry run, nothing written" if doc["dry_run"] else "committed"
    print(f"legacy import from {doc['source']} ({head}, {doc['seconds']:.2f} s)")
    for table in ("users", "apps"):
        c = doc[table]
        print(
            f"  {table:<5} read {c['read']}, imported {c['imported']}, unchanged "
            f"{c['unchanged']}, updated {c['updated']}, conflicts {c['conflicts']}, "
            f"skipped {c['skipped']}"
        )
    print(f"  next ids: users {doc['next_ids']['users']}, apps {doc['next_ids']['apps']}")
    for title in ("skipped", "conflicts", "updated"):
        if doc[title]:
            print(f"{title}:")
            for n in doc[title]:
                detail = f" ({n['detail']})" if n["detail"] else ""
                print(f"  {n['table']} id {n['id']}: {n['reason']}{detail}")
    if doc["truncated"]:
        print("(lists truncated: raise --report-limit to see every row)")


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        doc = {"format": FORMAT, "ok": False, "dry_run": args.dry_run, "error": message}
        print(json.dumps(doc))
    else:
        print(f"legacy import failed, nothing was written: {message}", file=sys.stderr)
    return 1


async def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from sso.domain.events import SecurityEvent
    from sso.security.secretbox import SecretBox, load_data_key
    from sso.storage import migrate
    from sso.storage.audit import SqlAuditSink
    from sso.storage.db import create_engine
    from sso.storage.legacy_import import LegacyImporter, read_legacy

    s = settings or Settings()
    url = s.database.url.get_secret_value()
    try:
        if s.database.is_sqlite:
            s.home.mkdir(parents=True, exist_ok=True)
        at, head = await migrate.acurrent(url), migrate.head()
        if at != head:
            return _fail(args, f"our database is at revision {at}, not {head}: run `sso migrate`")
        snapshot = await read_legacy(args.path)
        cipher = SecretBox.from_data_key(load_data_key(s))
    except SSOError as exc:
        return _fail(args, str(exc))
    engine = create_engine(s.database)
    try:
        outcome = await LegacyImporter(engine, cipher).run(snapshot, dry_run=args.dry_run)
        doc = report(outcome, str(args.path), args.report_limit)
        if not args.dry_run and outcome.plan.writes:  # a run that changed nothing leaves no row
            await SqlAuditSink(engine).emit(
                SecurityEvent.AUTHZ_ADMIN,
                target="legacy_import",
                details={
                    "action": "legacy_import",
                    "users_imported": doc["users"]["imported"],
                    "apps_imported": doc["apps"]["imported"],
                    "users_updated": doc["users"]["updated"],
                    "conflicts": len(outcome.plan.conflicts),
                    "skipped": len(outcome.plan.skipped),
                },
            )
    except SSOError as exc:
        return _fail(args, f"{exc} (a concurrent change or the database; run it again)")
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps(doc))
    else:
        _print_human(doc)
    return 0
