"""A bare grpc.aio server: the throughput ceiling for cheap calls on this machine.

Why this module exists: ValidateToken and Refresh can never be faster than a
Python gRPC server that does nothing, run the same way the service runs. So
this server is started like `sso serve --workers N`: N processes of plain
asyncio + grpc.aio sharing one port through SO_REUSEPORT, with the service's
server options (message limits, keepalive, max concurrent RPCs) but no
interceptor and no work. Its only method is `grpc.health.v1.Health/Check`,
answering SERVING: the empty request and a two-byte reply make it the cheapest
possible unary call, and every gRPC tool already knows the message types.

    python -m bench.echo --port 50099 --workers 2

The parent starts the workers, forwards SIGTERM/SIGINT to them and exits when
they have.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HOST = "127.0.0.1"
SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class EchoHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Health/Check answering SERVING at once: no lookup, no allocation beyond the reply."""

    async def Check(self, request: Any, context: Any) -> Any:
        return SERVING


async def serve(port: int) -> None:
    server = grpc.aio.server(
        maximum_concurrent_rpcs=1000,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", 64 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(EchoHealth(), server)
    if server.add_insecure_port(f"{HOST}:{port}") == 0:
        raise OSError(f"cannot bind {HOST}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop(1.0)


def supervise(port: int, workers: int) -> int:
    """Start `workers` processes on the same port; forward signals; wait for all."""
    argv = [sys.executable, "-m", "bench.echo", "--port", str(port), "--worker"]
    children = [subprocess.Popen(argv, env=dict(os.environ)) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max((child.wait() for child in children), default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.workers <= 1:
        asyncio.run(serve(args.port))
        return 0
    return supervise(args.port, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
