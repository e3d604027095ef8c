"""Typed configuration from the environment (prefix `SSO_`, nested with `__`).

Every setting has a default that makes `sso serve` run embedded (SQLite, no
Redis, generated dev keys under `.sso/`). Secrets are `SecretStr` so they never
print; they can also come from files in a secrets directory
(`SSO_SECRETS_DIR`, one file per setting, as Kubernetes mounts Secrets).
Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".sso")


class DatabaseSettings(BaseModel):
    # SQLAlchemy URL: postgresql+asyncpg://user:pass@host/db or sqlite+aiosqlite:///path.
    url: SecretStr = SecretStr(f"sqlite+aiosqlite:///{DEFAULT_HOME}/sso.db")
    replica_urls: list[SecretStr] = Field(default_factory=list)
    pool_size: int = Field(10, ge=1, le=200)
    max_overflow: int = Field(10, ge=0, le=200)
    # Seconds to wait for a free pooled connection before failing with UNAVAILABLE.
    pool_timeout: float = Field(5.0, gt=0)
    pool_recycle: int = Field(1800, ge=-1)
    pool_pre_ping: bool = True
    # PostgreSQL statement_timeout for every connection, in milliseconds (0 = off).
    statement_timeout_ms: int = Field(5000, ge=0)
    connect_timeout: float = Field(5.0, gt=0)
    echo: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_secret_value().startswith("sqlite")


class RedisSettings(BaseModel):
    # redis://[:password@]host:port/db; unset = in-process equivalents (embedded mode).
    url: SecretStr | None = None
    # Socket timeout for every command, seconds.
    timeout: float = Field(0.25, gt=0)
    key_prefix: str = "sso:"


class PasswordSettings(BaseModel):
    # argon2id parameters (OWASP: m=19 MiB, t=2, p=1).
    memory_kib: int = Field(19456, ge=8192)
    time_cost: int = Field(2, ge=1)
    parallelism: int = Field(1, ge=1)
    min_length: int = Field(12, ge=8, le=128)
    max_length: int = Field(128, ge=64, le=1024)
    # Concurrent hashes (threads); each holds memory_kib of RAM.
    workers: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1, le=64)
    # Waiting hash requests beyond which callers get RESOURCE_EXHAUSTED.
    max_queue: int = Field(256, ge=0)


class TokenSettings(BaseModel):
    issuer: str = "http://127.0.0.1:8080"
    access_ttl: timedelta = timedelta(minutes=5)
    refresh_idle_ttl: timedelta = timedelta(days=14)
    refresh_absolute_ttl: timedelta = timedelta(days=30)
    # Window in which the immediately previous refresh token still yields the same successor.
    refresh_grace: timedelta = Field(timedelta(seconds=10), le=timedelta(seconds=10))
    # Lifetime of the legacy auth.Auth HS256 token.
    legacy_ttl: timedelta = timedelta(hours=1)
    # Clock skew tolerated on exp/nbf when verifying.
    leeway: timedelta = Field(timedelta(seconds=30), le=timedelta(seconds=60))


class KeySettings(BaseModel):
    # Key-set directory (docs/keys.md). Embedded mode generates one on first start.
    dir: Path = DEFAULT_HOME / "keys"
    algorithm: Literal["RS256", "ES256", "EdDSA"] = "RS256"
    # Seconds between checks of the directory for changes.
    reload_interval: float = Field(5.0, gt=0)
    generate_if_missing: bool = True


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    # 0 disables the HTTP listener.
    http_port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace: float = Field(20.0, ge=0)
    # Largest accepted request message, bytes.
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    max_concurrent_rpcs: int = Field(1000, ge=1)
    reflection: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SSO_",
        env_nested_delimiter="__",
        extra="ignore",
        secrets_dir=os.environ.get("SSO_SECRETS_DIR") or None,
    )

    home: Path = DEFAULT_HOME
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # 32 bytes, base64url: encrypts app secrets at rest. Embedded mode generates home/data.key.
    data_key: SecretStr | None = None
    # Check that an email's domain accepts mail (DNS MX) at registration.
    email_check_deliverability: bool = False
    # Seconds between automatic cleanups of expired sessions (embedded mode); 0 = off.
    cleanup_interval: float = Field(600.0, ge=0)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def embedded(self) -> bool:
        """Embedded mode: SQLite and no Redis (what `make run` starts)."""
        return self.database.is_sqlite and self.redis.url is None
