"""`sso serve`: one process, or N worker processes sharing the port (SO_REUSEPORT).

With `--workers N` the parent starts N copies of itself as children, forwards
SIGTERM/SIGINT to them and exits when they all have; the kernel spreads incoming
connections over the workers so a pod uses all its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

from sso.config import Settings

HINT = """
SSO service running (embedded mode: SQLite at {db}, keys in {keys}).
  gRPC  {host}:{port}     HTTP  http://{http_host}:{http_port}/.well-known/jwks.json

Try it from another terminal (the demo app id is printed above):
  .venv/bin/sso client register alice@example.com --password 'correct horse battery staple'
  .venv/bin/sso client login alice@example.com --password 'correct horse battery staple' --app-id 1
  .venv/bin/sso client validate
  .venv/bin/sso client refresh
  .venv/bin/sso client sessions
  .venv/bin/sso client logout
Stop with Ctrl-C.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gRPC service")
    p.add_argument("--workers", type=int, default=None, help="processes sharing the port")
    p.add_argument("--hint", action="store_true", help="print how to try the service")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    workers = args.workers or settings.server.workers
    if args.hint:
        s = settings.server
        print(
            HINT.format(
                db=settings.database.url.get_secret_value().split("///")[-1],
                keys=settings.keys.dir,
                host=s.host,
                port=s.port,
                http_host=s.http_host,
                http_port=s.http_port,
            ),
            flush=True,
        )
    if workers <= 1:
        from sso.app import run

        asyncio.run(run(settings))
        return 0
    return _supervise(workers)


def _supervise(workers: int) -> int:
    env = dict(os.environ, SSO_SERVER__WORKERS="1")
    children = [
        subprocess.Popen([sys.executable, "-m", "sso", "serve"], env=env) for _ in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
