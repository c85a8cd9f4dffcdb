"""Galleries: who may add, change and remove images, and how they are listed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.db import MAX_ID, end_read_transaction, utcnow
from app.images.checker import CheckedImage, ImageChecker
from app.images.errors import ImageChanged, ImageDuplicate, ImageNotFound, NotGalleryOwner
from app.images.models import Image
from app.images.schemas import ImageCreate, ImageUpdate
from app.images.url_guard import normalise_image_url
from app.pagination import CursorCodec, Listing, PageParams, keyset, paginate
from app.users.errors import UserNotFound
from app.users.models import User
from app.users.service import ensure_user_exists


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
_ALL_IMAGES = keyset(select(*_images), id_column=_images.id, newest_first=True)


async def list_user_images(
    session: AsyncSession, cursors: CursorCodec, user_id: int, page: PageParams
) -> Listing[dict[str, Any]]:
    """A user's images, newest first."""
    images = await paginate(
        session,
        _GALLERY,
        {"owner_id": user_id},
        listing=f"user-images:{user_id}",
        cursors=cursors,
        page=page,
    )
    # A page with images proves the owner exists (the foreign key): only an empty page
    # needs the second lookup that tells an empty gallery from a missing user.
    if not images.items:
        await ensure_user_exists(session, user_id)
    return images


async def list_all_images(
    session: AsyncSession, cursors: CursorCodec, page: PageParams, user_id: int | None
) -> Listing[dict[str, Any]]:
    """Every image, newest first, optionally only one user's (for admins)."""
    return await paginate(
        session,
        _ALL_IMAGES if user_id is None else _GALLERY,
        {} if user_id is None else {"owner_id": user_id},
        listing=f"images:{user_id}",
        cursors=cursors,
        page=page,
    )


# Reading one image by id is the commonest call: a statement built once (bound parameters)
# skips rebuilding and re-keying the same SQL on every request.
_ONE_IMAGE = select(*_images).where(
    _images.id == bindparam("image_id"), _images.user_id == bindparam("user_id")
)


async def read_user_image(session: AsyncSession, user_id: int, image_id: int) -> dict[str, Any]:
    """One image of a user's gallery, as a row to show; `ImageNotFound` also when it is
    someone else's."""
    row = None
    if 0 < image_id <= MAX_ID and 0 < user_id <= MAX_ID:
        result = await session.execute(_ONE_IMAGE, {"image_id": image_id, "user_id": user_id})
        row = result.mappings().one_or_none()
    if row is None:
        await ensure_user_exists(session, user_id)
        raise ImageNotFound()
    return dict(row)


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


def _metadata(checked: CheckedImage) -> dict[str, object]:
    """The image columns a URL check fills in."""
    return {
        "image_url": checked.url,
        "content_type": checked.content_type,
        "size_bytes": checked.size_bytes,
        "width": checked.width,
        "height": checked.height,
        "checked_at": checked.checked_at,
    }


async def create_image(
    session: AsyncSession, checker: ImageChecker, gallery: EditableGallery, data: ImageCreate
) -> Image:
    """Check the URL, then add it to the gallery."""
    user_id = gallery.owner_id
    if not gallery.edited_by_owner:
        # An owner's row was just read by the authentication in this same transaction; only
        # an admin adding to another gallery needs the lookup. A deletion during the check
        # is still caught by the foreign key at the insert.
        await ensure_user_exists(session, user_id)
    url = str(normalise_image_url(data.image_url))
    if await _url_in_gallery(session, user_id, url):
        raise ImageDuplicate()
    await end_read_transaction(session)
    checked = await checker.check(url)
    image = Image(user_id=user_id, title=data.title, **_metadata(checked))
    session.add(image)
    await _flush_image(session)
    return image


async def update_image(
    session: AsyncSession,
    checker: ImageChecker,
    gallery: EditableGallery,
    image_id: int,
    changes: ImageUpdate,
) -> Image:
    """Change the title and/or the URL; a new URL is checked like a new image."""
    user_id = gallery.owner_id
    image = await get_user_image(session, user_id, image_id)
    fields = changes.model_dump(exclude_unset=True)
    if fields.get("image_url") is not None:
        url = str(normalise_image_url(fields["image_url"]))
        if url != image.image_url:
            if await _url_in_gallery(session, user_id, url):
                raise ImageDuplicate()
            await end_read_transaction(session)
            checked = await checker.check(url)
            for name, value in _metadata(checked).items():
                setattr(image, name, value)
    if "title" in fields:
        image.title = fields["title"]
    image.updated_at = utcnow()
    await _flush_image(session)
    return image


async def recheck_image(
    session: AsyncSession, checker: ImageChecker, gallery: EditableGallery, image_id: int
) -> Image:
    """Check the image's URL again and store what the check found. A failed check raises
    its error and changes nothing."""
    user_id = gallery.owner_id
    image = await get_user_image(session, user_id, image_id)
    checked_url = image.image_url
    await end_read_transaction(session)
    checked = await checker.check(checked_url)
    values = _metadata(checked)
    del values["image_url"]  # the URL stays as stored, even if it is spelt differently now
    # Written only if the URL is still the one checked: a PATCH that changed it meanwhile
    # stored its own check's results, which these must not overwrite.
    result = await session.execute(
        update(Image)
        .where(Image.id == image_id, Image.image_url == checked_url)
        .values(**values, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        await get_user_image(session, user_id, image_id)  # ImageNotFound when it was deleted
        raise ImageChanged()
    await session.refresh(image)
    return image


async def delete_image(session: AsyncSession, gallery: EditableGallery, image_id: int) -> None:
    """Remove one image from a gallery."""
    image = await get_user_image(session, gallery.owner_id, image_id)
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
            select(Image.id)
            .where(Image.id <= last_id)
            .order_by(Image.id)
            .limit(batch_size)
            .scalar_subquery()
        )
        result = await session.execute(
            delete(Image).where(Image.id.in_(batch)),
            execution_options={"synchronize_session": False},
        )
        await session.commit()
        count = int(getattr(result, "rowcount", 0))
        if count == 0:
            break
        deleted += count
    return deleted
