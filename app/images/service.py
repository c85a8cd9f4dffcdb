"""Galleries: who may add, change and remove images, and how they are listed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.db import MAX_ID, end_read_transaction, utcnow
from app.http_caching import NOT_MODIFIED, NotModified, Revalidation
from app.images.checker import CheckedImage, ImageChecker
from app.images.errors import (
    ImageChanged,
    ImageCheckFailed,
    ImageDuplicate,
    ImageHostBusy,
    ImageNotFound,
    NotGalleryOwner,
)
from app.images.link_health import (
    RecheckPolicy,
    checked_values,
    content_changed,
    failed_values,
    healthy_values,
)
from app.images.media_urls import MediaUrls
from app.images.models import IMAGE_STATUSES, Image
from app.images.schemas import ImageCreate, ImageUpdate
from app.images.thumbnails import invalidate_thumbnails
from app.images.url_guard import normalise_image_url
from app.images.visibility import Visibility, may_see_private_images
from app.pagination import (
    Keyset,
    Listing,
    PageParams,
    keyset,
    page_statement,
    paginate,
)
from app.users.errors import UserNotFound
from app.users.models import User
from app.users.service import (
    GALLERY_VERSION,
    ensure_user_exists,
    galleries_changed,
    gallery_version,
)


@dataclass(frozen=True)
class EditableGallery:
    """A gallery the caller may change (`images.dependencies.EditableGalleryDep` decides)."""

    owner_id: int
    # The owner's row was just read by the authentication in this same request.
    edited_by_owner: bool


def editable_gallery(actor: User, owner_id: int) -> EditableGallery:
    """Owners edit their own gallery; admins edit any; anyone else gets `NotGalleryOwner`."""
    if actor.id != owner_id and not actor.is_admin:
        raise NotGalleryOwner()
    return EditableGallery(owner_id=owner_id, edited_by_owner=actor.id == owner_id)


# Listings read plain rows of every column (what `ImageRead` shows) with Core, not ORM
# objects: the profile showed building and tracking 50 objects per page as a third of a
# page's CPU.
_images = Image.__table__.c


_GALLERY = keyset(
    select(*_images).where(_images.user_id == bindparam("owner_id")),
    id_column=_images.id,
    newest_first=True,
)
# A gallery page as `GET /users/{user_id}/images` reads it: each row also carries the
# gallery's version (an uncorrelated subquery, evaluated once per statement), so a full page
# costs one statement and its rows and its tag come from the same snapshot.
_VERSION_KEY = "gallery_version"
_VERSION_COLUMN = GALLERY_VERSION.scalar_subquery().label(_VERSION_KEY)


def _versioned(where: Any) -> Keyset:
    return keyset(
        select(*_images, _VERSION_COLUMN).where(*where),
        id_column=_images.id,
        newest_first=True,
    )


_OWNER = _images.user_id == bindparam("owner_id")
_PUBLIC = _images.visibility == Visibility.PUBLIC.value
_BY_STATUS = _images.status == bindparam("status")
# (sees private images, filters by status) -> the listing.
_VERSIONED_GALLERIES = {
    (True, False): _versioned((_OWNER,)),
    (False, False): _versioned((_OWNER, _PUBLIC)),
    (True, True): _versioned((_OWNER, _BY_STATUS)),
    (False, True): _versioned((_OWNER, _BY_STATUS, _PUBLIC)),
}
# What everyone but the owner and admins sees of a gallery (the (user_id, id) index still
# serves it, newest first).
PUBLIC_GALLERY = keyset(
    select(*_images).where(
        _images.user_id == bindparam("owner_id"), _images.visibility == Visibility.PUBLIC.value
    ),
    id_column=_images.id,
    newest_first=True,
)
_ALL_IMAGES = keyset(select(*_images), id_column=_images.id, newest_first=True)
# The status filter composes with visibility: a gallery by status, and its public part.
_GALLERY_BY_STATUS = keyset(
    select(*_images).where(
        _images.user_id == bindparam("owner_id"), _images.status == bindparam("status")
    ),
    id_column=_images.id,
    newest_first=True,
)
_PUBLIC_GALLERY_BY_STATUS = keyset(
    select(*_images).where(
        _images.user_id == bindparam("owner_id"),
        _images.status == bindparam("status"),
        _images.visibility == Visibility.PUBLIC.value,
    ),
    id_column=_images.id,
    newest_first=True,
)
# Served by the (status, id) index.
_ALL_IMAGES_BY_STATUS = keyset(
    select(*_images).where(_images.status == bindparam("status")),
    id_column=_images.id,
    newest_first=True,
)


def _status_filter(status: str | None) -> tuple[dict[str, Any], str]:
    """The query parameters and the cursor's listing suffix of a status filter: a cursor of
    one filter is refused by another."""
    if status is None:
        return {}, ""
    if status not in IMAGE_STATUSES:  # the router's validation already refused it
        raise ValueError(f"unknown image status {status!r}")
    return {"status": status}, f":{status}"


def gallery_listing(user_id: int) -> str:
    """The name a gallery's cursors are bound to (the API's listing and the gallery page)."""
    return f"user-images:{user_id}"


PUBLIC_VIEW = "public"


def _gallery_view(viewer: User | None, user_id: int) -> str:
    """Which of a gallery's answers `viewer` gets: part of its pages' tags, so a tag
    issued to the owner or an admin never validates the public view, nor the reverse."""
    if viewer is None or not may_see_private_images(viewer, user_id):
        return PUBLIC_VIEW
    return "owner" if viewer.id == user_id else "admin"


def gallery_tag_parts(version: int, view: str, window: int | None) -> tuple[object, ...]:
    """What a gallery page's tag is made of besides its URL (`app.images.revalidation`
    makes the same tags without a request)."""
    return (version, view, window)


def _gallery_is_current(
    revalidation: Revalidation,
    media_urls: MediaUrls,
    viewer: User | None,
    user_id: int,
    version: int,
) -> bool:
    """Tag a gallery page (the request's path and query carry the page, its size and its
    filter) and say whether the client's copy is current. A view with private images also
    depends on the window of their signed media URLs, read here before the page's URLs are
    signed, so a tag never promises URLs newer than the ones the client holds."""
    view = _gallery_view(viewer, user_id)
    window = media_urls.signer.expiry() if view != PUBLIC_VIEW else None
    parts = gallery_tag_parts(version, view, window)
    return revalidation.current(*parts, private=viewer is not None)


async def list_user_images(
    session: AsyncSession,
    media_urls: MediaUrls,
    revalidation: Revalidation,
    viewer: User | None,
    user_id: int,
    page: PageParams,
    status: str | None = None,
) -> Listing[dict[str, Any]] | NotModified:
    """A user's images, newest first: the private ones only for the owner and admins; only
    those with `status` when it is given. `NOT_MODIFIED` when the client's copy of the page
    is current, decided by one lookup of the gallery's version before any image is read."""
    if revalidation.requested:
        version = await gallery_version(session, user_id)
        if _gallery_is_current(revalidation, media_urls, viewer, user_id, version):
            return NOT_MODIFIED
    parameters, suffix = _status_filter(status)
    listing_query = _VERSIONED_GALLERIES[may_see_private_images(viewer, user_id), bool(status)]
    query = {"owner_id": user_id, **parameters}
    listing = gallery_listing(user_id) + suffix
    images = await paginate(session, listing_query, query, listing=listing, page=page)
    # A page with images proves the owner exists (the foreign key) and carries the version
    # read with it: only an empty page needs the lookup that tells an empty gallery from a
    # missing user.
    current: int | None
    if images.items:
        current = images.items[0][_VERSION_KEY]
        for row in images.items:
            del row[_VERSION_KEY]
    else:
        statement, values = page_statement(listing_query, query, listing=listing, page=page)
        current = await _empty_page_version(session, statement, values)
    if current is not None:
        _gallery_is_current(revalidation, media_urls, viewer, user_id, current)
    media_urls.attach(images.items)
    return images


