"""`sso serve`: one process, or N worker processes sharing the port (SO_REUSEPORT).

With `--workers N` the parent starts N copies of itself as children, forwards
SIGTERM/SIGINT to them and exits when they all have; the kernel spreads incoming
connections over the workers so a pod uses all its cores.

Metrics with workers: the parent points `PROMETHEUS_MULTIPROC_DIR` of every
child at one directory (a fresh temporary one, removed at exit, unless the
variable is already set: then that directory, emptied first), so whichever
worker answers `/metrics` reports the sum over all of them. When a worker
exits its live gauges (in-flight calls, pool connections) are dropped
(`mark_process_dead`); its counters stay, as Prometheus expects. Other `sso`
commands run with the variable set write their (idle) values there too; the
next `sso serve --workers` start clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sso.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
        if os.environ.get(MULTIPROC_ENV):  # set by our supervisor, or by the operator
            Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)
        from sso.app import run

        asyncio.run(run(settings))
        return 0
    return _supervise(workers)


def _metrics_dir() -> tuple[Path, bool]:
    """The shared multiprocess metrics directory, and whether we created it (and remove it)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's values would be summed in
            stale.unlink(missing_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="sso-metrics-")), True


def _supervise(workers: int) -> int:
    from prometheus_client import multiprocess

    metrics_dir, owned = _metrics_dir()
    env = dict(os.environ, SSO_SERVER__WORKERS="1", **{MULTIPROC_ENV: str(metrics_dir)})
    children = {
        child.pid: child
        for child in (
            subprocess.Popen([sys.executable, "-m", "sso", "serve"], env=env)
            for _ in range(workers)
        )
    }

    def forward(signum: int, _frame: object) -> None:
        for child in children.values():
            if child.returncode is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes: list[int] = []
    try:
        running = set(children)
        while running:
            pid, status = os.wait()
            child = children.get(pid)
            if child is None:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            codes.append(child.returncode)
            running.discard(pid)
            multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes, default=0)
