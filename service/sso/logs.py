"""Structured JSON logs, masked automatically before anything is written.

Every record becomes one JSON line. Masking happens in the handler that
`configure()` installs, never at call sites, in three stages:

1. Context: the request id, the client address and, when an OpenTelemetry span
   is current, its trace and span ids are read from context variables at the
   moment of the call (the gRPC interceptor sets them).
2. Rules (`MaskingFilter`), by field name: password fields are removed;
   token, secret, authorization, cookie, DSN and TOTP/OTP/backup-code fields
   become `***`; email fields are partially masked (`j***@example.com`);
   session ids are written only as a short hash; client addresses can be cut
   to their network. In free text (the message, tracebacks, other strings) the
   values the interceptor registered for the current request (its password,
   tokens, email, authorization metadata) are replaced wherever they occur, and
   `key=value` secrets, bearer credentials, DSN passwords and email addresses
   are masked. Email and IP rules are configurable per level (`LogSettings`).
   The filter rewrites the record in place, so other handlers see it masked.
3. Final check (`JsonFormatter`): every string of the finished record is
   scanned for secret shapes that slipped past the rules (JWTs, long random
   tokens, PEM private keys); hits are masked and counted (`scan_hits()`, and
   `"scan_masked"` on the line). JSON encoding with `ensure_ascii` escapes CR,
   LF, every other control character and non-ASCII, so a record is one line.

This module sits at the bottom layer and may not import `sso.config`:
`LogRuleSettings` is the shape of `sso.config.LogSettings` it reads.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib
import ipaddress
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TextIO, cast

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The caller's address as the edge saw it; set by the gRPC interceptor.
client_ip_var: contextvars.ContextVar[str] = contextvars.ContextVar("client_ip", default="")


class _RequestSecrets:
    """The (value, kind) pairs of one request, worked out on first use.

    Most calls write no log line at all (successful lookups write no access
    line), so finding the secrets of a request (which decodes a bearer JWT's
    claims) is deferred until a line is actually masked, and done once.
    """

    __slots__ = ("_find", "_pairs")

    def __init__(self, find: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._find: Callable[[], Iterable[tuple[str, str]]] | None = find
        self._pairs: tuple[tuple[str, str], ...] = ()

    def pairs(self) -> tuple[tuple[str, str], ...]:
        if self._find is not None:
            find, self._find = self._find, None
            self._pairs = _ordered(find())
        return self._pairs


_NO_SECRETS = _RequestSecrets(tuple)
# (value, kind) pairs of the current request that must never appear in a log line.
_request_secrets: contextvars.ContextVar[_RequestSecrets] = contextvars.ContextVar(
    "log_request_secrets", default=_NO_SECRETS
)

MASK = "***"
EmailMode = Literal["partial", "full", "clear"]
IpMode = Literal["clear", "network"]
# Field kinds: how a value is written, decided by its key.
DROP, SECRET, EMAIL, SESSION = "drop", "secret", "email", "session"
IP, SAFE, PLAIN = "ip", "safe", "plain"
MIN_REQUEST_SECRET = 4  # shorter request values are not searched for in free text

PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "newpassword"})
SECRET_WORDS = frozenset(
    {
        "secret", "secrets", "token", "tokens", "jwt", "authorization", "cookie",
        "cookies", "dsn", "totp", "otp", "hotp", "apikey", "credential",
        "credentials", "pepper", "privatekey", "private", "signature", "passcode",
    }
)  # fmt: skip
CODE_CONTEXT = frozenset({"backup", "recovery", "otp", "totp", "mfa", "verification", "reset"})
EMAIL_WORDS = frozenset({"email", "emails", "mail", "username"})
IP_KEYS = frozenset({"ip", "client_ip", "peer_ip", "remote_addr", "peer", "address"})
SAFE_KEYS = frozenset({"request_id", "trace_id", "span_id", "ref", "method", "logger", "level"})
SESSION_KEYS = frozenset({"sid", "session_id", "session", "sessionid"})

BEARER = re.compile(
    r"(?i)\b(bearer|basic|digest)\s+(?!(?:bearer|basic|digest)\b)[A-Za-z0-9._~+/=-]{4,}"
)
KEY_VALUE = re.compile(
    r"(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key"
    r"|authorization|cookie|otp|totp)[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,;}\]]+)"
)
DSN_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@")
EMAIL_SHAPE = re.compile(r"(?<![\w.%+-])([\w.%+-]{1,64})@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
JWT_SHAPE = re.compile(r"\be[wy][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
PEM_PRIVATE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
)
RUN = re.compile(r"[A-Za-z0-9_-]+")
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "_sso_masked"}
_CONTEXT_FIELDS = ("request_id", "trace_id", "span_id", "client_ip")
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_counters = {"scan_hits": 0}


class LogRuleSettings(Protocol):
    """What `configure` reads from `sso.config.LogSettings`."""

    @property
    def mask_emails(self) -> bool: ...
    @property
    def email_by_level(self) -> Mapping[Any, str]: ...
    @property
    def ip_by_level(self) -> Mapping[Any, str]: ...
    @property
    def extra_secret_fields(self) -> Sequence[str]: ...
    @property
    def token_min_length(self) -> int: ...


@dataclass(frozen=True)
class Rules:
    """The masking rules in force; per-level overrides are keyed by level number."""

    email_default: EmailMode = "partial"
    email_by_level: Mapping[int, EmailMode] = field(default_factory=dict)
    ip_by_level: Mapping[int, IpMode] = field(default_factory=dict)
    extra_secret_words: frozenset[str] = frozenset()
    token_min_length: int = 32

    @classmethod
    def from_settings(cls, settings: LogRuleSettings) -> Rules:
        # LogSettings has validated the modes (Literal types); only the keys change here.
        email = {_LEVELS[k.upper()]: v for k, v in settings.email_by_level.items()}
        ips = {_LEVELS[k.upper()]: v for k, v in settings.ip_by_level.items()}
        return cls(
            email_default="partial" if settings.mask_emails else "clear",
            email_by_level=cast(dict[int, EmailMode], email),
            ip_by_level=cast(dict[int, IpMode], ips),
            extra_secret_words=frozenset(w.lower() for w in settings.extra_secret_fields),
            token_min_length=settings.token_min_length,
        )

    def email_mode(self, levelno: int) -> EmailMode:
        return self.email_by_level.get(levelno, self.email_default)

    def ip_mode(self, levelno: int) -> IpMode:
        return self.ip_by_level.get(levelno, "clear")


def _ordered(values: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    kept = {(v, k) for v, k in values if len(v) >= MIN_REQUEST_SECRET}
    for value, kind in list(kept):
        if kind == EMAIL and value.casefold() != value:
            kept.add((value.casefold(), kind))
    return tuple(sorted(kept, key=lambda item: -len(item[0])))


def bind_request_secrets(
    values: Iterable[tuple[str, str]] | Callable[[], Iterable[tuple[str, str]]],
) -> contextvars.Token[Any]:
    """Register (value, kind) pairs of the current request; kinds: secret, email, session.

    Until `unbind_request_secrets(token)`, every log line written in this context
    has those values replaced wherever they appear (tracebacks included). A
    callable is called once, when the first line of the request is masked.
    """
    if callable(values):
        return _request_secrets.set(_RequestSecrets(values))
    given = tuple(values)  # taken now; kept and ordered once, by `pairs()` (lazily)
    return _request_secrets.set(_RequestSecrets(lambda: given))


def unbind_request_secrets(token: contextvars.Token[Any]) -> None:
    _request_secrets.reset(token)


@functools.lru_cache(maxsize=2048)
def classify(key: str, extra: frozenset[str] = frozenset()) -> str:
    """The kind of a field, from its name (`new_password` → drop, `refresh_token` → secret)."""
    lowered = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    words = set(re.findall(r"[a-z0-9]+", lowered))
    joined = "".join(re.findall(r"[a-z0-9]+", lowered))
    if lowered in SAFE_KEYS:
        return SAFE
    if any(w in PASSWORD_WORDS or w.endswith("password") for w in words):
        return DROP
    if (
        words & (SECRET_WORDS | extra)
        or any(w.endswith(("token", "tokens", "secret")) for w in words)
        or ("code" in words and words & CODE_CONTEXT)
        or ("api" in words and "key" in words)
        or lowered in extra
    ):
        return SECRET
    if words & EMAIL_WORDS or joined == "emailaddress":
        return EMAIL
    if lowered in SESSION_KEYS or ("session" in words and "id" in words):
        return SESSION
    if lowered in IP_KEYS:
        return IP
    return PLAIN


def mask_email(value: str, mode: EmailMode = "partial") -> str:
    """`jane@example.com` → `j***@example.com` (partial), `***` (full), unchanged (clear)."""
    if mode == "clear":
        return value
    local, at, domain = value.rpartition("@")
    if mode == "full" or not at:
        return MASK
    return f"{local[:1]}{MASK}@{domain}"


def hash_session(value: str) -> str:
    """Session ids are logged only as a short, stable hash (checklist H1)."""
    return "h:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def mask_ip(value: str, mode: IpMode) -> str:
    if mode == "clear" or not value:
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return MASK
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def mask_text(text: str, email_mode: EmailMode = "partial") -> str:
    """The free-text rules: request secrets, bearer, key=value secrets, DSNs, emails."""
    for value, kind in _request_secrets.get().pairs():
        if value in text:
            if kind == EMAIL:
                text = text.replace(value, mask_email(value, email_mode))
            elif kind == SESSION:
                text = text.replace(value, hash_session(value))
            else:
                text = text.replace(value, MASK)
    if "://" in text:
        text = DSN_PASSWORD.sub(rf"\1{MASK}@", text)
    text = BEARER.sub(rf"\1 {MASK}", text)
    text = KEY_VALUE.sub(rf"\1{MASK}", text)
    if email_mode != "clear" and "@" in text:
        text = EMAIL_SHAPE.sub(lambda m: mask_email(m.group(0), email_mode), text)
    return text


def _looks_random(run: str) -> bool:
    """A long [A-Za-z0-9_-] run with a digit, mixed case, or only capital letters (a
    base32 TOTP secret can have no digit): a token, not an identifier."""
    has_digit = any(c.isdigit() for c in run)
    if has_digit or (run.isalpha() and run.isupper()):
        return True
    return any(c.islower() for c in run) and any(c.isupper() for c in run)


def scan_text(text: str, min_length: int = 32) -> tuple[str, int]:
    """The final check: mask secret-shaped values; returns (text, number masked)."""
    text, pem = PEM_PRIVATE.subn(MASK, text)
    text, jwts = JWT_SHAPE.subn(MASK, text)
    runs = [0]

    def long_run(match: re.Match[str]) -> str:
        run = match.group(0)
        if len(run) < min_length or not _looks_random(run):
            return run
        runs[0] += 1
        return MASK

    return RUN.sub(long_run, text), pem + jwts + runs[0]


def scan_hits() -> int:
    """Values masked by the final check since start (each one a rule that missed)."""
    return _counters["scan_hits"]


@functools.cache
def _otel_trace() -> Any:
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:  # pragma: no cover (opentelemetry-api is a dependency)
        return None


def _otel_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current OpenTelemetry span, if tracing is installed."""
    trace = _otel_trace()
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class MaskingFilter(logging.Filter):
    """Captures the request context and applies the rules to a record, in place."""

    def __init__(self, rules: Rules | None = None) -> None:
        super().__init__()
        self.rules = rules or Rules()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_sso_masked", False):
            return True
        level = record.levelno
        email_mode = self.rules.email_mode(level)
        context: dict[str, str] = {"request_id": request_id_var.get()}
        ids = _otel_ids()
        if ids is not None:
            context["trace_id"], context["span_id"] = ids
        client_ip = client_ip_var.get()
        if client_ip:
            context["client_ip"] = mask_ip(client_ip, self.rules.ip_mode(level))
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg, record.args = mask_text(message, email_mode), None
        for key in [k for k in vars(record) if k not in _STANDARD and not k.startswith("_")]:
            value = self.value(key, getattr(record, key), level)
            if value is _DROPPED:
                delattr(record, key)
            else:
                setattr(record, key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, email_mode)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, email_mode)
        record._sso_context = context
        record._sso_masked = True
        return True

    def value(self, key: str, value: Any, level: int, kind: str | None = None) -> Any:
        kind = kind or classify(str(key), self.rules.extra_secret_words)
        if kind == DROP:
            return _DROPPED
        if value is None or (isinstance(value, bool | int | float) and kind != SECRET):
            return value
        if kind == SECRET:
            return MASK
        if isinstance(value, Mapping):
            pairs = ((str(k), self.value(str(k), v, level)) for k, v in value.items())
            return {k: v for k, v in pairs if v is not _DROPPED}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(key, v, level, kind) for v in value]
        text = value if isinstance(value, str) else str(value)
        if kind == EMAIL:
            return mask_email(text, self.rules.email_mode(level))
        if kind == SESSION:
            return hash_session(text) if text else text
        if kind == IP:
            return mask_ip(text, self.rules.ip_mode(level))
        if kind == SAFE:
            return text
        return mask_text(text, self.rules.email_mode(level))


