"""Composition root: settings → engine, Redis, hasher, keys → domain services → server.

The only module that knows every concrete adapter. `Container` owns the
resources and closes them; `run()` is what `sso serve` executes in each worker
process: start, wait for SIGTERM/SIGINT, drain, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context

from sso.api.account_lifecycle import Lifecycle
from sso.api.context import trust_proxies
from sso.api.metrics import LegacyHashGauge, MeteredLimiter, MetricsSink, record_replicas
from sso.api.server import ServiceBundle, SSOServer
from sso.api.tracing import setup_tracing, tracer_of
from sso.config import Settings
from sso.domain.account import AccountPolicy, AccountService, Background
from sso.domain.admin import AdminService, register_export_sections
from sso.domain.auth import AuthService, TokenPolicy
from sso.domain.events import EventSink, FanOut, LoggingSink, SecurityEvent
from sso.domain.export import UserExport
from sso.domain.guard import LoginGuard
from sso.domain.history import HistoryService
from sso.domain.limits import LockoutPolicy, RateLimiter, RequestLimits
from sso.domain.ports import Denylist
from sso.domain.sessions import SessionService
from sso.domain.two_factor import TwoFactorPolicy, TwoFactorService
from sso.mail.dispatcher import MailDispatcher
from sso.security import keys as keyset
from sso.security import legacy, opaque
from sso.security.passwords import Argon2PasswordHasher
from sso.security.policy import PasswordPolicy
from sso.security.secretbox import SecretBox, load_data_key
from sso.security.tokens import JwtAccessTokens
from sso.security.totp import TotpAuthenticator
from sso.storage.account_tokens import SqlAccountTokens
from sso.storage.admin import SqlAdminStore
from sso.storage.appcache import AppInvalidations, RedisAppCache
from sso.storage.apps import SqlAppRepository
from sso.storage.audit import SqlAuditSink
from sso.storage.db import Database
from sso.storage.denylist import MemoryDenylist, ReplicatedDenylist
from sso.storage.history import SqlLoginHistory
from sso.storage.instrumentation import instrument_engine, instrument_redis
from sso.storage.legacy_import import count_bcrypt_hashes
from sso.storage.ratelimit import LocalRateLimiter, RedisRateLimiter
from sso.storage.redis import create_redis
from sso.storage.replicas import LagSampler
from sso.storage.sessions import SqlSessionRepository
from sso.storage.two_factor import SqlTwoFactorRepository
from sso.storage.users import SqlLoginAttempts, SqlUserRepository

log = logging.getLogger("sso.app")


def untraced_context() -> contextvars.Context:
    """A copy of the current context (request id, client address) without the trace span."""
    ctx = contextvars.copy_context()
    ctx.run(otel_context.attach, otel_context.Context())
    return ctx


class OpaqueTokenAdapter:
    """Binds the opaque-token helpers to this deployment's derived HMAC key."""

    def __init__(self, data_key: bytes) -> None:
        self._key = opaque.derive_key(data_key, "refresh-successor")

    def new_refresh_token(self) -> str:
        return opaque.new_refresh_token()

    def hash(self, token: str) -> bytes:
        return opaque.hash_token(token)

    def successor(self, token: str) -> str:
        return opaque.successor(token, self._key)

    def new_session_id(self) -> str:
        return opaque.new_session_id()


class LegacyTokenAdapter:
    def issue(
        self, *, user_id: int, email: str, app_id: int, secret: str, ttl: timedelta, now: datetime
    ) -> str:
        return legacy.issue_legacy(user_id, email, app_id, secret, ttl, now)

    def verify(self, token: str, secret: str) -> dict[str, Any]:
        return dataclasses.asdict(legacy.verify_legacy(token, secret))

    def peek(self, token: str) -> dict[str, Any]:
        return dict(legacy.peek_legacy(token))


