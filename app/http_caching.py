"""Conditional JSON reads: strong ETags, `If-None-Match` and 304 (RFC 9110 sections 8.8.3,
13.1.2 and 15.4.5).

A tag is opaque: a keyed BLAKE2b (the key derived from SECRET_KEY) of the request's path and
query and of whatever its answer is made of, so a tag from one URL never validates another
and nobody can tell from a tag what it was made from. Two kinds:

- A gallery page is tagged by what it is made of, before it is read: its gallery's version
  and the viewer's view (app/images/service.py). A service tags it through the route's
  `RevalidationDep` (`current`) and returns `NOT_MODIFIED` when the client's copy is
  current, before reading the page; the route answers `revalidation.answer(result)`.
- Other reads are tagged by their exact JSON bytes (`content`): the route's answer is
  serialised once, its bytes tagged and sent (or a 304 sent instead).
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import re
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from pydantic import TypeAdapter
from pydantic_core import to_json
from starlette.types import Scope

from app.state import app_state

T = TypeVar("T")

# RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, where etagc is any
# visible character but DQUOTE (obs-text included).
_ENTITY_TAG = re.compile(r'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
# Headers a 304 must repeat from the 200 it stands for (RFC 9110 section 15.4.5).
_REVALIDATION_HEADERS = ("ETag", "Cache-Control", "Vary")
# Set in a request's scope by a middleware that already found its `If-None-Match` stale
# (app/images/revalidation.py): the route then does not look again.
STALE_MARK = "gallery_api.if_none_match_stale"
# Clients may keep these answers but must ask again each time before using them.
CACHE_CONTROL_SHARED = "no-cache"
CACHE_CONTROL_PRIVATE = "private, no-cache"
# The OpenAPI answer every validated GET adds to its documented ones.
NOT_MODIFIED_RESPONSE: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: `If-None-Match` named the current `ETag`."}
}


class NotModified(enum.Enum):
    """What a service returns instead of an answer when the client's copy is current."""

    NOT_MODIFIED = "not_modified"


NOT_MODIFIED = NotModified.NOT_MODIFIED


def if_none_match_matches(header: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` value names `etag` (a strong tag, quotes included).

    Weak comparison, as section 13.1.2 asks: `W/"x"` matches `"x"`. `*` matches any current
    representation (callers only ask when there is one). A list matches when any member
    does; a malformed value matches nothing, so it costs a full answer, never a wrong 304.
    """
    if not header:
        return False
    if etag not in header:  # the common miss, without parsing
        return header.strip() == "*"
    position = 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            return False
        if match.group(1) == etag:
            return True
        position = match.end()
    return False


def request_target(scope: Scope) -> str:
    """The path and query a tag is bound to, as the app's router sees them."""
    query: bytes = scope.get("query_string", b"")
    path: str = scope["path"]
    return path + ("?" + query.decode("latin-1") if query else "")


def cache_headers(etag: str, *, private: bool, vary: bool) -> dict[str, str]:
    """The headers of a tagged answer, the same on its 200 and its 304."""
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL_PRIVATE if private else CACHE_CONTROL_SHARED,
    }
    if vary:
        headers["Vary"] = "Authorization"
    return headers


class EntityTags:
    """Makes the opaque tags; one per app, made by the lifespan from the secret key."""

    def __init__(self, secret: bytes) -> None:
        key = hashlib.blake2b(secret, person=b"gallery-etag", digest_size=32).digest()
        # Keyed once: every tag copies this state instead of keying BLAKE2b again.
        self._keyed = hashlib.blake2b(key=key, digest_size=16)

    def tag_body(self, target: str, body: bytes) -> str:
        """The strong ETag (quoted) of an answer's exact bytes at `target` (its path and
        query): equal bytes, equal tag, as a strong validator promises."""
        digest = self._keyed.copy()
        encoded = target.encode("utf-8", "surrogateescape")
        # Length-prefixed: no target and body can be read as another target and body.
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
        digest.update(body)
        return _quoted(digest.digest())

    def tag(self, *parts: object) -> str:
        """The strong ETag (quoted) of `parts`: ints, strings, datetimes, None, and tuples,
        lists, dicts or pydantic models of them. Their JSON (pydantic-core's serialiser,
        `repr` for anything it does not know) is what is hashed: for a 50-item page it costs
        about a third of what `repr` did."""
        digest = self._keyed.copy()
        digest.update(to_json(parts, fallback=repr))
        return _quoted(digest.digest())


def _quoted(digest: bytes) -> str:
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + '"'


@functools.cache
def _serialiser(model: Any) -> TypeAdapter[Any]:
    """One adapter per response model, made at its first answer (they are few and fixed)."""
    return TypeAdapter(model)


class Revalidation:
    """One GET's validator: tags its answer, sets the caching headers, and tells whether
    the client's copy (`If-None-Match`) is current."""

    __slots__ = ("_if_none_match", "_response", "_tags", "_target")

    def __init__(self, tags: EntityTags, request: Request, response: Response) -> None:
        self._tags = tags
        self._response = response
        # Several If-None-Match lines are one list (RFC 9110 section 5.3).
        values = request.headers.getlist("if-none-match")
        stale = request.scope.get(STALE_MARK, False)
        self._if_none_match = ", ".join(values) if values and not stale else None
        self._target = request_target(request.scope)

    @property
    def requested(self) -> bool:
        """Whether the client sent `If-None-Match` (that no middleware found stale)."""
        return self._if_none_match is not None

    def current(self, *parts: object, private: bool, vary: bool = True) -> bool:
        """Tag the answer with `parts` and this request's path and query, set its caching
        headers (`private` when the answer depends on who asks; `Vary: Authorization` when
        it may), and say whether the client's copy is the current one."""
        etag = self._tags.tag(self._target, *parts)
        self._response.headers.update(cache_headers(etag, private=private, vary=vary))
        return if_none_match_matches(self._if_none_match, etag)

    def content(self, content: object, model: Any, *, private: bool, vary: bool = True) -> Response:
        """`content` as the route's response `model` shows it (validated, reading attributes,
        and serialised as FastAPI does), tagged by its exact bytes; a 304 when the client has
        them. Serialised once: the tag is made from the body that is sent, not from a second
        rendering of the same data (for a 50-item page that was a tenth of the request)."""
        serialiser = _serialiser(model)
        value = serialiser.validate_python(content, from_attributes=True)
        body = serialiser.dump_json(value, by_alias=True)  # as FastAPI renders response models
        etag = self._tags.tag_body(self._target, body)
        headers = cache_headers(etag, private=private, vary=vary)
        if if_none_match_matches(self._if_none_match, etag):
            response = Response(status_code=304, headers=headers)
        else:
            response = Response(body, media_type="application/json", headers=headers)
        # Whatever other dependencies set on the injected response, as FastAPI would merge it.
        response.headers.raw.extend(self._response.headers.raw)
        return response

    def answer(self, result: T | NotModified) -> T | Response:
        """A service's answer as the route returns it: a 304 for `NOT_MODIFIED`."""
        return self.not_modified() if result is NOT_MODIFIED else result

    def not_modified(self) -> Response:
        """304 with no body and the caching headers the 200 would have had."""
        headers = self._response.headers
        return Response(
            status_code=304,
            headers={name: headers[name] for name in _REVALIDATION_HEADERS if name in headers},
        )


async def get_revalidation(request: Request, response: Response) -> Revalidation:
    # The state from the request, not a `StateDep` sub-dependency (see `app.db._request_session`).
    return Revalidation(app_state(request.app).entity_tags, request, response)


RevalidationDep = Annotated[Revalidation, Depends(get_revalidation)]
