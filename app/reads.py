"""A GET's context as one dependency: its session, who reads, the validator of its answer,
the media URLs it may render, and the cursor codec of the pages it lists.

Why one dependency rather than four: FastAPI solves every dependency of a route on every
request, and each solve costs about as much as a small handler (10 us on the bench machine:
a recursive solve, four parameter passes, callable classification, cache bookkeeping), even
when its value is cached. A gallery page solved six (the session, the media URLs, the page,
the viewer, the viewer's session again, the validator) where the framework floor solves
one; that was a fifth of what separated the two (docs/performance.md, fourth round).

So the hot reads take one `Read`, which reads like the rest of a route's parameters
(`read: OptionalUserRead`), listings take their `limit` and `cursor` as plain query
parameters (`LimitQuery`, `CursorQuery`: a dependency around them was one more solve), and
the named dependencies (`SessionDep`, `OptionalUser`, `RevalidationDep`, `MediaUrlsDep`)
stay for writes and the other routes. The signed-in variants, which authenticate their
caller and are documented as the bearer scheme, live in `app.accounts.dependencies`; this
core module has the context itself and the one for anonymous reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import read_session
from app.http_caching import Revalidation
from app.pagination import CursorCodec, PageParams
from app.state import app_state

if TYPE_CHECKING:
    from app.images.media_urls import MediaUrls

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Read(Generic[V]):
    """One GET: its session (autocommit, closed before the answer is sent), its reader
    (`viewer`: None, a user, or the caller's sign-in), its answer's validator, the app's
    media URLs, and its cursor codec for the pages it lists."""

    session: AsyncSession
    viewer: V
    revalidation: Revalidation
    media_urls: MediaUrls
    cursors: CursorCodec

    def page(self, limit: int, cursor: str | None) -> PageParams:
        """The page a listing asked for (`LimitQuery`, `CursorQuery`), with the codec that
        reads its cursor and signs the next one."""
        return PageParams(limit=limit, cursor=cursor, cursors=self.cursors)


def read_context(request: Request, response: Response, session: AsyncSession, viewer: V) -> Read[V]:
    """The `Read` of this request, once its session is open and its reader known."""
    state = app_state(request.app)
    return Read(
        session=session,
        viewer=viewer,
        revalidation=Revalidation(state.entity_tags, request, response),
        media_urls=state.media_urls,
        cursors=state.cursor_codec,
    )


async def anonymous_read(request: Request, response: Response) -> AsyncIterator[Read[None]]:
    async with read_session(request) as session:
        yield read_context(request, response, session, None)


# "function" scope, as `SessionDep`: the session closes once the route returns, before the
# answer is sent, so a slow client never holds a pooled connection.
AnonymousRead = Annotated[Read[None], Depends(anonymous_read, scope="function")]
