"""Python fallback of `bench/chainload`: chained Refresh calls, or a fixed unary payload.

Why this module exists: when Go cannot build chainload, Refresh still needs a
generator that carries each returned refresh token into the next request. This
one runs `concurrency` chains on `connections` grpc.aio channels in one process
and prints the same JSON as chainload. A Python generator shares the cores with
the server and understates it (docs/performance.md), so `bench.run` drives the
echo reference through this same module whenever it is used for Refresh: the
ratio then compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc

from sso_proto.sso.v1 import auth_pb2


def _identity(raw: bytes) -> bytes:
    return raw


async def drive(args: argparse.Namespace, tokens: list[str]) -> dict[str, object]:
    concurrency = len(tokens) if tokens else args.concurrency
    payload = bytes.fromhex(args.payload_hex)
    channels = [
        grpc.aio.insecure_channel(args.target) for _ in range(min(args.connections, concurrency))
    ]
    calls = [
        ch.unary_unary(args.method, request_serializer=_identity, response_deserializer=_identity)
        for ch in channels
    ]
    start = time.monotonic()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.duration
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lost = 0

    async def chain(index: int) -> None:
        nonlocal lost
        call = calls[index % len(calls)]
        token = tokens[index] if tokens else ""
        while (t0 := time.monotonic()) < stop_at:
            request = (
                auth_pb2.RefreshRequest(refresh_token=token).SerializeToString()
                if tokens
                else payload
            )
            try:
                reply = await call(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                if t0 >= measure_from:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                if tokens:
                    lost += 1
                    return
                continue
            t1 = time.monotonic()
            if tokens:
                token = auth_pb2.RefreshResponse.FromString(reply).tokens.refresh_token
            if t0 >= measure_from and t1 < stop_at:
                latencies.append((t1 - t0) * 1000)

    await asyncio.gather(*(chain(i) for i in range(concurrency)))
    for ch in channels:
        await ch.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[int(p / 100 * (len(latencies) - 1))] if latencies else 0.0

    return {
        "mode": "refresh" if tokens else "unary",
        "method": args.method,
        "concurrency": concurrency,
        "connections": len(channels),
        "duration_s": args.duration,
        "count": len(latencies),
        "rps": len(latencies) / args.duration,
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p95": pct(95),
            "p99": pct(99),
            "max": pct(100),
        },
        "errors": errors,
        "chains_lost": lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pychain", description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--method", default="/grpc.health.v1.Health/Check")
    parser.add_argument("--payload-hex", default="")
    parser.add_argument("--tokens", default="")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    tokens = Path(args.tokens).read_text().split() if args.tokens else []
    print(json.dumps(asyncio.run(drive(args, tokens))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