async def _empty_page_version(
    session: AsyncSession, page: Select[Any], values: dict[str, Any]
) -> int | None:
    """The gallery's version for a page that came back empty, read with a second look at
    the page in the same statement: a write committed between the page and a plain version
    read would give the empty page the new version's tag, and every revalidation after it a
    304 for content the gallery no longer has. None when the page is no longer empty (the
    answer then goes out untagged; the next read tags it); `UserNotFound` without the user."""
    row = (
        await session.execute(
            select(User.__table__.c.gallery_version, page.exists()).where(
                User.__table__.c.id == bindparam("owner_id")
            ),
            values,
        )
    ).first()
    if row is None:
        raise UserNotFound()
    version, filled = row
    return None if filled else int(version)


async def list_all_images(
    session: AsyncSession,
    media_urls: MediaUrls,
    page: PageParams,
    user_id: int | None,
    status: str | None = None,
) -> Listing[dict[str, Any]]:
    """Every image, private ones included, newest first, optionally only one user's and
    only those with `status` (for admins)."""
    parameters, suffix = _status_filter(status)
    if user_id is None:
        listing_query = _ALL_IMAGES if status is None else _ALL_IMAGES_BY_STATUS
    else:
        listing_query = _GALLERY if status is None else _GALLERY_BY_STATUS
        parameters["owner_id"] = user_id
    images = await paginate(
        session,
        listing_query,
        parameters,
        listing=f"images:{user_id}{suffix}",
        page=page,
    )
    media_urls.attach(images.items)
    return images


