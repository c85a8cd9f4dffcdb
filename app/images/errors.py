"""What can go wrong with an image: a missing one, a duplicate, a gallery one may not edit,
and why a URL was refused (every error the URL check can raise, in one place)."""

from __future__ import annotations

from fastapi import status

from app.errors import AppError, Conflict, Forbidden, InvalidInput, NotFound


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


class ImageUpstreamUnavailable(AppError):
    """The image's host did not deliver its bytes when they were needed (for the proxy or a
    thumbnail): unreachable, an error status, a refused address, or no longer an image."""

    status_code = status.HTTP_502_BAD_GATEWAY
    code = "image_upstream_unavailable"
    detail = "The image's host did not deliver the image; try again later."


class ImageTooLarge(InvalidInput):
    code = "image_too_large"
    detail = "The image has too many bytes or pixels to be served or made into a thumbnail."


class ImageUndecodable(InvalidInput):
    code = "image_undecodable"
    detail = "The image's bytes could not be decoded."


class ThumbnailSizeInvalid(InvalidInput):
    code = "thumbnail_size_invalid"
    detail = "This thumbnail size is not offered."
