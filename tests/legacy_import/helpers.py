"""Running `sso import legacy-sqlite` as the operator does, and dumping tables to compare."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from sso.config import Settings

REPO = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of an import Job: the database URL and the data key, nothing else."""
    assert settings.data_key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSO_")}
    env.update(
        SSO_DATABASE__URL=settings.database.url.get_secret_value(),
        SSO_DATA_KEY=settings.data_key.get_secret_value(),
        SSO_HOME=str(settings.home),
    )
    return env


def run_sso(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sso", *args],
        env=cli_env(settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )


async def run_import(settings: Settings, source: Path, *extra: str) -> dict[str, Any]:
    """`sso import legacy-sqlite SOURCE --json`: the parsed document (exit 0 asserted)."""
    proc = await asyncio.to_thread(
        run_sso, settings, "import", "legacy-sqlite", str(source), "--json", *extra
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["format"] == "sso.legacy-import/v1" and doc["ok"] is True
    return doc


async def dump(db_url: str, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row and column of `tables`, ordered by id: the before/after comparison."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return {
                t: [tuple(r) for r in await conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))]  # noqa: S608
                for t in tables
            }
    finally:
        await engine.dispose()


async def scalar(db_url: str, sql: str, **params: Any) -> Any:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()
    finally:
        await engine.dispose()


async def metric(http: str, name: str) -> float | None:
    def fetch() -> str:
        with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:  # noqa: S310
            return str(response.read().decode())

    body = await asyncio.to_thread(fetch)
    match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    return None if match is None else float(match.group(1))


async def metric_becomes(http: str, name: str, value: float, timeout: float = 20.0) -> float:
    """Poll /metrics until `name` equals `value` (the gauge refreshes shortly after a login)."""
    deadline = time.monotonic() + timeout
    seen = await metric(http, name)
    while seen != value and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        seen = await metric(http, name)
    return seen if seen is not None else -1.0