# Reading one image by id is the commonest call: a statement built once (bound parameters)
# skips rebuilding and re-keying the same SQL on every request.
_ONE_IMAGE = select(*_images).where(
    _images.id == bindparam("image_id"), _images.user_id == bindparam("user_id")
)


async def read_user_image(
    session: AsyncSession,
    media_urls: MediaUrls,
    viewer: User | None,
    user_id: int,
    image_id: int,
) -> dict[str, Any]:
    """One image of a user's gallery, as a row to show; `ImageNotFound` also when it is
    someone else's, or private and `viewer` is neither its owner nor an admin."""
    row = None
    if 0 < image_id <= MAX_ID and 0 < user_id <= MAX_ID:
        result = await session.execute(_ONE_IMAGE, {"image_id": image_id, "user_id": user_id})
        row = result.mappings().one_or_none()
    if row is None or (
        row["visibility"] != Visibility.PUBLIC and not may_see_private_images(viewer, user_id)
    ):
        await ensure_user_exists(session, user_id)
        raise ImageNotFound()
    return image_answer(media_urls, dict(row))


def image_answer(media_urls: MediaUrls, image: Image | Mapping[str, Any]) -> dict[str, Any]:
    """An image (an `Image` or a row of all its columns) as `ImageRead` shows it: its
    columns and its media URLs."""
    if isinstance(image, Image):
        row = {column.key: getattr(image, column.key) for column in _images}
    else:
        row = dict(image)
    row.update(media_urls.for_image(row))
    return row


async def get_user_image(session: AsyncSession, user_id: int, image_id: int) -> Image:
    """One image of a user's gallery, loaded to be changed; `ImageNotFound` also when it is
    someone else's."""
    image = None
    if 0 < image_id <= MAX_ID and 0 < user_id <= MAX_ID:
        image = (
            await session.execute(
                select(Image).where(Image.id == image_id, Image.user_id == user_id)
            )
        ).scalar_one_or_none()
    if image is None:
        await ensure_user_exists(session, user_id)
        raise ImageNotFound()
    return image


async def _url_in_gallery(session: AsyncSession, user_id: int, url: str) -> bool:
    query = select(Image.id).where(Image.user_id == user_id, Image.image_url == url)
    return (await session.execute(query)).first() is not None