_DROPPED: Any = object()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, after the final secret-shape check."""

    def __init__(self, masking: MaskingFilter | None = None) -> None:
        super().__init__()
        self.masking = masking or MaskingFilter()

    def format(self, record: logging.LogRecord) -> str:
        self.masking.filter(record)  # a no-op when the handler's filter already ran
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "_sso_context", {}))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        hits = [0]
        for key, value in entry.items():
            if key not in SAFE_KEYS and key not in _CONTEXT_FIELDS and key != "ts":
                entry[key] = _scan(value, self.masking.rules.token_min_length, hits)
        if hits[0]:
            entry["scan_masked"] = hits[0]
            _counters["scan_hits"] += hits[0]
        return json.dumps(entry, default=str, ensure_ascii=True)


def _scan(value: Any, min_length: int, hits: list[int]) -> Any:
    """The final check over a value of any shape; `hits[0]` counts what it masked."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _scan(v, min_length, hits) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scan(v, min_length, hits) for v in value]
    text, found = scan_text(value if isinstance(value, str) else str(value), min_length)
    hits[0] += found
    return text


def handler(
    stream: TextIO | None = None, settings: LogRuleSettings | Rules | None = None
) -> logging.Handler:
    """A stream handler with the masking filter and the JSON formatter installed."""
    if settings is None or isinstance(settings, Rules):
        rules = settings
    else:
        rules = Rules.from_settings(settings)
    masking = MaskingFilter(rules)
    out = logging.StreamHandler(stream or sys.stderr)
    out.addFilter(masking)
    out.setFormatter(JsonFormatter(masking))
    return out


def configure(
    level: str = "INFO",
    stream: TextIO | None = None,
    settings: LogRuleSettings | Rules | None = None,
    *,
    replace: bool = True,
) -> logging.Handler:
    """Install the masked JSON handler on the root logger (every logger propagates there).

    `replace=False` adds it beside the existing handlers (tests capture this way).
    """
    out = handler(stream, settings)
    root = logging.getLogger()
    if replace:
        root.handlers[:] = [out]
        logging.lastResort = out
    else:
        root.addHandler(out)
    root.setLevel(level)
    for noisy in ("aiosqlite", "asyncio", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return out
