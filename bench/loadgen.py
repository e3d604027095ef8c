"""Load generators: build them once, run them, read their results into one shape.

Why this module exists: a Python load generator eats most of a core and
understates a Python server by ~30% (docs/performance.md), so the benchmark
drives the service with compiled generators, built on first use into a cache
outside the repository (`~/.cache/sso-bench/bin`, or $SSO_BENCH_CACHE):

* ghz (github.com/bojand/ghz, `go install` of a pinned tag): Login,
  ValidateToken and the echo ceiling; fixed payloads, or an array of messages
  sent round-robin (`--data-file`).
* chainload (`bench/chainload`, Go, ~500 lines): Refresh, whose every request
  needs the token returned by the previous one, which no fixed payload can
  express; it also drives the echo ceiling so Refresh is compared with echo
  through the very same generator.

When Go cannot build them (no toolchain, no module proxy) the fallbacks are
h2load from Debian's nghttp2-client for fixed payloads (it cannot see
grpc-status, so gRPC errors are invisible to it) and `bench.pychain`, an
asyncio driver, for Refresh and its echo reference. The report says which
generator produced which row.

Every runner returns a `LoadResult`: successful calls per second over the
measured window, latency percentiles of successful calls, errors by status.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from bench.procs import children_cpu

GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz"
# v0.93.0 is what the proxy calls "latest" (later tags are not semver-sorted there);
# v0.120.0 is the newest release and builds with current Go.
GHZ_VERSION = "v0.120.0"
CHAINLOAD_SRC = Path(__file__).with_name("chainload")


def cache_dir() -> Path:
    return Path(os.environ.get("SSO_BENCH_CACHE", Path.home() / ".cache" / "sso-bench"))


def bin_dir() -> Path:
    return cache_dir() / "bin"


@dataclass
class LoadResult:
    """One measured scenario, whatever produced it."""

    generator: str
    rps: float  # successful calls per second over the measured window
    count: int  # successful calls in the window
    p50_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    concurrency: int = 0
    connections: int = 0
    duration_s: float = 0.0
    generator_cpu_s: float = 0.0  # CPU the generator used in the measured window
    notes: list[str] = field(default_factory=list)
    server_cpu_s: float | None = None  # when the runner measured the "server" CPU itself
    single_ms: float | None = None  # argon2 ceiling: one verify with nothing else running
    p95_ms: float | None = None
    methods: dict[str, Any] = field(default_factory=dict)  # chainload mixed mode: per method

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Tools:
    """Which generators are available, and why a fallback is in use."""

    ghz: Path | None = None
    chainload: Path | None = None
    h2load: Path | None = None
    notes: list[str] = field(default_factory=list)
    build_seconds: dict[str, float] = field(default_factory=dict)


class Window(Protocol):
    """Marks the measured part of a run (bench.procs.CpuWindow samples CPU there)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _run_measured(
    argv: list[str], *, timeout: float, window: Window | None, delay: float, measured: float
) -> tuple[int, str, str, float]:
    """Run a generator; `window` opens `delay` s in and closes when it exits.

    Returns (exit status, stdout, stderr, generator CPU seconds in the window). A
    generator that warms up internally (delay > 0) is charged its CPU pro rata.
    """
    timer = threading.Timer(delay, window.start) if window is not None else None
    before = children_cpu()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if timer is not None:
        if delay > 0:
            timer.start()
        else:
            timer.function()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    if timer is not None:
        timer.cancel()
        window.stop()  # type: ignore[union-attr]
    cpu = (children_cpu() - before) * (measured / (measured + delay))
    return process.returncode, out, err, cpu


# -- building -------------------------------------------------------------------------


def _go() -> str | None:
    return shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-modcacherw")
    env["CGO_ENABLED"] = "0"
    return env


def _link_plain_name(target: Path, name: str) -> None:
    """`bin/ghz` -> `bin/ghz-<version>`, for people who run the tool by hand."""
    link = target.parent / name
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)


