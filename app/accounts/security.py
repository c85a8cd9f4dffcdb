"""Password hashing (off the event loop), access tokens (JWT) and opaque random tokens."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from jose import JWTError, jwt
from passlib.context import CryptContext

from app.accounts.errors import InvalidToken
from app.config import Settings, usable_cores
from app.db import MAX_ID

# OWASP's Argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_ROUNDS = 2
ARGON2_PARALLELISM = 1

T = TypeVar("T")

TOKEN_ISSUER = "gallery-api"  # noqa: S105 (a claim value, not a secret)
TOKEN_AUDIENCE = "gallery-api"  # noqa: S105


def make_crypt_context() -> CryptContext:
    """The password schemes: Argon2id now; anything else is re-hashed at the next login."""
    return CryptContext(
        schemes=["argon2"],
        deprecated="auto",
        argon2__type="ID",
        argon2__memory_cost=ARGON2_MEMORY_KIB,
        argon2__rounds=ARGON2_ROUNDS,
        argon2__parallelism=ARGON2_PARALLELISM,
    )


class PasswordHasher:
    """Hashes and verifies passwords in worker threads, a bounded number at a time,
    so a burst of logins cannot stall the event loop or exhaust memory.

    The threads are its own fixed pool (the app sizes it with `PASSWORD_HASH_THREADS`: the
    cores shared out among the worker processes), not the shared anyio pool:
    each Argon2 call allocates 19 MiB, and glibc keeps that memory in a per-thread arena after
    it is freed. Spread over the shared pool's dozens of threads this grew a worker from
    95 MB to about 180-270 MB after a burst of logins; with a fixed pool it stays bounded by
    one buffer per hashing thread.
    """

    def __init__(self, context: CryptContext | None = None, max_concurrent: int | None = None):
        self._context = context or make_crypt_context()
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent or usable_cores(), thread_name_prefix="password-hash"
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = asyncio.Lock()

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def hash(self, password: str) -> str:
        """The hash to store for a new password."""
        return await self._run(self._context.hash, password)

    async def verify(self, password: str, stored_hash: str) -> tuple[bool, str | None]:
        """Whether the password matches, and a new hash when the stored one is outdated."""
        return await self._run(self._context.verify_and_update, password, stored_hash)

    def close(self) -> None:
        """Let the hashing threads finish and exit (at the end of the app's lifespan)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def verify_dummy(self, password: str) -> None:
        """Spend the same work as a real verification, for logins of unknown users,
        so response time does not reveal whether an account exists."""
        async with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(password, self._dummy_hash)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says: who, and in which session."""

    user_id: int
    session_id: int


# Clocks of the servers behind a load balancer may differ by a little.
CLOCK_SKEW_SECONDS = 30
# Verified access tokens remembered per process (see `TokenService`).
VERIFIED_TOKENS_KEPT = 4096


def new_opaque_token() -> str:
    """A random token (256 bits) for refresh and mailed links."""
    return secrets.token_urlsafe(32)


def hash_opaque_token(token: str) -> str:
    """How a random token is stored: SHA-256 suffices for 256 bits of entropy."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _positive_id(value: object) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidToken()
    if not 0 < number <= MAX_ID:
        raise InvalidToken()
    return number


class TokenService:
    """Issues and checks access tokens. The algorithm is pinned by settings, never read
    from a token, and issuer, audience, expiry, session and type are all required."""

    def __init__(self, settings: Settings, secret_key: str) -> None:
        self._key = secret_key
        self._algorithm = settings.jwt_algorithm
        self._lifetime = timedelta(minutes=settings.access_token_expire_minutes)
        self.refresh_lifetime = timedelta(days=settings.refresh_token_expire_days)
        # Tokens whose signature and claims were already checked, with their expiry: a
        # client sends the same token on every call, and python-jose's decode was 8% of an
        # authenticated read's CPU. Bounded, least recently used first out. Only what is
        # fixed inside a signed token is remembered; the session is still looked up on
        # every request, so a logout ends the token at once.
        self._verified: OrderedDict[str, tuple[AccessClaims, float]] = OrderedDict()

    def issue_access_token(self, user_id: int, session_id: int) -> AccessToken:
        now = datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "type": "access",
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
        }
        token = jwt.encode(claims, self._key, algorithm=self._algorithm)
        return AccessToken(token=token, expires_in=int(self._lifetime.total_seconds()))

    def read_access_token(self, token: str) -> AccessClaims:
        """The user and session an access token was issued for; `InvalidToken` for anything
        else (bad signature or algorithm, expired, not yet valid, wrong issuer, audience or
        type, missing claims)."""
        remembered = self._verified.get(token)
        if remembered is not None:
            claims, expires_at = remembered
            if time.time() <= expires_at + CLOCK_SKEW_SECONDS:
                self._verified.move_to_end(token)
                return claims
            del self._verified[token]
            raise InvalidToken()
        checked, expires_at = self._decode_access_token(token)
        self._verified[token] = (checked, expires_at)
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return checked

    def _decode_access_token(self, token: str) -> tuple[AccessClaims, float]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=TOKEN_AUDIENCE,
                issuer=TOKEN_ISSUER,
                options={
                    "require_exp": True,
                    "require_iat": True,
                    "require_sub": True,
                    "require_aud": True,
                    "require_iss": True,
                    "leeway": CLOCK_SKEW_SECONDS,
                },
            )
        except (JWTError, ValueError, TypeError) as exc:
            raise InvalidToken() from exc
        if claims.get("type") != "access":
            raise InvalidToken()
        # python-jose checks `iat` is a number but not that it is in the past.
        issued_at = claims.get("iat")
        if not isinstance(issued_at, int | float) or issued_at > time.time() + CLOCK_SKEW_SECONDS:
            raise InvalidToken()
        checked = AccessClaims(
            user_id=_positive_id(claims.get("sub")), session_id=_positive_id(claims.get("sid"))
        )
        # python-jose has required `exp` and checked that it is a number in the future.
        return checked, float(claims["exp"])
