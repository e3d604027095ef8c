"""Typed configuration from the environment (prefix `SSO_`, nested with `__`).

Every setting has a default that makes `sso serve` run embedded (SQLite, no
Redis, generated dev keys under `.sso/`). Secrets are `SecretStr` so they never
print; they can also come from files in a secrets directory
(`SSO_SECRETS_DIR`, one file per setting, as Kubernetes mounts Secrets).
Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path(".sso")


class DatabaseSettings(BaseModel):
    # SQLAlchemy URL: postgresql+asyncpg://user:pass@host/db or sqlite+aiosqlite:///path.
    # Unset: sso.db in `SSO_HOME`.
    url: SecretStr = SecretStr(f"sqlite+aiosqlite:///{DEFAULT_HOME}/sso.db")
    # Connections kept open per worker process (PostgreSQL); at least the calls a worker
    # keeps in flight, or overflow connections are opened and closed under load.
    pool_size: int = Field(20, ge=1, le=200)
    # Extra connections opened under burst load, closed when returned.
    max_overflow: int = Field(10, ge=0, le=200)
    # Seconds to wait for a free pooled connection before failing with UNAVAILABLE.
    pool_timeout: float = Field(5.0, gt=0)
    # Seconds after which a pooled connection is replaced (-1 = never).
    pool_recycle: int = Field(1800, ge=-1)
    # Test a pooled connection before use (3 extra round trips per checkout). Off: a
    # connection that died (database restart, failover) fails the one call that uses it
    # with UNAVAILABLE, and that disconnect error invalidates the whole pool, so the next
    # calls reconnect; clients retry UNAVAILABLE. On: that one failed call is avoided.
    pool_pre_ping: bool = False
    # PostgreSQL statement_timeout for every connection, in milliseconds (0 = off).
    statement_timeout_ms: int = Field(5000, ge=0)
    # Seconds to establish a new database connection.
    connect_timeout: float = Field(5.0, gt=0)
    # Log every SQL statement (debugging only).
    echo: bool = False
    # Streaming replicas for lag-tolerant reads (docs/architecture.md, read routing): a JSON
    # list of URLs like `url`, or one bare URL (the operator's `replica-dsn`). Empty = none.
    replica_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Seconds a replica may lag behind the primary and still serve reads; beyond, reads
    # go to the other replicas or the primary until it catches up.
    max_replica_lag: float = Field(5.0, gt=0)
    # Seconds between replica lag samples (each replica, one query).
    replica_check_interval: float = Field(1.0, gt=0, le=60)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_secret_value().startswith("sqlite")

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _replica_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return []
            return json.loads(value) if value.startswith("[") else [value]
        return value


class RedisSettings(BaseModel):
    # redis://[:password@]host:port/db; unset = in-process equivalents (embedded mode).
    url: SecretStr | None = None
    # Socket timeout for every command, seconds.
    timeout: float = Field(0.25, gt=0)
    # Prefix of every Redis key, so instances can share a Redis.
    key_prefix: str = "sso:"
    # Seconds an app's stored row (secrets encrypted) stays in Redis for the Login lookup;
    # changes are invalidated at once (pub/sub), this only bounds memory and Redis outages.
    app_cache_ttl: float = Field(300.0, gt=0)


class PasswordSettings(BaseModel):
    # argon2id memory per hash in KiB (OWASP: 19 MiB). Raising a parameter rehashes at next login.
    memory_kib: int = Field(19456, ge=8192)
    # argon2id iterations (OWASP: 2).
    time_cost: int = Field(2, ge=1)
    # argon2id lanes (OWASP: 1).
    parallelism: int = Field(1, ge=1)
    # Shortest accepted password, in code points.
    min_length: int = Field(12, ge=8, le=128)
    # Longest accepted password, in code points; checked before any hashing.
    max_length: int = Field(128, ge=64, le=1024)
    # Concurrent hashes (threads); each holds memory_kib of RAM.
    workers: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1, le=64)
    # Waiting hash requests beyond which callers get RESOURCE_EXHAUSTED.
    max_queue: int = Field(256, ge=0)
    # Niceness of the hashing threads (Linux, per thread): while logins saturate the
    # CPU, the event loop (health checks, token checks) is scheduled first. 0 = same priority.
    hasher_nice: int = Field(10, ge=0, le=19)


class TokenSettings(BaseModel):
    # The `iss` claim; also the base of jwks_uri in the discovery document.
    issuer: str = "http://127.0.0.1:8080"
    # Lifetime of an access token (JWT).
    access_ttl: timedelta = timedelta(minutes=5)
    # A refresh token unused for this long expires (idle timeout).
    refresh_idle_ttl: timedelta = timedelta(days=14)
    # A session ends this long after login, however active (absolute timeout).
    refresh_absolute_ttl: timedelta = timedelta(days=30)
    # Window in which the immediately previous refresh token still yields the same successor.
    refresh_grace: timedelta = Field(timedelta(seconds=10), le=timedelta(seconds=10))
    # Lifetime of the legacy auth.Auth HS256 token.
    legacy_ttl: timedelta = timedelta(hours=1)
    # How long a worker reuses an app (name, secret) it read, instead of reading it on every
    # Login. A changed app secret may take this long to be used by legacy Login and Logout
    # (0 = read every time). New apps are seen at once: only found apps are kept.
    app_cache_ttl: timedelta = Field(
        timedelta(seconds=30), ge=timedelta(0), le=timedelta(minutes=10)
    )
    # Clock skew tolerated on exp/nbf when verifying.
    leeway: timedelta = Field(timedelta(seconds=30), le=timedelta(seconds=60))
    # Access tokens a worker remembers after verifying them, so a relying app's repeated
    # ValidateToken skips the signature (audience, clock, key and revocation are still
    # checked on every call); about 2 kB each. 0 = verify every call in full.
    verified_cache_size: int = Field(4096, ge=0, le=1_000_000)


class KeySettings(BaseModel):
    # Key-set directory (docs/keys.md). Embedded mode generates one on first start.
    # Unset: keys/ in `SSO_HOME`.
    dir: Path = DEFAULT_HOME / "keys"
    # Algorithm of keys generated by `sso keys` and embedded mode.
    algorithm: Literal["RS256", "ES256", "EdDSA"] = "RS256"
    # Seconds between checks of the directory for changes.
    reload_interval: float = Field(5.0, gt=0)
    # Embedded mode only: create a key set in `dir` when there is none.
    generate_if_missing: bool = True


class ServerSettings(BaseModel):
    # Address the gRPC server binds (0.0.0.0 in a container).
    host: str = "127.0.0.1"
    # gRPC port (0 picks a free one).
    port: int = Field(50051, ge=0, le=65535)
    # Address of the HTTP listener (JWKS, discovery, /healthz, /readyz).
    http_host: str = "127.0.0.1"
    # HTTP port (0 picks a free one).
    http_port: int = Field(8080, ge=0, le=65535)
    # Turn the HTTP listener off (gRPC only).
    http_enabled: bool = True
    # Processes sharing the gRPC port via SO_REUSEPORT (`sso serve --workers`).
    workers: int = Field(1, ge=1, le=64)
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace: float = Field(20.0, ge=0)
    # Seconds between NOT_SERVING and closing listeners on SIGTERM (5 on Kubernetes).
    drain_delay: float = Field(0.0, ge=0, le=60)
    # Largest accepted request message, bytes.
    max_message_bytes: int = Field(64 * 1024, ge=1024)
    # RPCs served at once per process; beyond that callers get RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = Field(1000, ge=1)
    # Serve gRPC server reflection (grpcurl, grpcui).
    reflection: bool = True
    # Serve sso.v1.Admin only on this port, a second gRPC listener that a public Service
    # need not expose (0 picks a free one); unset = Admin shares `port` with the rest.
    admin_port: int | None = Field(None, ge=0, le=65535)
    # Address the admin listener binds; unset = `host`.
    admin_host: str | None = None
    # Seconds an RPC may run when the client sent no deadline, then DEADLINE_EXCEEDED (0 = no cap).
    default_deadline: float = Field(10.0, ge=0)
    # Which calls write an access line ("rpc" at INFO): all; writes = all but successful
    # read-only lookups (ValidateToken, GetJwks, IsAdmin, health Check: metrics count them);
    # errors = only calls that did not end OK.
    access_log: Literal["all", "writes", "errors"] = "writes"


class RateLimitSettings(BaseModel):
    """Per-email, per-IP and per-register request limits, counted in Redis (or in-process)."""

    # Master switch for request rate limits.
    enabled: bool = True
    # Login attempts allowed per client IP within `login_per_ip_window`.
    login_per_ip: int = Field(100, ge=1)
    # Window of the per-IP login limit (sliding).
    login_per_ip_window: timedelta = Field(timedelta(minutes=1), gt=timedelta(0))
    # Login attempts allowed per (normalised) email within `login_per_email_window`.
    login_per_email: int = Field(10, ge=1)
    # Window of the per-email login limit (sliding).
    login_per_email_window: timedelta = Field(timedelta(minutes=1), gt=timedelta(0))
    # Registrations allowed per client IP within `register_per_ip_window`.
    register_per_ip: int = Field(20, ge=1)
    # Window of the per-IP registration limit (sliding).
    register_per_ip_window: timedelta = Field(timedelta(minutes=1), gt=timedelta(0))
    # Peers (CIDRs, JSON list) whose x-forwarded-for names the client; others are the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Share of each limit one process enforces alone while Redis is unreachable (2/replicas).
    fallback_fraction: float = Field(1.0, gt=0, le=1)
    # Seconds Redis is left alone after a failure before one call probes it again.
    breaker_cooldown: float = Field(5.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]


class LockoutSettings(BaseModel):
    """Durable per-account failure counters and progressive lockout."""

    # Master switch for account lockout.
    enabled: bool = True
    # Consecutive failures at which the account is first locked.
    threshold: int = Field(5, ge=1)
    # Lock after `threshold` failures; doubles every further `threshold` failures.
    base_delay: timedelta = Field(timedelta(seconds=30), gt=timedelta(0))
    # Longest temporary lock.
    max_delay: timedelta = Field(timedelta(minutes=15), gt=timedelta(0))
    # Consecutive failures after which only a password reset or an admin unlock helps.
    hard_limit: int = Field(100, ge=1)
    # A failure this long after the previous one starts counting from 1 again.
    failure_reset: timedelta = Field(timedelta(hours=12), gt=timedelta(0))


class LogSettings(BaseModel):
    """Masking rules of the JSON logs (docs/operations.md, "Logs").

    Fixed at every level: password fields are removed; tokens, secrets,
    authorization metadata, cookies, TOTP material and DSN passwords are `***`;
    session ids appear only hashed. These settings tune the rest.
    """

    # Emails in logs are partially masked (`j***@example.com`); false writes them in clear.
    mask_emails: bool = True
    # Email rule per level, overriding mask_emails: partial, full (`***`) or clear;
    # JSON, e.g. {"DEBUG": "clear"}.
    email_by_level: dict[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        Literal["partial", "full", "clear"],
    ] = Field(default_factory=dict)
    # Client address rule per level: clear, or network (IPv4 /24, IPv6 /48);
    # JSON, e.g. {"INFO": "network"}.
    ip_by_level: dict[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], Literal["clear", "network"]
    ] = Field(default_factory=dict)
    # More field-name words whose values are always `***` (JSON list, e.g. ["ssn", "iban"]).
    extra_secret_fields: list[str] = Field(default_factory=list)
    # Final check: a run of [A-Za-z0-9_-] this long with a digit or mixed case is masked as a token.
    token_min_length: int = Field(32, ge=16, le=256)


class ObservabilitySettings(BaseModel):
    """Prometheus metrics and OpenTelemetry tracing."""

    # Serve Prometheus metrics on the HTTP listener's /metrics.
    metrics_enabled: bool = True
    # Trace gRPC calls when OTEL_* variables configure an exporter (OTEL_EXPORTER_OTLP_ENDPOINT).
    tracing_enabled: bool = True
    # Event-loop lag, seconds, above which the `liveness` health entry reports NOT_SERVING.
    max_loop_lag: float = Field(5.0, gt=0)
    # Redis down makes the pod unready (default: it keeps serving, rate limits per pod).
    readiness_requires_redis: bool = False


class AuditSettings(BaseModel):
    """The append-only `audit_events` table (every security event is also a log line)."""

    # Events not written to the audit table (JSON list of event names): routine successes
    # on hot paths, which would cost a synchronous INSERT per call. They still appear as
    # `sso.audit` log lines and in the metrics. Security decisions (login failures and
    # locks, token reuse, revocations, user_created, admin actions) belong in the table.
    skip_events: list[str] = Field(default_factory=lambda: ["authn_token_refreshed"])


class MailSettings(BaseModel):
    """Outgoing mail: verification and reset links, security notices (docs/account.md)."""

    # auto: outbox in embedded mode (SQLite, no Redis), smtp otherwise; smtp: send through
    # `host`; outbox: write each mail as a .eml file into `outbox_dir`; disabled: drop (logged).
    mode: Literal["auto", "smtp", "outbox", "disabled"] = "auto"
    # SMTP server (mode smtp).
    host: str = "localhost"
    # SMTP port: 587 for STARTTLS, 465 for implicit TLS.
    port: int = Field(587, ge=1, le=65535)
    # Transport security: starttls (required, not opportunistic), tls (implicit), or none
    # (plain text: only for a relay on the same host or a test server).
    security: Literal["starttls", "tls", "none"] = "starttls"
    # Verify the server's certificate (starttls and tls).
    validate_certs: bool = True
    # SMTP AUTH user name; unset = no authentication.
    username: str | None = None
    # SMTP AUTH password.
    password: SecretStr | None = None
    # Seconds for connecting and for each SMTP command.
    timeout: float = Field(10.0, gt=0)
    # Further attempts after a transient failure (connection error, timeout, 4xx reply).
    retries: int = Field(4, ge=0, le=20)
    # Seconds before the first retry; doubled for each next one (with jitter), capped below.
    backoff_initial: float = Field(2.0, gt=0)
    # Longest wait between two attempts, seconds.
    backoff_max: float = Field(300.0, gt=0)
    # Mails waiting to be sent per process; beyond that new mails are dropped (logged).
    queue_size: int = Field(1000, ge=1)
    # Mails sent at once per process.
    workers: int = Field(2, ge=1, le=32)
    # The From header of every mail.
    from_address: str = "SSO <no-reply@localhost>"
    # Base URL of the pages the links in mails open (…/account/verify-email?token=…).
    base_url: str = "http://127.0.0.1:8080"
    # Directory of the file outbox (mode outbox), created with mode 0700; unset = `home`/outbox.
    outbox_dir: Path | None = None


class AccountSettings(BaseModel):
    """Email verification, password reset and change, login history (docs/account.md)."""

    # What an unverified account may do: allow (log in; tokens say email_verified=false)
    # or refuse (Login answers FAILED_PRECONDITION EMAIL_NOT_VERIFIED after a correct password).
    unverified_login: Literal["allow", "refuse"] = "allow"
    # Lifetime of an email verification link.
    verification_ttl: timedelta = Field(timedelta(hours=24), gt=timedelta(0), le=timedelta(days=7))
    # Lifetime of a password reset link.
    reset_ttl: timedelta = Field(timedelta(minutes=30), gt=timedelta(0), le=timedelta(hours=2))
    # Reset mails sent per account per hour; further requests get the same answer, no mail.
    reset_mails_per_hour: int = Field(3, ge=1, le=100)
    # Verification mails (registration included) sent per account per hour.
    verification_mails_per_hour: int = Field(3, ge=1, le=100)
    # RequestPasswordReset and ResendVerification calls per client IP per window
    # (beyond: RESOURCE_EXHAUSTED, whatever the address).
    mail_requests_per_ip: int = Field(20, ge=1)
    # Window of the per-IP limit above (sliding).
    mail_requests_per_ip_window: timedelta = Field(timedelta(minutes=1), gt=timedelta(0))
    # Mail the user when a login comes from a device not seen before (not on the first login).
    notify_new_device: bool = True


class TwoFactorSettings(BaseModel):
    """TOTP second factor and backup codes (docs/two-factor.md)."""

    # The issuer shown by authenticator apps (otpauth:// URI label and `issuer` parameter).
    issuer: str = Field("SSO", min_length=1, max_length=64)
    # Lifetime of the MFA challenge Login returns instead of tokens (single use).
    challenge_ttl: timedelta = Field(
        timedelta(minutes=5), ge=timedelta(seconds=30), le=timedelta(minutes=10)
    )
    # Codes (TOTP or backup) tried per challenge; the next one is refused, even a right one.
    challenge_attempts: int = Field(5, ge=1, le=20)
    # Consecutive wrong TOTP codes per account after which TOTP codes are no longer checked
    # (no HMAC runs) until a login with a backup code clears the count (checklist C5).
    account_attempts: int = Field(100, ge=1, le=1000)
    # Time steps of 30 s accepted either side of now (RFC 6238 §5.2 allows at most 1).
    valid_window: int = Field(1, ge=0, le=1)
    # Lifetime of a started but unconfirmed enrolment.
    enrollment_ttl: timedelta = Field(
        timedelta(minutes=10), ge=timedelta(minutes=1), le=timedelta(hours=1)
    )
    # Backup codes per set (each 120 random bits, single use).
    backup_codes: int = Field(10, ge=5, le=20)


class AdminSettings(BaseModel):
    """The `sso.v1.Admin` API (docs/admin.md): admin credentials, allowed networks, rotation."""

    # Admin bearer tokens (JSON list; at least 32 characters each). Compared by SHA-256 digest
    # in constant time. Prefer `token_file` (a mounted Secret) to putting them in the env.
    tokens: list[SecretStr] = Field(default_factory=list)
    # A file with one admin token per line (the operator mounts a Secret with key `token`);
    # re-read when it changes, so a rotated Secret applies without a restart.
    token_file: Path | None = None
    # Accept the access token of a user whose admin flag is set (checked in the database
    # on every call, not taken from the token's claims).
    allow_admin_users: bool = True
    # Client networks (CIDRs, JSON list) that may call any Admin RPC; empty = any address.
    # The client address honours `ratelimit.trusted_proxies` (x-forwarded-for).
    allowed_cidrs: list[str] = Field(default_factory=list)
    # How long the previous app secret keeps working after RotateAppSecret (when the call
    # asks for no overlap of its own).
    secret_overlap: timedelta = Field(timedelta(hours=24), ge=timedelta(0), le=timedelta(days=30))

    @field_validator("allowed_cidrs")
    @classmethod
    def _admin_cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]

    @field_validator("tokens")
    @classmethod
    def _long_tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(t.get_secret_value().strip()) < 32 for t in value):
            raise ValueError("admin tokens must have at least 32 characters")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SSO_",
        env_nested_delimiter="__",
        extra="ignore",
        secrets_dir=os.environ.get("SSO_SECRETS_DIR") or None,
    )

    # Directory for embedded-mode state: the SQLite file, dev keys, data key and mail outbox
    # (each unless configured itself).
    home: Path = DEFAULT_HOME
    # Minimum level of the JSON logs.
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
    ratelimit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    logging: LogSettings = Field(default_factory=LogSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    two_factor: TwoFactorSettings = Field(default_factory=TwoFactorSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    account: AccountSettings = Field(default_factory=AccountSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _state_under_home(self) -> Settings:
        """A `home` other than `.sso` moves the SQLite file and the key set with the data
        key, unless they are configured themselves: all of the embedded state, or none."""
        if self.home != DEFAULT_HOME:
            if "url" not in self.database.model_fields_set:
                self.database.url = SecretStr(f"sqlite+aiosqlite:///{self.home}/sso.db")
            if "dir" not in self.keys.model_fields_set:
                self.keys.dir = self.home / "keys"
        return self

    @property
    def embedded(self) -> bool:
        """Embedded mode: SQLite and no Redis (what `make run` starts)."""
        return self.database.is_sqlite and self.redis.url is None
