"""Shared pieces of the observability tests: the service on three backends, log capture,
reading every text a client sees, and the metric exposition hook.

Test modules import the fixtures from here (no conftest in this directory, so the
other observability tests keep theirs free). The in-process harness and the
forged-token builders live with the API and security tests; their directories go
on `sys.path` here so this directory also runs on its own.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

TESTS = Path(__file__).resolve().parent.parent
for _sub in ("api", "security"):
    if str(TESTS / _sub) not in sys.path:
        sys.path.append(str(TESTS / _sub))

from sso_harness import Running, make_settings, start, stop  # noqa: E402

from sso import logs  # noqa: E402
from sso.config import LogSettings  # noqa: E402

__all__ = [
    "Running",
    "captured",
    "client_texts",
    "log_lines",
    "make_settings",
    "metric_exposition",
    "obs_backend",
    "obs_server",
    "start",
    "stop",
]


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def obs_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(database URL, Redis URL or None), like `tests/api`'s `backend`."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url")), None
    redis = str(request.getfixturevalue("redis_server")) if "redis" in request.param else None
    return str(request.getfixturevalue("pg_url")), redis


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the service logs, through the handler `sso serve` installs, at DEBUG."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("DEBUG", stream, LogSettings(), replace=False)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def obs_server(
    tmp_path: Path, obs_backend: tuple[str, str | None], captured: io.StringIO
) -> AsyncIterator[Running]:
    """The service on each backend with logs captured from before it starts."""
    settings = make_settings(tmp_path, *obs_backend)
    # Every call writes its access line here (the default leaves out successful
    # lookups); test_request_ids checks that policy on its own.
    settings.server.access_log = "all"
    running = await start(settings)
    yield running
    await stop(running)


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The captured lines, each parsed (a line that is not one JSON object fails here)."""
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def _metadata_text(metadata: Any) -> str:
    parts = []
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            parts.append(f"{status.code} {status.message}")
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    parts.append(f"{info.reason} {info.domain} {dict(info.metadata)}")
        else:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            parts.append(f"{key}={text}")
    return "\n".join(parts)


async def client_texts(call: Any) -> tuple[Any, str, grpc.StatusCode]:
    """Await a unary call; return (response or None, every text the client saw, code).

    The texts are the status message, initial and trailing metadata (the
    `google.rpc.Status` details decoded), never the response body.
    """
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        texts = [
            error.details() or "",
            _metadata_text(error.initial_metadata()),
            _metadata_text(error.trailing_metadata()),
        ]
        return None, "\n".join(texts), error.code()
    texts = [
        _metadata_text(await call.initial_metadata()),
        _metadata_text(await call.trailing_metadata()),
    ]
    return response, "\n".join(texts), grpc.StatusCode.OK


async def metric_exposition(running: Running) -> str:
    """Metric names and labels as scraped: `/metrics` on the HTTP port, else the registry.

    The hook for metric labels in the canary test: whichever exposition exists
    (the metrics work serves `/metrics`; `prometheus_client.generate_latest()` is
    read in any case) is returned for scanning.
    """
    texts: list[str] = []
    try:
        import prometheus_client

        texts.append(prometheus_client.generate_latest().decode())
    except ImportError:  # pragma: no cover
        pass

    def fetch() -> str:
        url = f"{running.http}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
                return str(response.read().decode())
        except urllib.error.HTTPError:
            return ""

    texts.append(await asyncio.to_thread(fetch))
    return "\n".join(texts)
