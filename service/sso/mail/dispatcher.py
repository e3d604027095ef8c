"""The `Mailer` port: a bounded queue drained by worker tasks, with retries and backoff.

Why this module exists: an RPC that causes a mail (registration, reset,
password change, a new-device login) must answer without waiting for SMTP, and
a slow or failing mail server must neither pile up memory nor lose mail to one
hiccup. `submit()` only enqueues (a full queue drops the mail, logged and
counted); `workers` tasks render and deliver, retrying transient failures
`retries` times after `backoff_initial` · 2ⁿ seconds (capped at `backoff_max`,
with up to 25 % jitter). Log lines name the mail kind and the (masked)
recipient, never the values: a link token never reaches a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sso.config import MailSettings
from sso.domain.account_models import Mail
from sso.mail.templates import Renderer
from sso.mail.transport import (
    FileOutbox,
    PermanentMailError,
    SmtpTransport,
    TransientMailError,
    Transport,
    build_message,
)

log = logging.getLogger("sso.mail")


@dataclass
class MailStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0


@dataclass
class MailDispatcher:
    transport: Transport | None
    renderer: Renderer
    sender: str
    retries: int = 4
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    queue_size: int = 1000
    workers: int = 2
    stats: MailStats = field(default_factory=MailStats)
    _queue: asyncio.Queue[Mail] | None = field(default=None, init=False, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)
    _sending: int = field(default=0, init=False, repr=False)
    _backing_off: int = field(default=0, init=False, repr=False)

    @classmethod
    def from_settings(cls, s: MailSettings, *, embedded: bool, home: Path) -> MailDispatcher:
        mode = s.mode if s.mode != "auto" else ("outbox" if embedded else "smtp")
        transport: Transport | None
        if mode == "smtp":
            transport = SmtpTransport(s)
        elif mode == "outbox":
            transport = FileOutbox(s.outbox_dir or home / "outbox")
        else:
            transport = None
        return cls(
            transport,
            Renderer(s.base_url),
            s.from_address,
            retries=s.retries,
            backoff_initial=s.backoff_initial,
            backoff_max=s.backoff_max,
            queue_size=s.queue_size,
            workers=s.workers,
        )

    def start(self) -> None:
        if self._queue is not None:
            return
        self._queue = asyncio.Queue(self.queue_size)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"mail-worker-{i}") for i in range(self.workers)
        ]

    def submit(self, mail: Mail) -> bool:
        if self.transport is None:
            log.info("mail disabled, not sent", extra={"kind": mail.kind.value, "to": mail.to})
            self.stats.dropped += 1
            return False
        self.start()
        assert self._queue is not None
        try:
            self._queue.put_nowait(mail)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.warning("mail queue full, dropped", extra={"kind": mail.kind.value, "to": mail.to})
            return False
        return True

    async def join(self) -> None:
        """Wait until every queued mail was delivered or given up (tests, shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self, grace: float = 5.0) -> None:
        """Let queued and in-flight mails go out for up to `grace` seconds, then stop.

        A mail waiting out a retry backoff is not waited for (the server was failing
        anyway); it is given up, logged, like every mail still queued at the deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._queue is not None and loop.time() < deadline:
            if self._queue.empty() and self._sending == 0:
                break
            await asyncio.sleep(0.02)
        left = (self._queue.qsize() if self._queue is not None else 0) + self._backing_off
        if left:
            log.warning("mail workers stopped with mails undelivered", extra={"mails": left})
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks, self._queue = [], None

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): doubled each time, jittered."""
        base = min(self.backoff_max, self.backoff_initial * float(2 ** (attempt - 1)))
        return float(base * (1 + secrets.randbelow(251) / 1000))

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            mail = await queue.get()
            try:
                await self._deliver(mail)
            except Exception:  # a bug in rendering must not kill the worker
                self.stats.failed += 1
                log.exception("mail failed", extra={"kind": mail.kind.value, "to": mail.to})
            finally:
                queue.task_done()

    async def _deliver(self, mail: Mail) -> None:
        assert self.transport is not None
        rendered = self.renderer.render(mail.kind, mail.values)
        message = build_message(self.sender, mail.to, rendered, kind=mail.kind.value)
        extra = {"kind": mail.kind.value, "to": mail.to}
        for attempt in range(1, self.retries + 2):
            self._sending += 1
            try:
                await self.transport.deliver(message)
            except TransientMailError as exc:
                failure = str(exc)
            except PermanentMailError as exc:
                self.stats.failed += 1
                log.error("mail refused", extra={**extra, "error": str(exc)})
                return
            else:
                self.stats.sent += 1
                log.info("mail sent", extra={**extra, "attempts": attempt})
                return
            finally:
                self._sending -= 1
            if attempt > self.retries:
                self.stats.failed += 1
                log.error("mail not delivered, giving up", extra={**extra, "error": failure})
                return
            delay = self.backoff(attempt)
            self.stats.retried += 1
            log.warning(
                "mail delivery failed, retrying",
                extra={**extra, "error": failure, "attempt": attempt, "retry_in": delay},
            )
            self._backing_off += 1
            try:
                await asyncio.sleep(delay)
            finally:
                self._backing_off -= 1