@dataclass
class Container:
    settings: Settings
    auth: AuthService
    sessions: SessionService
    bundle: ServiceBundle
    keyring: keyset.KeyRing
    _closers: list[Any] = field(default_factory=list)
    # The primary and the read router (replica state, for health and tests).
    database: Database | None = None

    @classmethod
    async def build(cls, settings: Settings) -> Container:
        s = settings
        if s.embedded:
            s.home.mkdir(parents=True, exist_ok=True)
        if s.keys.generate_if_missing and s.embedded:
            keyset.ensure(s.keys.dir, s.keys.algorithm)
        keyring = keyset.KeyRing.load(s.keys.dir)
        data_key = load_data_key(s)
        # Spans only when OTEL_* configure an exporter; statement metrics (and spans) always.
        tracer_provider = setup_tracing(s.observability)
        tracer = tracer_of(tracer_provider)
        # The primary takes writes and security reads; `db.reads` routes lag-tolerant reads
        # to healthy replicas (database.replica_urls; docs/architecture.md, read routing).
        db = Database.from_settings(s.database)
        engine = db.primary
        instrument_engine(engine, tracer)
        closers: list[Any] = [db.dispose]
        if db.reads.replicas:
            sampler = LagSampler(db.reads, interval=s.database.replica_check_interval)
            sampler.on_sample = lambda r: record_replicas(r.replicas, r.fallbacks)
            await sampler.start()
            closers.append(sampler.close)
        if tracer_provider is not None:  # closed last: flushes the spans of the shutdown
            closers.insert(0, lambda: asyncio.to_thread(tracer_provider.shutdown))
        denylist: Denylist
        checks: dict[str, Any] = {}
        # Per-IP/per-email limits: Redis when configured, degrading to this process's counts.
        trust_proxies(s.ratelimit.trusted_proxies)
        local_limits = LocalRateLimiter(fraction=s.ratelimit.fallback_fraction)
        limiter: RateLimiter = local_limits

        async def db_ok() -> bool:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            return True

        checks["database"] = db_ok
        if s.redis.url is not None:
            redis = create_redis(s.redis)
            instrument_redis(redis, tracer)
            closers.append(redis.aclose)
            # A per-process copy fed by pub/sub; `EXISTS` per call while it is not in sync.
            replica = ReplicatedDenylist(redis, s.redis.key_prefix)
            await replica.start()
            closers.append(replica.close)
            denylist = replica
            limiter = RedisRateLimiter(
                redis,
                s.redis.key_prefix,
                timeout=s.redis.timeout,
                cooldown=s.ratelimit.breaker_cooldown,
                fallback=local_limits,
            )

            async def redis_ok() -> bool:
                return bool(await redis.ping())

            checks["redis"] = redis_ok
        else:
            denylist = MemoryDenylist()
        # Bcrypt hashes imported from the Go service left (docs/migrating-from-go-sso.md).
        legacy_hashes = LegacyHashGauge(lambda: count_bcrypt_hashes(engine))
        legacy_hashes.start()
        closers.append(legacy_hashes.close)
        hasher = Argon2PasswordHasher(s.passwords, on_legacy_verified=legacy_hashes.poke)
        closers.append(hasher.close)
        tokens = JwtAccessTokens(
            keyring,
            issuer=s.tokens.issuer,
            leeway=s.tokens.leeway,
            cache_size=s.tokens.verified_cache_size,
        )
        # Every security event goes to each sink: the audit log line (more sinks append here).
        sinks: list[EventSink] = [LoggingSink()]
        # The append-only audit_events table, minus routine events (they stay in log + metrics).
        audit_skip = [SecurityEvent(name) for name in s.audit.skip_events]
        sinks.append(SqlAuditSink(engine, skip=audit_skip))
        sinks.append(MetricsSink())  # business and security counters (/metrics)
        limiter = MeteredLimiter(limiter)  # counts denied and degraded (Redis down) decisions
        apps: SqlAppRepository | RedisAppCache
        apps = SqlAppRepository(engine, SecretBox.from_data_key(data_key), reads=db.reads)
        if s.redis.url is not None:  # app rows shared in Redis, changes published (appcache.py)
            apps = RedisAppCache(apps, redis, s.redis.key_prefix, ttl=s.redis.app_cache_ttl)
        auth = AuthService(
            users=SqlUserRepository(engine),
            apps=apps,
            sessions=SqlSessionRepository(engine),
            denylist=denylist,
            hasher=hasher,
            rules=PasswordPolicy.from_settings(s.passwords),
            access_tokens=tokens,
            opaque=OpaqueTokenAdapter(data_key),
            policy=TokenPolicy(
                access_ttl=s.tokens.access_ttl,
                refresh_idle_ttl=s.tokens.refresh_idle_ttl,
                refresh_absolute_ttl=s.tokens.refresh_absolute_ttl,
                refresh_grace=s.tokens.refresh_grace,
            ),
            check_deliverability=s.email_check_deliverability,
            app_cache_ttl=s.tokens.app_cache_ttl.total_seconds(),
            events=FanOut(sinks),
            guard=LoginGuard(
                limiter=limiter,
                limits=RequestLimits.from_settings(s.ratelimit),
                # Lockout off still refuses administratively locked accounts (docs/admin.md).
                attempts=SqlLoginAttempts(engine, counting=s.lockout.enabled),
                policy=LockoutPolicy.from_settings(s.lockout),
                max_checks=s.passwords.workers + s.passwords.max_queue,
            ),
        )
        if isinstance(apps, RedisAppCache):
            # Every process drops its copies of an app the moment any process changes it.
            invalidations = AppInvalidations(redis, apps.channel, lambda _: auth.forget_apps())
            await invalidations.start()
            closers.append(invalidations.close)
        sessions = SessionService(auth)
        # TOTP second factor: Login asks it after a password verified (docs/two-factor.md).
        two_factor = TwoFactorService(
            auth=auth,
            repo=SqlTwoFactorRepository(engine),
            crypto=TotpAuthenticator(data_key, issuer=s.two_factor.issuer),
            policy=TwoFactorPolicy.from_settings(s.two_factor),
        )
        auth.second_factor = two_factor
        # GDPR export (sso.domain.export): each feature registers its sections on `exporter`.
        exporter = UserExport()
        exporter.register("two_factor", two_factor.export_section)
        admin_store = SqlAdminStore(engine, reads=db.reads)
        register_export_sections(exporter, admin_store)
        # Account lifecycle (docs/account.md): mail, verification, reset, history, devices.
        mailer = MailDispatcher.from_settings(s.mail, embedded=s.embedded, home=s.home)
        closers.append(mailer.close)
        # After-the-answer work (closed before the mailer: closers run in reverse), outside
        # the RPC's trace: its statements are not children of a span that already ended.
        account_work = Background(context=untraced_context)
        closers.append(account_work.close)
        account_tokens = SqlAccountTokens(engine)
        account = AccountService(
            auth=auth,
            tokens=account_tokens,
            mailer=mailer,
            policy=AccountPolicy.from_settings(s.account, ip_limits=s.ratelimit.enabled),
            background=account_work,
        )
        history = HistoryService(
            auth=auth,
            history=SqlLoginHistory(engine, reads=db.reads),
            tokens=account_tokens,
            mailer=mailer,
            background=account_work,
            notify_new_device=s.account.notify_new_device,
        )
        sinks.extend([account, history])  # registration → verification mail; logins → history
        history.register_sections(exporter)
        auth.require_verified_email = s.account.unverified_login == "refuse"
        admin = AdminService(
            auth=auth,
            apps=apps,
            store=admin_store,
            exporter=exporter,
            secret_overlap=s.admin.secret_overlap,
            totp_enabled=two_factor.enabled,  # User.totp_enabled in the Admin API
        )
        bundle = ServiceBundle(
            auth=auth,
            sessions=sessions,
            access_tokens=tokens,
            legacy_tokens=LegacyTokenAdapter(),
            legacy_ttl=s.tokens.legacy_ttl,
            issuer=s.tokens.issuer,
            checks=checks,
            observability=s.observability,
            tracer=tracer,
            admin=admin,
            admin_settings=s.admin,
            two_factor=two_factor,
            lifecycle=Lifecycle(account=account, history=history, exporter=exporter),
        )
        return cls(s, auth, sessions, bundle, keyring, closers, database=db)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = closer()
                if asyncio.iscoroutine(result):
                    await result


