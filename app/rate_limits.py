"""Abuse limits on the account endpoints (the `limits` library, async API) and the client
address they are keyed on (app/ops/proxies.py settles who the client is)."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Annotated, Literal

from fastapi import Depends, Request, status
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from app.config import Settings
from app.errors import AppError
from app.state import StateDep

logger = logging.getLogger(__name__)

LimitName = Literal[
    "login_account",
    "login_address",
    "register_address",
    "reset_address",
    "reset_account",
    "resend_verification_address",
    "resend_verification_account",
]


class RateLimited(AppError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "rate_limited"
    detail = "Too many attempts; wait before trying again."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def _loggable(key: str) -> str:
    """What a log line may show of a limit's key: addresses and user ids as they are, but a
    login that matched no account only as a short hash. It is whatever was typed in the
    login field, which is sometimes somebody's password."""
    if key.startswith("login:"):
        return "login:#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return key


class RateLimiter:
    """Counts attempts per key in a moving window; in memory, or in Redis when REDIS_URL is
    set so that every process and replica shares the counts."""

    def __init__(self, settings: Settings, *, key_prefix: str | None = None) -> None:
        self.enabled = settings.rate_limit_enabled
        prefix = key_prefix or settings.rate_limit_key_prefix
        self.storage: Storage
        if settings.redis_url:
            uri = settings.redis_url
            if not uri.startswith("async+"):
                uri = f"async+{uri}"
            self.storage = RedisStorage(uri, key_prefix=prefix)
        else:
            self.storage = MemoryStorage()
        self._strategy = MovingWindowRateLimiter(self.storage)
        self._limits: dict[LimitName, list[RateLimitItem]] = {
            "login_account": parse_many(settings.rate_limit_login_per_account),
            "login_address": parse_many(settings.rate_limit_login_per_address),
            "register_address": parse_many(settings.rate_limit_register_per_address),
            "reset_address": parse_many(settings.rate_limit_reset_per_address),
            "reset_account": parse_many(settings.rate_limit_reset_per_account),
            "resend_verification_address": parse_many(
                settings.rate_limit_resend_verification_per_address
            ),
            "resend_verification_account": parse_many(
                settings.rate_limit_resend_verification_per_account
            ),
        }

    async def hit(self, name: LimitName, key: str) -> None:
        """Count one attempt; `RateLimited` (with the seconds to wait) when over the limit."""
        if not self.enabled:
            return
        for item in self._limits[name]:
            try:
                allowed = await self._strategy.hit(item, name, key)
                stats = None if allowed else await self._strategy.get_window_stats(item, name, key)
            except Exception:
                # An unreachable limit store must not lock everybody out of their accounts:
                # fail open, loudly.
                logger.exception("rate limit store failed; %s not counted", name)
                return
            if stats is not None:
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                logger.info("rate limit %s reached for %s", name, _loggable(key))
                raise RateLimited(retry_after)

    async def reset(self) -> None:
        """Forget every count (tests; an operator clearing a lock-out)."""
        await self.storage.reset()


# Both dependencies are `async def` though they never await: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per login the profile showed for nothing.
async def get_rate_limiter(state: StateDep) -> RateLimiter:
    return state.rate_limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


async def request_client_address(request: Request) -> str:
    """The client's address, as the proxy middleware (TRUSTED_PROXIES) settled it."""
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(request_client_address)]
