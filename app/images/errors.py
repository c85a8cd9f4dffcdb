"""What can go wrong with an image: a missing one, a duplicate, a gallery one may not edit,
and why a URL was refused (every error the URL check can raise, in one place)."""

from __future__ import annotations

from app.errors import Conflict, Forbidden, InvalidInput, NotFound


class ImageNotFound(NotFound):
    code = "image_not_found"
    detail = "This gallery has no image with this id."


class ImageDuplicate(Conflict):
    code = "image_duplicate"
    detail = "This image URL is already in the gallery."


class ImageChanged(Conflict):
    code = "image_changed"
    detail = "The image's URL changed while it was being checked; try again."


class NotGalleryOwner(Forbidden):
    code = "forbidden"
    detail = "Only the gallery's owner or an admin may change it."


class ImageCheckFailed(InvalidInput):
    """The URL is not an image we can keep; `code` says why. Details never name the
    addresses the server resolved: a caller learns what to fix, not what is inside."""

    code = "image_url_invalid"


class ImageUrlInvalid(ImageCheckFailed):
    code = "image_url_invalid"
    detail = "The image URL must be an absolute http or https URL with a host name."


class ImageUrlForbidden(ImageCheckFailed):
    code = "image_url_forbidden"
    detail = (
        "The image URL points to a private, local or reserved network address;"
        " use a publicly reachable address."
    )


class ImageUrlUnreachable(ImageCheckFailed):
    code = "image_url_unreachable"
    detail = "The image URL could not be reached in time; check the address and try again."


class ImageUrlBadStatus(ImageCheckFailed):
    code = "image_url_bad_status"
    detail = "The image URL did not answer with success."


class ImageUrlNotImage(ImageCheckFailed):
    code = "image_url_not_image"
    detail = "The URL does not point to an image of an allowed type."


class ImageUrlTooManyRedirects(ImageCheckFailed):
    code = "image_url_too_many_redirects"
    detail = "The image URL redirects in a loop or too many times; use the final address."


IMAGE_CHECK_ERRORS: tuple[type[ImageCheckFailed], ...] = (
    ImageUrlInvalid,
    ImageUrlForbidden,
    ImageUrlUnreachable,
    ImageUrlBadStatus,
    ImageUrlNotImage,
    ImageUrlTooManyRedirects,
)
