"""Structured JSON logs with a request id on every record, and a last-line masker.

Every record is one JSON line (CR/LF and control characters escaped by the
JSON encoder). The request id lives in a context variable set by the gRPC
interceptor, so call sites never pass it. Before a record is written, a filter
masks known secret-bearing fields (passwords, tokens, secrets, authorization)
and anything shaped like a JWT or a long random token in the message, so a
careless call site cannot leak credentials. The hardening issue extends the rules.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The caller's address as the edge saw it; set by the gRPC interceptor.
client_ip_var: contextvars.ContextVar[str] = contextvars.ContextVar("client_ip", default="")

SECRET_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[-_]?key|dsn|totp|otp|code|cookie|private",
    re.IGNORECASE,
)
JWT_SHAPE = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")
LONG_TOKEN = re.compile(r"\b[A-Za-z0-9_\-]{32,}\b")
DSN_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
MASK = "***"
_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def mask_text(text: str) -> str:
    text = JWT_SHAPE.sub(MASK, text)
    text = DSN_PASSWORD.sub(rf"\1{MASK}@", text)
    return LONG_TOKEN.sub(MASK, text)


def mask_value(key: str, value: Any) -> Any:
    if SECRET_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
            "request_id": request_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = mask_value(key, value)
        if record.exc_info:
            entry["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=True)


def configure(level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiosqlite", "asyncio", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