async def _flush_image(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        # The unique (user_id, image_url) constraint decides races between equal creates;
        # a foreign key failure means the owner was deleted while the URL was checked.
        if "image_url" in str(exc.orig):
            raise ImageDuplicate() from exc
        raise UserNotFound() from exc
    except StaleDataError as exc:
        raise ImageNotFound() from exc


def _new_link(checked: CheckedImage, policy: RecheckPolicy) -> dict[str, Any]:
    """The image columns of a URL that was just checked for the first time (a create or a
    URL change): its metadata, status ok, the next check one interval later."""
    return {
        "image_url": checked.url,
        **checked_values(checked),
        **healthy_values(policy, checked.checked_at),
        "content_changed_at": None,
    }


async def create_image(
    session: AsyncSession,
    checker: ImageChecker,
    policy: RecheckPolicy,
    media_urls: MediaUrls,
    gallery: EditableGallery,
    data: ImageCreate,
) -> dict[str, Any]:
    """Check the URL, then add it to the gallery."""
    user_id = gallery.owner_id
    if not gallery.edited_by_owner:
        # An owner's row was just read by the authentication in this same transaction; only
        # an admin adding to another gallery needs the lookup. A deletion during the check
        # is still caught by the foreign key at the insert.
        await ensure_user_exists(session, user_id)
    url = normalise_image_url(data.image_url)
    if await _url_in_gallery(session, user_id, str(url)):
        raise ImageDuplicate()
    await end_read_transaction(session)
    checked = await checker.check(url)
    image = Image(
        user_id=user_id,
        title=data.title,
        visibility=data.visibility.value,
        **_new_link(checked, policy),
    )
    await galleries_changed(session, (user_id,))  # before the image is written
    session.add(image)
    await _flush_image(session)
    return image_answer(media_urls, image)


async def update_image(
    session: AsyncSession,
    checker: ImageChecker,
    policy: RecheckPolicy,
    media_urls: MediaUrls,
    gallery: EditableGallery,
    image_id: int,
    changes: ImageUpdate,
) -> dict[str, Any]:
    """Change the title, the visibility and/or the URL; a new URL is checked like a new
    image."""
    user_id = gallery.owner_id
    image = await get_user_image(session, user_id, image_id)
    fields = changes.model_dump(exclude_unset=True)
    checked = None
    if fields.get("image_url") is not None:
        url = normalise_image_url(fields["image_url"])
        if str(url) != image.image_url:
            if await _url_in_gallery(session, user_id, str(url)):
                raise ImageDuplicate()
            await end_read_transaction(session)
            checked = await checker.check(url)
    await galleries_changed(session, (user_id,))  # before any image write
    if checked is not None:
        for name, value in _new_link(checked, policy).items():
            setattr(image, name, value)
        await invalidate_thumbnails(session, image.id)
    if "title" in fields:
        image.title = fields["title"]
    if changes.visibility is not None:
        image.visibility = changes.visibility.value
    image.updated_at = utcnow()
    await _flush_image(session)
    return image_answer(media_urls, image)


async def recheck_image(
    session: AsyncSession,
    checker: ImageChecker,
    policy: RecheckPolicy,
    media_urls: MediaUrls,
    gallery: EditableGallery,
    image_id: int,
) -> dict[str, Any]:
    """Check the image's URL again and store what the check found. It counts as a check of
    the schedule: a success makes the image ok, and new bytes set `content_changed_at` and
    drop its thumbnails (made again from the new bytes); a failure raises its error after
    storing one more failure (status, `failure_count`, `last_error`), the metadata kept as
    it was."""
    user_id = gallery.owner_id
    image = await get_user_image(session, user_id, image_id)
    checked_url = image.image_url
    stored_fingerprint = image.fingerprint
    failure_count = image.failure_count
    await end_read_transaction(session)
    # Written only if the URL is still the one checked: a PATCH that changed it meanwhile
    # stored its own check's results, which these must not overwrite.
    guarded = (
        update(Image)
        .where(Image.id == image_id, Image.image_url == checked_url)
        .execution_options(synchronize_session=False)
    )
    try:
        checked = await checker.check(checked_url)
    except ImageHostBusy:
        raise  # the host asked to wait: no failure of the image's
    except ImageCheckFailed as exc:
        now = utcnow()
        await galleries_changed(session, (user_id,))  # before the image is written
        await session.execute(
            guarded.values(
                **failed_values(policy, now, failure_count + 1, exc.code), updated_at=now
            )
        )
        # The request answers the error, so the session will roll back: the failure is
        # committed here, on its own, as the scheduled recheck would have stored it.
        await session.commit()
        raise
    now = utcnow()
    values = {**checked_values(checked), **healthy_values(policy, now), "updated_at": now}
    changed = content_changed(stored_fingerprint, checked)
    if changed:
        values["content_changed_at"] = now
    # Before the image is written; undone with the rest when the image changed meanwhile.
    await galleries_changed(session, (user_id,))
    result = await session.execute(guarded.values(**values))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        await get_user_image(session, user_id, image_id)  # ImageNotFound when it was deleted
        raise ImageChanged()
    if changed:
        # Thumbnails of the old bytes go in the same transaction as the new metadata.
        await invalidate_thumbnails(session, image_id)
    await session.refresh(image)
    return image_answer(media_urls, image)


@dataclass(frozen=True, slots=True)
class LinkHealthSummary:
    """Images per status, how many are due for a check, and how long the oldest has been."""

    ok: int
    failing: int
    broken: int
    due: int
    oldest_due_seconds: float


async def link_health_summary(session: AsyncSession) -> LinkHealthSummary:
    """The link health of every stored image (for admins and the metrics)."""
    now = utcnow()
    counts = dict(
        (await session.execute(select(Image.status, func.count()).group_by(Image.status))).all()
    )
    due, oldest_due = (
        await session.execute(
            select(func.count(), func.min(Image.due_at)).where(Image.due_at <= now)
        )
    ).one()
    return LinkHealthSummary(
        ok=counts.get("ok", 0),
        failing=counts.get("failing", 0),
        broken=counts.get("broken", 0),
        due=due,
        oldest_due_seconds=(
            round(max((now - oldest_due).total_seconds(), 0.0), 3) if oldest_due else 0.0
        ),
    )


async def delete_image(session: AsyncSession, gallery: EditableGallery, image_id: int) -> None:
    """Remove one image from a gallery."""
    image = await get_user_image(session, gallery.owner_id, image_id)
    await galleries_changed(session, (gallery.owner_id,))  # before the image is deleted
    await session.delete(image)
    await session.flush()


# Rows per DELETE in `delete_all_images`: about 50 ms each on PostgreSQL on a small machine.
DELETE_BATCH_SIZE = 5000


async def delete_all_images(session: AsyncSession, *, batch_size: int = DELETE_BATCH_SIZE) -> int:
    """Remove every image that exists when the call starts (admins); returns how many.

    Deliberately not one transaction: the images go in batches of `batch_size` by id, each
    committed on its own. One DELETE of a million rows holds its locks (SQLite: the database's
    write lock) and a growing transaction for tens of seconds, blocks every write to the table
    meanwhile and loses all its work on a timeout. Batches keep each lock short, so galleries
    stay readable and writable throughout. If the call fails part-way the images deleted so
    far stay deleted; calling it again finishes the job. Images added after the call started
    (higher ids) are kept, which also guarantees the loop ends under concurrent uploads.
    """
    last_id = (await session.execute(select(func.max(Image.id)))).scalar_one_or_none()
    await end_read_transaction(session)
    deleted = 0
    while last_id is not None:
        batch = (
            await session.execute(
                select(Image.id, Image.user_id)
                .where(Image.id <= last_id)
                .order_by(Image.id)
                .limit(batch_size)
            )
        ).all()
        if not batch:
            break
        # The batch's galleries' versions first (the lock order of every gallery write),
        # then its images, in one transaction: a reader never sees them gone under old tags.
        await galleries_changed(session, (row.user_id for row in batch))
        result = await session.execute(
            delete(Image).where(Image.id.in_([row.id for row in batch])),
            execution_options={"synchronize_session": False},
        )
        await session.commit()
        deleted += int(getattr(result, "rowcount", 0))
    return deleted
