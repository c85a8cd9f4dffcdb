"""Log lines: one JSON object per line in production, readable text in development.

Every record carries the id of the request it was logged in (`request_id`, from a context
variable the request middleware sets), and every line passes a redaction step so a bearer
token, an `Authorization` value or a password that slipped into a message is masked.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged too.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName", "color_message"}
)

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Bearer tokens and Authorization header values.
    (re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"), r"\1[REDACTED]"),
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|digest)\s+)?[^\"',}\s]+"
        ),
        r"\1[REDACTED]",
    ),
    # "password": "...", password=..., secret_key=..., a signed media URL's signature=...
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|token|signature)[a-z_]*[\"']?\s*[:=]\s*[\"']?)"
            r"[^\"',}&\s]+"
        ),
        r"\1[REDACTED]",
    ),
    # Credentials inside URLs: scheme://user:password@host
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1[REDACTED]@"),
    # Anything shaped like a JWT.
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]+"), "[REDACTED-JWT]"),
)


# Every pattern above needs one of these words; most lines (access lines above all) have
# none, and looking for them is cheaper than five substitutions on every line.
_MAY_HOLD_SECRET = re.compile(r"(?i)bearer|authorization|passw|secret|token|signature|://|eyJ")


def may_hold_secret(text: str) -> bool:
    """Whether `text` contains one of the words every redaction needs (any case).

    For ASCII text, substring tests on the lowered text answer exactly what the
    case-insensitive search does, about ten times faster (the search's alternation has no
    literal prefix to skip ahead with; it was most of an access line's cost). Other text
    keeps the search: Unicode case folding matches more than `str.lower` does (the long s,
    U+017F, is an `s` to it).
    """
    if not text.isascii():
        return _MAY_HOLD_SECRET.search(text) is not None
    lowered = text.lower()
    # The same words as the search, spelled out: a loop over them cost as much again.
    return (
        "passw" in lowered
        or "secret" in lowered
        or "token" in lowered
        or "bearer" in lowered
        or "authorization" in lowered
        or "signature" in lowered
        or "://" in lowered
        or "eyj" in lowered
    )


def redact(text: str) -> str:
    """Mask secrets that must never reach a log line."""
    if not may_hold_secret(text):
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat()


def _iso_time(created: float) -> str:
    """`created` as ISO 8601 in UTC with milliseconds (`...T14:00:48.373+00:00`); the
    second's text is made once per second, not once per line."""
    # Rounded to the microsecond first, as `datetime.fromtimestamp` does.
    second = int(created)
    microseconds = round((created - second) * 1e6)
    if microseconds >= 1_000_000:
        second, microseconds = second + 1, microseconds - 1_000_000
    return f"{_iso_second(second)[:19]}.{microseconds // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or "-",
            "pid": record.process,
        }
        for key, value in _extras(record).items():
            entry[key] = (
                value if isinstance(value, int | float | bool | None) else redact(str(value))
            )
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        # Redacted before encoding (JSON escapes quotes) and once more after, as a backstop.
        return redact(json.dumps(entry, ensure_ascii=False))


# Line breaks and every other control character (C0, DEL, C1, and the Unicode line and
# paragraph separators some viewers break on): a `%0A` in a path must not forge a line.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_character(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: control characters written as `\\xNN` / `\\uNNNN`."""
    # Printable ASCII (nearly every line) has none: two C checks instead of a regex pass.
    if text.isascii() and text.isprintable():
        return text
    return _CONTROL_CHARACTERS.sub(_escape_character, text)


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message key=value...` for people reading a terminal.

    The message and every extra value are escaped (control characters as `\\xNN`): each
    record is one line whatever a client put in a path or a header. Only a traceback keeps
    its own line breaks."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # logging's own `2026-12-02 14:00:48,373`, with the second's text made once per
        # second (strftime per line was a fifth of an access line's cost).
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(
                f"{key}={escape_controls(str(value))}" for key, value in extras.items()
            )
        return redact(line)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server; uvicorn applies it in every worker."""
    formatter = "json" if settings.log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "app.ops.logs.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "app.ops.logs.JsonFormatter"},
            "text": {"()": "app.ops.logs.TextFormatter"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["request_id"],
            }
        },
        "root": {"level": settings.log_level, "handlers": ["default"]},
        "loggers": {
            # Our middleware writes the access log (once per request, with the request id).
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "uvicorn": {"level": settings.log_level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": settings.log_level, "handlers": [], "propagate": True},
        },
    }
