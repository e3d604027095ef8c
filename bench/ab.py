"""Interleaved A/B of one hot path between two commits, on the same machine in one sitting.

Why this module exists: from one `make bench` run to the next, the ceilings on
this shared 2-core VM move by 5-15% (argon2 CPU per verify, echo per call),
more than many of the changes worth measuring. This tool compares two trees
directly: it checks the other commit out into a git worktree, then alternates
between the trees (`--pairs` times), each time starting a fresh rig (PostgreSQL,
Redis, `sso serve --workers N` with that tree first on PYTHONPATH), registering
users, and loading one method; per run it reports req/s, the
server's CPU per call (all threads of the workers, from /proc) and the CPU of
the workers' main threads (the event loops) per call.

    .venv/bin/python -m bench.ab --base 67ab49b --call Login
    .venv/bin/python -m bench.ab --base HEAD~1 --call ValidateToken --pairs 3
    .venv/bin/python -m bench.ab --base HEAD --call Refresh

Login and ValidateToken go through ghz, Refresh through chainload (one chain
of rotations per session); both are built once into the bench cache by
`bench.loadgen`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from bench import loadgen
from bench.procs import cpu_seconds
from bench.run import open_sessions, register_users, rig, write_logins
from sso_proto.sso.v1 import auth_pb2, sessions_pb2

ROOT = Path(__file__).resolve().parent.parent
CALLS = {
    # ghz call, in flight, connections
    "Login": ("sso.v1.Auth.Login", 8, 8),
    "ValidateToken": ("sso.v1.Auth.ValidateToken", 32, 16),
    "Refresh": ("/sso.v1.Auth/Refresh", 32, 16),  # chainload: one chain per session
}


class _WorkerCpu:
    """A `loadgen.Window`: the workers' CPU (all threads, and main threads) while it is open."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.server_s = self.loop_s = 0.0

    def _now(self) -> tuple[float, float]:
        return (
            cpu_seconds(self.pids, reaped=False),
            cpu_seconds(self.pids, reaped=False, main_thread=True),
        )

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        server, loop = self._now()
        self.server_s, self.loop_s = server - self._started[0], loop - self._started[1]


def one_run(
    tree: Path, call: str, workers: int, seconds: float, tools: loadgen.Tools
) -> dict[str, float]:
    """A fresh rig on `tree`, users (and sessions), one ghz (or chainload) run."""
    method, concurrency, connections = CALLS[call]
    paths = f"{tree}/service{os.pathsep}{tree}"
    with ExitStack() as stack:
        r = rig(stack, prefix="sso-ab-", extra_env={"PYTHONPATH": paths})
        service = stack.enter_context(r.service(workers))
        fixture = asyncio.run(register_users(r.target, r.app_id, 200))
        window = _WorkerCpu([p for p in service.pids if p != service.process.pid])  # type: ignore[union-attr]
        load: dict[str, Any] = {
            "target": r.target,
            "concurrency": concurrency,
            "connections": connections,
            "duration": seconds,
            "warmup": 2.0,
            "window": window,
        }
        if call == "Refresh":
            chains = r.tmp / "refresh-tokens.txt"
            sessions = asyncio.run(open_sessions(r.target, fixture, concurrency))
            chains.write_text("\n".join(sessions.refresh_tokens) + "\n")
            assert tools.chainload is not None
            result = loadgen.run_chainload(
                tools.chainload, method=method, tokens_file=chains, **load
            )
        else:
            if call == "Login":
                data = write_logins(r.tmp / "logins.json", fixture, "ab")
            else:
                sessions = asyncio.run(open_sessions(r.target, fixture, concurrency))
                data = r.tmp / "validate.json"
                data.write_text(json.dumps([{"token": t} for t in sessions.access_tokens]))
            protoset = loadgen.write_protoset(
                [auth_pb2.DESCRIPTOR, sessions_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR],
                r.tmp / "ab.protoset",
            )
            assert tools.ghz is not None
            result = loadgen.run_ghz(
                tools.ghz, call=method, protoset=protoset, data_file=data, **load
            )
    calls = max(result.count, 1)
    return {
        "rps": result.rps,
        "server_ms": window.server_s * 1000 / calls,
        "loop_ms": window.loop_s * 1000 / calls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--call", choices=sorted(CALLS), default="Login")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args(argv)
    tools = loadgen.prepare_tools()
    if tools.ghz is None or tools.chainload is None:
        print(
            "ghz and chainload are needed (Go toolchain): " + "; ".join(tools.notes),
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="sso-ab-tree-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
            check=True,
            capture_output=True,
        )
        try:
            print(f"{args.call}: {args.pairs} pairs, base {args.base} vs the working tree")
            print("| tree | req/s | server CPU ms/call | event-loop threads ms/call |")
            print("|---|---:|---:|---:|")
            for _ in range(args.pairs):
                for label, tree in ((args.base, base_tree), ("working tree", ROOT)):
                    m = one_run(tree, args.call, args.workers, args.seconds, tools)
                    print(
                        f"| {label} | {m['rps']:.1f} | {m['server_ms']:.3f} | {m['loop_ms']:.3f} |",
                        flush=True,
                    )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False,
                capture_output=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