async def cleanup_once(container: Container, *, keep_revoked_for: timedelta) -> int:
    """Delete expired rows; how many. The embedded loop and `sso maintenance` both run this."""
    removed = await container.auth.sessions.cleanup(
        datetime.now(UTC), keep_revoked_for=keep_revoked_for
    )
    if container.bundle.two_factor is not None:  # used and expired MFA challenges
        removed += await container.bundle.two_factor.repo.cleanup(datetime.now(UTC))
    if container.bundle.lifecycle is not None:  # expired verification/reset links
        removed += await container.bundle.lifecycle.account.tokens.cleanup(datetime.now(UTC))
    return removed


async def cleanup_loop(container: Container, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await cleanup_once(container, keep_revoked_for=timedelta(days=1))
            log.info("cleanup", extra={"removed": removed})
        except Exception:
            log.exception("cleanup failed")


async def run(settings: Settings, *, reuse_port: bool = True) -> None:
    container = await Container.build(settings)
    server = SSOServer(container.bundle, settings.server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background = [asyncio.create_task(container.keyring.watch(settings.keys.reload_interval))]
    if settings.embedded and settings.cleanup_interval:
        background.append(asyncio.create_task(cleanup_loop(container, settings.cleanup_interval)))
    try:
        await server.start(reuse_port=reuse_port)
        await stop.wait()
        log.info("shutting down")
        await server.stop(drain_delay=settings.server.drain_delay)
    finally:
        for task in background:
            task.cancel()
        await container.close()
