"""Who is calling: the bearer-token dependencies every protected route uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request, Response
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.base import SecurityBase
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import AdminRequired, InvalidToken, NotAuthenticated
from app.accounts.models import AccountSession
from app.accounts.security import PasswordHasher, TokenService
from app.accounts.sessions import SessionClient, touch_session
from app.db import SessionDep, read_session, utcnow
from app.rate_limits import ClientAddress
from app.reads import Read, read_context
from app.state import StateDep, app_state
from app.users.models import User

# auto_error=False: a missing token is answered by our own JSON error, with its code.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/accounts/login", auto_error=False)

T = TypeVar("T")


async def get_token_service(state: StateDep) -> TokenService:
    return state.token_service


async def get_password_hasher(state: StateDep) -> PasswordHasher:
    return state.password_hasher


TokenServiceDep = Annotated[TokenService, Depends(get_token_service)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]


@dataclass(frozen=True)
class Authenticated:
    """The caller and the sign-in session their access token belongs to."""

    user: User
    session_id: int


# One indexed query: the session (by primary key) and its user. A logged-out session, or a
# deleted or deactivated user, ends the token at once, not at expiry. Built once: every
# authenticated request runs it. The session's last use comes along, so that recording an
# access costs a statement only every few minutes (`touch_session`), never a read.
_AUTHENTICATE = (
    select(User, AccountSession.last_used_at)
    .join(AccountSession, AccountSession.user_id == User.id)
    .where(
        AccountSession.id == bindparam("session_id"),
        AccountSession.expires_at > bindparam("now"),
        User.id == bindparam("user_id"),
    )
)


async def _authenticate(
    request: Request, session: AsyncSession, token: str | None
) -> Authenticated | None:
    """The bearer token's caller and session, None without a token; `InvalidToken` when the
    token is bad, expired, logged out, or its user is gone or deactivated."""
    if token is None:
        return None
    # The token service from the request, not a sub-dependency: every authenticated
    # request solves this tree, and each level costs FastAPI a full solve.
    claims = app_state(request.app).token_service.read_access_token(token)
    parameters = {"session_id": claims.session_id, "user_id": claims.user_id, "now": utcnow()}
    row = (await session.execute(_AUTHENTICATE, parameters)).first()
    if row is None or not row[0].is_active:
        raise InvalidToken()
    user, last_used_at = row
    await touch_session(session, claims.session_id, last_used_at)
    return Authenticated(user=user, session_id=claims.session_id)


class _BearerScheme(SecurityBase, Generic[T]):
    """A dependency documented as the bearer scheme itself: the same OpenAPI security entry
    (and /docs' Authorize button) as `oauth2_scheme`, whose own parsing of the header its
    subclasses call. `decide` turns the caller (or None) into what the route gets."""

    def __init__(self, name: str, decide: Callable[[Authenticated | None], T]) -> None:
        self.model = oauth2_scheme.model
        self.scheme_name = oauth2_scheme.scheme_name
        self.__name__ = name
        self._decide = decide

    async def _viewer(self, request: Request, session: AsyncSession) -> T:
        token = await oauth2_scheme(request)
        return self._decide(await _authenticate(request, session, token))


class BearerAuthentication(_BearerScheme[T]):
    """A dependency that reads the bearer token and authenticates its caller.

    Each of `OptionalUser`, `CurrentAuth`, `CurrentUser` and `AdminUser` is one of these.
    The scheme and the session lookup are one dependency, not a scheme under an
    authenticating dependency: FastAPI solves every level on every request, each level's
    whole sub-tree even when its value is cached (docs/performance.md), and a dependency
    that is a security scheme is documented as one.
    """

    async def __call__(self, request: Request, session: SessionDep) -> T:
        return await self._viewer(request, session)


class ReadAuthentication(_BearerScheme[T]):
    """A GET's whole context (`app.reads.Read`) with its caller authenticated, as one
    dependency: it opens the read's session, authenticates on it, and yields the `Read`;
    the session closes when the route returns. See `app.reads` for why it is one."""

    async def __call__(self, request: Request, response: Response) -> AsyncIterator[Read[T]]:
        async with read_session(request) as session:
            yield read_context(request, response, session, await self._viewer(request, session))


def _optional(auth: Authenticated | None) -> User | None:
    return auth.user if auth is not None else None


def _required(auth: Authenticated | None) -> Authenticated:
    if auth is None:
        raise NotAuthenticated()
    return auth


def _user(auth: Authenticated | None) -> User:
    return _required(auth).user


def _admin(auth: Authenticated | None) -> User:
    user = _required(auth).user
    if not user.is_admin:
        raise AdminRequired()
    return user


# Module-level instances: FastAPI caches a dependency by its callable, and tests and
# overrides name these.
_optional_user = BearerAuthentication("optional_user", _optional)
_current_auth = BearerAuthentication("current_auth", _required)
_current_user = BearerAuthentication("current_user", _user)
_admin_user = BearerAuthentication("admin_user", _admin)

_optional_user_read = ReadAuthentication("optional_user_read", _optional)
_current_user_read = ReadAuthentication("current_user_read", _user)
_admin_read = ReadAuthentication("admin_read", _admin)

CurrentAuth = Annotated[Authenticated, Depends(_current_auth)]
OptionalUser = Annotated[User | None, Depends(_optional_user)]
CurrentUser = Annotated[User, Depends(_current_user)]
AdminUser = Annotated[User, Depends(_admin_user)]
# A GET's context with its reader, one dependency (app.reads); "function" scope as `SessionDep`.
OptionalUserRead = Annotated[Read[User | None], Depends(_optional_user_read, scope="function")]
CurrentUserRead = Annotated[Read[User], Depends(_current_user_read, scope="function")]
AdminRead = Annotated[Read[User], Depends(_admin_read, scope="function")]


async def _session_client(request: Request, address: ClientAddress) -> SessionClient:
    return SessionClient.from_request(request.headers.get("user-agent"), address)


SessionClientDep = Annotated[SessionClient, Depends(_session_client)]
