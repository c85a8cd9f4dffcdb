"""The framework floor: the cheapest FastAPI + AsyncSession app that answers the bench's reads.

What the service was asked to be built on (FastAPI routes over an async SQLAlchemy session),
and nothing of ours around it: the same routes and response models, one `yield` dependency
that opens an AsyncSession the way the app does (app/db.py: the same engine and pool, read
sessions in AUTOCOMMIT), the same SQLAlchemy Core statements (built with the app's `keyset`
helper from the same columns), the same cursor codec and media URL signer, so the JSON is
byte-identical (the harness checks it). Authentication for `/users/me` and `/images`: the
app's JWT verification (`TokenService.read_access_token`) and the app's session query,
written as one plain dependency. No middleware, no logging, no metrics, no rate limits.
The collector is settled as the app's (`settle_collector`): a process setting, not a layer.

`app / framework floor` is therefore what our own code costs (middleware, logging, metrics,
dependency chains, services); `app / raw floor` (bench/floor.py) what everything costs.

Run: `DATABASE_URL=postgresql+asyncpg://... SECRET_KEY=... \
      uvicorn --factory bench.framework_floor:create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.models import AccountSession
from app.accounts.security import TokenService
from app.accounts.sessions import touch_session
from app.config import Settings
from app.db import create_engine, create_read_sessionmaker, utcnow
from app.images.media_urls import MediaSigner, MediaUrls
from app.images.models import Image
from app.images.schemas import ImageRead
from app.images.visibility import Visibility
from app.ops.collector import settle_collector
from app.pagination import CursorCodec, Listing, Page, PageParams, keyset, paginate
from app.users.models import User
from app.users.schemas import UserPrivate, UserPublic

_images = Image.__table__.c
_users = User.__table__.c

# The app's statements (app/users/service.py, app/images/service.py), built the same way.
USERS = keyset(
    select(_users.id, _users.username, _users.date_joined), id_column=_users.id, newest_first=False
)
PUBLIC_GALLERY = keyset(
    select(*_images).where(
        _images.user_id == bindparam("owner_id"), _images.visibility == Visibility.PUBLIC.value
    ),
    id_column=_images.id,
    newest_first=True,
)
ALL_IMAGES = keyset(select(*_images), id_column=_images.id, newest_first=True)
ONE_IMAGE = select(*_images).where(
    _images.id == bindparam("image_id"), _images.user_id == bindparam("user_id")
)
# The app's authentication query (app/accounts/dependencies.py).
AUTHENTICATE = (
    select(User, AccountSession.last_used_at)
    .join(AccountSession, AccountSession.user_id == User.id)
    .where(
        AccountSession.id == bindparam("session_id"),
        AccountSession.expires_at > bindparam("now"),
        User.id == bindparam("user_id"),
    )
)


@dataclass
class FloorState:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    tokens: TokenService
    cursors: CursorCodec
    media: MediaUrls


def _state(request: Request) -> FloorState:
    state: FloorState = request.app.state.floor
    return state


async def session_dependency(request: Request) -> AsyncIterator[AsyncSession]:
    """One read session per request, closed after the handler (as the app's safe methods)."""
    async with _state(request).sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(session_dependency, scope="function")]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=512)]


async def _signed_in(request: Request, session: AsyncSession) -> User:
    """The bearer token's user: the app's JWT check, then the app's session query."""
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise HTTPException(401, "not signed in")
    try:
        claims = _state(request).tokens.read_access_token(header[7:])
    except Exception as exc:
        raise HTTPException(401, "invalid token") from exc
    parameters = {"session_id": claims.session_id, "user_id": claims.user_id, "now": utcnow()}
    row = (await session.execute(AUTHENTICATE, parameters)).first()
    if row is None or not row[0].is_active:
        raise HTTPException(401, "invalid token")
    user: User = row[0]
    await touch_session(session, claims.session_id, row[1])  # a write every few minutes at most
    return user


def create_app() -> FastAPI:
    """The floor app; its engine is made when it starts."""
    settings = Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secret = settings.secret_key.get_secret_value() if settings.secret_key else ""
        engine = create_engine(settings)
        app.state.floor = FloorState(
            engine=engine,
            sessions=create_read_sessionmaker(engine),
            tokens=TokenService(settings, secret),
            cursors=CursorCodec(secret.encode()),
            media=MediaUrls(MediaSigner(secret, settings.media_url_expire_seconds)),
        )
        # The same collector settings as the app's (a process setting, not a layer of the
        # app): without them the floor spent about 18% of its CPU in the collector.
        settle_collector()
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan, redirect_slashes=False, openapi_url=None, docs_url=None)

    @app.get("/users/me", response_model=UserPrivate)
    async def read_me(request: Request, session: SessionDep) -> User:
        return await _signed_in(request, session)

    @app.get("/users", response_model=Page[UserPublic])
    async def list_users(
        request: Request, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
    ) -> Listing[dict[str, Any]]:
        page = PageParams(limit, cursor, _state(request).cursors)
        return await paginate(session, USERS, {}, listing="users", page=page)

    @app.get("/users/{user_id}/images", response_model=Page[ImageRead])
    async def list_user_images(
        request: Request,
        user_id: int,
        session: SessionDep,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Listing[dict[str, Any]]:
        state = _state(request)
        images = await paginate(
            session,
            PUBLIC_GALLERY,
            {"owner_id": user_id},
            listing=f"user-images:{user_id}",
            page=PageParams(limit, cursor, state.cursors),
        )
        state.media.attach(images.items)
        return images

    @app.get("/users/{user_id}/images/{image_id}", response_model=ImageRead)
    async def read_image(
        request: Request, user_id: int, image_id: int, session: SessionDep
    ) -> dict[str, Any]:
        parameters = {"image_id": image_id, "user_id": user_id}
        found = (await session.execute(ONE_IMAGE, parameters)).mappings().one_or_none()
        if found is None or found["visibility"] != Visibility.PUBLIC:
            raise HTTPException(404, "not found")
        row = dict(found)
        row.update(_state(request).media.for_image(row))
        return row

    @app.get("/images", response_model=Page[ImageRead])
    async def list_all_images(
        request: Request, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
    ) -> Listing[dict[str, Any]]:
        user = await _signed_in(request, session)
        if not user.is_admin:
            raise HTTPException(403, "admins only")
        state = _state(request)
        images = await paginate(
            session,
            ALL_IMAGES,
            {},
            listing="images:None",
            page=PageParams(limit, cursor, state.cursors),
        )
        state.media.attach(images.items)
        return images

    return app
