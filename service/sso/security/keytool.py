"""`sso keys ...`: the command-line face of the key-set functions (docs/keys.md).

Why this module exists: people and Jobs need to create, rotate and inspect a
key-set directory without writing Python, and `sso.cli` should only have to
delegate (`keytool.main(argv)`); `python -m sso.security.keytool` works too.
Defaults come from the service settings (`SSO_KEYS__DIR`, `SSO_KEYS__ALGORITHM`,
`SSO_TOKENS__*`). Nothing here ever prints private key material.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from sso.config import Settings
from sso.security import keys
from sso.security.keys import Algorithm, KeySet, KeySetError
from sso.security.keyset import FORMAT_VERSION
from sso.security.secretbox import generate_data_key

__all__ = ["default_retire_after", "main"]


def default_retire_after(settings: Settings) -> timedelta:
    """How long a retired key stays published: the last token it signed must expire.

    A pod may keep signing with the old key until it reloads (`reload_interval`),
    and that token lives `access_ttl`, plus the verifiers' `leeway`; one more
    minute of margin.
    """
    reload = timedelta(seconds=settings.keys.reload_interval)
    return settings.tokens.access_ttl + settings.tokens.leeway + reload + timedelta(minutes=1)


def _describe(keyset: KeySet) -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "keys": [m.to_json() for m in keyset.metas]}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, help="key-set directory (default: SSO_KEYS__DIR)")
    common.add_argument(
        "--alg", choices=get_args(Algorithm), help="algorithm (default: SSO_KEYS__ALGORITHM)"
    )
    parser = argparse.ArgumentParser(prog="sso keys", description="Manage the signing-key set.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("ensure", "create a set with one active key unless one exists"),
        ("add-next", "publish a next key (no-op if there is one)"),
        ("show", "print keyset.json (no private material)"),
        ("jwks", "print the public JWK Set"),
    ):
        commands.add_parser(name, parents=[common], help=text)
    rotate = commands.add_parser(
        "rotate", parents=[common], help="next -> active -> retired; new next"
    )
    rotate.add_argument(
        "--retire-after",
        type=float,
        metavar="SECONDS",
        help="drop retired keys this long after retirement (default: TTL + leeway + reload + 60)",
    )
    commands.add_parser("data-key", help="print a new random data key for SSO_DATA_KEY")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "data-key":
        print(generate_data_key())
        return 0
    settings = Settings()
    directory: Path = args.dir or settings.keys.dir
    alg: Algorithm = args.alg or settings.keys.algorithm
    try:
        if args.command == "ensure":
            created = keys.ensure(directory, alg)
            print(f"{'created' if created else 'kept'} key set in {directory}", file=sys.stderr)
        elif args.command == "add-next":
            meta = keys.add_next(directory, alg)
            print(f"next key {meta.kid} ({meta.alg})", file=sys.stderr)
        elif args.command == "rotate":
            retire_after = (
                timedelta(seconds=args.retire_after)
                if args.retire_after is not None
                else default_retire_after(settings)
            )
            rotated = keys.rotate(directory, alg, retire_after=retire_after)
            print(f"active key {rotated.active.kid} ({rotated.active.alg})", file=sys.stderr)
        elif args.command == "show":
            print(json.dumps(_describe(KeySet.load(directory)), indent=2))
        elif args.command == "jwks":
            print(json.dumps(KeySet.load(directory).jwks, indent=2))
    except KeySetError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
