"""The rules of link health, without I/O: what a check's outcome does to an image's status,
and when its next check is due. Creates, URL changes, manual rechecks and the scheduled
rechecks of `recheck.py` all store their outcomes through these functions."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.images.checker import CheckedImage

# Each delay is shortened by up to this fraction, chosen at random: images added together
# (a bulk import) spread out over their next checks instead of coming due all at once,
# and none is checked later than its interval promises.
JITTER = 0.10


@dataclass(frozen=True, slots=True)
class RecheckPolicy:
    """The schedule's settings."""

    interval_seconds: float
    retry_seconds: float
    broken_after: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RecheckPolicy:
        return cls(
            interval_seconds=settings.recheck_interval_seconds,
            retry_seconds=settings.recheck_retry_seconds,
            broken_after=settings.recheck_broken_after,
        )

    def delay_after(self, failure_count: int) -> float:
        """Seconds until the next check: the interval after a success, and after the n-th
        consecutive failure the retry delay doubled n-1 times, never beyond the interval."""
        if failure_count <= 0:
            return self.interval_seconds
        # Capped exponent: 2**60 retry seconds is already far beyond any interval.
        return float(
            min(self.retry_seconds * 2 ** min(failure_count - 1, 60), self.interval_seconds)
        )

    def next_due(
        self, now: datetime, failure_count: int, rng: Callable[[], float] = random.random
    ) -> datetime:
        """When the next check is due, jittered."""
        delay = self.delay_after(failure_count) * (1 - JITTER * rng())
        return now + timedelta(seconds=delay)

    def status_after(self, failure_count: int) -> str:
        """`ok` with no failure; `broken` from `broken_after` consecutive failures on."""
        if failure_count <= 0:
            return "ok"
        return "broken" if failure_count >= self.broken_after else "failing"


def checked_values(checked: CheckedImage) -> dict[str, Any]:
    """The image columns a successful check fills in (the URL excepted)."""
    return {
        "content_type": checked.content_type,
        "size_bytes": checked.size_bytes,
        "width": checked.width,
        "height": checked.height,
        "checked_at": checked.checked_at,
        "etag": checked.etag,
        "last_modified": checked.last_modified,
        "fingerprint": checked.fingerprint,
    }


def healthy_values(policy: RecheckPolicy, now: datetime) -> dict[str, Any]:
    """The link-health columns after a successful check (or a 304): ok, and due one
    interval later. Any claim a worker held is void: its outcome would be older."""
    return {
        "status": "ok",
        "failure_count": 0,
        "last_error": None,
        "due_at": policy.next_due(now, 0),
        "recheck_claim": None,
    }


def failed_values(
    policy: RecheckPolicy, now: datetime, failure_count: int, code: str
) -> dict[str, Any]:
    """The link-health columns after one more consecutive failure (`failure_count` counts
    it): failing or broken, retried sooner."""
    return {
        "status": policy.status_after(failure_count),
        "failure_count": failure_count,
        "last_error": code,
        "checked_at": now,
        "due_at": policy.next_due(now, failure_count),
        "recheck_claim": None,
    }


def content_changed(stored_fingerprint: str | None, checked: CheckedImage) -> bool:
    """Whether a check read different bytes than the last one. An image with no stored
    fingerprint (stored before fingerprints existed) has nothing to compare with."""
    return (
        stored_fingerprint is not None
        and checked.fingerprint is not None
        and checked.fingerprint != stored_fingerprint
    )
