"""Every log record of a test run, formatted as production formats it, and the leak check.

The whole run's lines are checked at the end (conftest.py): no password, token,
`Authorization` value or secret key may appear in any of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from app.ops.logs import JsonFormatter, RequestIdFilter

JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
UNMASKED_BEARER = re.compile(r"(?i)bearer\s+(?!\[REDACTED\])[A-Za-z0-9._~+/-]{8,}")
UNMASKED_AUTHORIZATION = re.compile(
    r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?!\[REDACTED\])(?:bearer|basic)?\s*[A-Za-z0-9]"
)


class LogCapture(logging.Handler):
    """Keeps every record as the JSON line production would write."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


def find_leaks(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """The lines that show a secret, a token or an Authorization value."""
    known = [secret for secret in secrets if secret]
    leaks = []
    for line in lines:
        if (
            any(secret in line for secret in known)
            or JWT.search(line)
            or UNMASKED_BEARER.search(line)
            or UNMASKED_AUTHORIZATION.search(line)
        ):
            leaks.append(line)
    return leaks