def ensure_ghz(tools: Tools) -> None:
    target = bin_dir() / f"ghz-{GHZ_VERSION}"
    if target.exists():
        tools.ghz = target
        _link_plain_name(target, "ghz")
        return
    go = _go()
    if go is None:
        tools.notes.append("ghz not built: no Go toolchain on PATH")
        return
    with tempfile.TemporaryDirectory(prefix="ghz-build-") as gobin:
        env = _go_env() | {"GOBIN": gobin}
        print(f"building ghz {GHZ_VERSION} (once) into {target} ...", flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [go, "install", f"{GHZ_MODULE}@{GHZ_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        tools.build_seconds["ghz"] = time.monotonic() - started
        built = Path(gobin) / "ghz"
        if result.returncode != 0 or not built.exists():
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            tools.notes.append(f"ghz could not be built (`go install` failed): {tail}")
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built, target)
    tools.ghz = target
    _link_plain_name(target, "ghz")


def _source_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in [directory / "go.mod", directory / "go.sum", *sorted(directory.glob("*.go"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_chainload(tools: Tools) -> None:
    target = bin_dir() / f"chainload-{_source_digest(CHAINLOAD_SRC)}"
    if target.exists():
        tools.chainload = target
        return
    go = _go()
    if go is None:
        tools.notes.append("chainload not built: no Go toolchain on PATH")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", str(target), "."],
        cwd=CHAINLOAD_SRC,
        env=_go_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tools.build_seconds["chainload"] = time.monotonic() - started
    if result.returncode != 0 or not target.exists():
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        tools.notes.append(f"chainload could not be built: {tail}")
        return
    tools.chainload = target


def ensure_h2load(tools: Tools) -> None:
    found = shutil.which("h2load")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "nghttp2-client"],
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
        found = shutil.which("h2load")
    if found is None:
        tools.notes.append("h2load unavailable (apt-get install nghttp2-client)")
        return
    tools.h2load = Path(found)


def prepare_tools(prefer: str = "auto") -> Tools:
    """Build or find the generators; `prefer="h2load"` forces the fallbacks (for testing)."""
    tools = Tools()
    if prefer != "h2load":
        ensure_ghz(tools)
        ensure_chainload(tools)
    else:
        tools.notes.append("fallback generators forced with --loadgen h2load")
    if tools.ghz is None:
        ensure_h2load(tools)
    if tools.chainload is None:
        tools.notes.append("Refresh and its echo reference run through bench.pychain (Python)")
    return tools


# -- descriptors for ghz --------------------------------------------------------------


def write_protoset(files: Sequence[FileDescriptor], path: Path) -> Path:
    """A FileDescriptorSet of `files` and everything they import (for `ghz --protoset`).

    Built from the same generated modules the servers register, so ghz sees exactly
    the messages they serve, with no reflection round-trip and no proto include paths.
    """
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        ordered.append(fd)

    for fd in files:
        visit(fd)
    fds = descriptor_pb2.FileDescriptorSet()
    for fd in ordered:
        proto = fds.file.add()
        fd.CopyToProto(proto)
    path.write_bytes(fds.SerializeToString())
    return path


# -- running --------------------------------------------------------------------------


def _ms(nanoseconds: float) -> float:
    return nanoseconds / 1e6


def run_ghz(
    ghz: Path,
    *,
    target: str,
    call: str,
    protoset: Path,
    data: Any = None,
    data_file: Path | None = None,
    concurrency: int,
    connections: int,
    duration: float,
    warmup: float,
    window: Window | None = None,
    metadata: dict[str, str] | None = None,
) -> LoadResult:
    """A warm-up run, then one measured run of `duration` s (closed loop, `concurrency`).

    `call` is `package.Service.Method`. Only OK responses count as throughput;
    ghz's latency distribution covers OK responses (no --count-errors).
    """
    base = [
        str(ghz),
        "--insecure",
        f"--protoset={protoset}",
        f"--call={call}",
        f"--concurrency={concurrency}",
        f"--connections={connections}",
        "--duration-stop=ignore",
        "--timeout=10s",
        "--format=json",
    ]
    if metadata:
        base.append(f"--metadata={json.dumps(metadata)}")
    if data_file is not None:
        base.append(f"--data-file={data_file}")
    else:
        base.append(f"--data={json.dumps(data if data is not None else {})}")
    if warmup > 0:
        _ghz_report([*base, f"--duration={warmup}s", target], warmup, None)
    report, cpu = _ghz_report([*base, f"--duration={duration}s", target], duration, window)
    codes: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    ok = int(codes.pop("OK", 0))
    errors = {code: int(n) for code, n in codes.items() if n}
    total_s = float(report.get("total", 0)) / 1e9 or duration
    dist = {
        int(d["percentage"]): float(d["latency"]) for d in report.get("latencyDistribution") or []
    }
    return LoadResult(
        generator=f"ghz {GHZ_VERSION}",
        rps=ok / total_s,
        count=ok,
        p50_ms=_ms(dist[50]) if 50 in dist else None,
        p99_ms=_ms(dist[99]) if 99 in dist else None,
        p95_ms=_ms(dist[95]) if 95 in dist else None,
        errors=errors,
        concurrency=concurrency,
        connections=connections,
        duration_s=total_s,
        generator_cpu_s=cpu,
    )


def _ghz_report(
    argv: list[str], duration: float, window: Window | None
) -> tuple[dict[str, Any], float]:
    code, out, err, cpu = _run_measured(
        argv, timeout=duration + 60, window=window, delay=0.0, measured=duration
    )
    if code != 0 and not out.strip():
        raise RuntimeError(f"ghz failed ({code}): {err.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(out)
    return report, cpu


def _chain_result(generator: str, out: str, cpu: float, notes: list[str]) -> LoadResult:
    report = json.loads(out)
    p95 = report["latency_ms"].get("p95")  # a generator that does not measure it: unknown
    if report.get("chains_lost"):
        notes = [*notes, f"{report['chains_lost']} of {report['concurrency']} chains broke"]
    return LoadResult(
        generator=generator,
        rps=float(report["rps"]),
        count=int(report["count"]),
        p50_ms=float(report["latency_ms"]["p50"]),
        p99_ms=float(report["latency_ms"]["p99"]),
        p95_ms=None if p95 is None else float(p95),
        errors={k: int(v) for k, v in (report.get("errors") or {}).items()},
        concurrency=int(report["concurrency"]),
        connections=int(report["connections"]),
        duration_s=float(report["duration_s"]),
        generator_cpu_s=cpu,
        notes=notes,
        methods=dict(report.get("methods") or {}),
    )


def run_chainload(
    chainload: Path,
    *,
    target: str,
    method: str,
    concurrency: int,
    connections: int,
    duration: float,
    warmup: float,
    payload: bytes = b"",
    tokens_file: Path | None = None,
    window: Window | None = None,
) -> LoadResult:
    """chainload in unary mode (fixed payload) or refresh mode (one chain per token)."""
    argv = [
        str(chainload),
        f"-target={target}",
        f"-method={method}",
        f"-c={concurrency}",
        f"-connections={connections}",
        f"-warmup={warmup}s",
        f"-duration={duration}s",
    ]
    if tokens_file is not None:
        argv += ["-mode=refresh", f"-tokens={tokens_file}"]
    else:
        argv += ["-mode=unary", f"-payload-hex={payload.hex()}"]
    code, out, err, cpu = _run_measured(
        argv, timeout=warmup + duration + 60, window=window, delay=warmup, measured=duration
    )
    if code != 0:
        raise RuntimeError(f"chainload failed ({code}): {err.strip()}")
    return _chain_result("chainload (Go)", out, cpu, [])


def run_mixed(
    chainload: Path,
    *,
    target: str,
    accounts_file: Path,
    concurrency: int,
    connections: int,
    duration: float,
    warmup: float,
    refreshes: int = 20,
    validations: int = 200,
    window: Window | None = None,
) -> LoadResult:
    """chainload's mixed mode: Login, then `validations` ValidateToken and `refreshes`
    Refresh calls per session, carrying the tokens (`accounts_file`: email, password,
    app_id per line, tab-separated). Throughput counts every successful call."""
    argv = [
        str(chainload),
        "-mode=mixed",
        f"-target={target}",
        f"-users={accounts_file}",
        f"-refreshes={refreshes}",
        f"-validations={validations}",
        f"-c={concurrency}",
        f"-connections={connections}",
        f"-warmup={warmup}s",
        f"-duration={duration}s",
    ]
    code, out, err, cpu = _run_measured(
        argv, timeout=warmup + duration + 60, window=window, delay=warmup, measured=duration
    )
    if code != 0:
        raise RuntimeError(f"chainload failed ({code}): {err.strip()}")
    return _chain_result("chainload (Go, mixed)", out, cpu, [])


def run_pychain(
    *,
    target: str,
    method: str,
    concurrency: int,
    connections: int,
    duration: float,
    warmup: float,
    payload: bytes = b"",
    tokens_file: Path | None = None,
    window: Window | None = None,
) -> LoadResult:
    """The Python fallback of chainload (same arguments, same JSON)."""
    argv = [
        sys.executable,
        "-m",
        "bench.pychain",
        f"--target={target}",
        f"--method={method}",
        f"--concurrency={concurrency}",
        f"--connections={connections}",
        f"--warmup={warmup}",
        f"--duration={duration}",
    ]
    argv += [f"--tokens={tokens_file}"] if tokens_file else [f"--payload-hex={payload.hex()}"]
    code, out, err, cpu = _run_measured(
        argv, timeout=warmup + duration + 60, window=window, delay=warmup, measured=duration
    )
    if code != 0:
        raise RuntimeError(f"pychain failed ({code}): {err.strip()}")
    note = "Python generator: it shares the cores with the server and understates it"
    return _chain_result("pychain (Python)", out, cpu, [note])


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed), the body of a unary call."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def run_h2load(
    h2load: Path,
    *,
    target: str,
    call: str,
    payload: bytes,
    concurrency: int,
    connections: int,
    duration: float,
    warmup: float,
    window: Window | None = None,
) -> LoadResult:
    """h2load posting one prepared gRPC frame; latencies from its per-request log.

    h2load speaks HTTP/2, not gRPC: it sees the HTTP status (200 for every gRPC
    reply) but not the grpc-status trailer, so gRPC-level errors are not counted.
    """
    service, method = call.rsplit(".", 1)
    streams = max(1, concurrency // max(1, connections))
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(grpc_frame(payload))
        log = Path(tmp) / "requests.tsv"
        argv = [
            str(h2load),
            f"http://{target}/{service}/{method}",
            "-d",
            str(body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-c",
            str(connections),
            "-m",
            str(streams),
            "-t",
            "1",
            f"--duration={int(duration)}",
            f"--warm-up-time={int(warmup)}",
            f"--log-file={log}",
        ]
        code, _out, err, cpu = _run_measured(
            argv, timeout=warmup + duration + 60, window=window, delay=warmup, measured=duration
        )
        if code != 0:
            raise RuntimeError(f"h2load failed ({code}): {err.strip()}")
        # Columns: start (µs since the epoch), HTTP status, µs to the end of the response.
        rows = [line.split("\t") for line in log.read_text().splitlines()]
        rows = [r for r in rows if len(r) >= 3]
        # The log may include the warm-up: keep what started in the measured window.
        first = min((int(r[0]) for r in rows), default=0)
        rows = [r for r in rows if int(r[0]) >= first + warmup * 1e6]
        latencies = [int(r[2]) / 1000 for r in rows if r[1] == "200"]
        http_errors = sum(1 for r in rows if r[1] != "200")
    latencies.sort()

    def pct(p: float) -> float | None:
        return latencies[int(p / 100 * (len(latencies) - 1))] if latencies else None

    return LoadResult(
        generator="h2load (nghttp2)",
        rps=len(latencies) / duration,
        count=len(latencies),
        p50_ms=pct(50),
        p99_ms=pct(99),
        errors={"HTTP_NOT_200": http_errors} if http_errors else {},
        concurrency=streams * connections,
        connections=connections,
        duration_s=duration,
        generator_cpu_s=cpu,
        notes=["h2load cannot see grpc-status: gRPC errors would count as successes"],
    )
