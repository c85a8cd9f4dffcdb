"""The URLs browsers load an image's bytes from: plain paths for public images, expiring
signed ones for private images, so an `<img>` tag works without a bearer header.

A signature is an HMAC-SHA256, under a key derived from SECRET_KEY for this purpose only,
of the image (owner, id and creation time), the variant (`raw` or `thumbnail:<size>`) and the
expiry: it opens that one variant of that one image until then, and nothing else.

Expiries are rounded to windows of a quarter of MEDIA_URL_EXPIRE_SECONDS: every URL issued in
the same window is the same string, so a browser's cache keeps serving it and a listing's
answer stays byte-identical for that long. A URL therefore lives between 3/4 of
MEDIA_URL_EXPIRE_SECONDS and all of it, never longer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from app.images.visibility import Visibility

# The size of the `thumbnail_url` every image answer carries (the gallery page's grid size).
THUMBNAIL_URL_SIZE = 256
# The key for media URLs is derived with this label: a signature made for anything else
# under the same SECRET_KEY (a cursor, a token) can never pass as one of these.
_KEY_PURPOSE = b"gallery-api media-url signature v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Longest strings worth decoding: a real expiry has 10-11 digits, a signature 43 characters.
_MAX_EXPIRES_LENGTH = 20
_MAX_SIGNATURE_LENGTH = 64


@dataclass(frozen=True, slots=True)
class MediaVariant:
    """Which bytes of an image a media request asks for: the original, or a thumbnail of
    `size` pixels. A signature opens exactly one variant."""

    kind: Literal["raw", "thumbnail"]
    size: int | None = None

    @classmethod
    def raw(cls) -> MediaVariant:
        return cls("raw")

    @classmethod
    def thumbnail(cls, size: int) -> MediaVariant:
        return cls("thumbnail", size)

    @property
    def label(self) -> str:
        """The variant as signatures spell it: `raw`, `thumbnail:256`."""
        return self.kind if self.size is None else f"{self.kind}:{self.size}"


@dataclass(frozen=True, slots=True)
class MediaSubject:
    """What a signature is bound to besides the variant: the image's owner, id and creation
    time. The creation time keeps a URL of a deleted image from opening a later image that
    SQLite gives the same id."""

    user_id: int
    image_id: int
    created_at: datetime

    @classmethod
    def of(cls, image: Any) -> MediaSubject:
        """The subject of an `Image` or of a row with its `user_id`, `id` and `created_at`."""
        if isinstance(image, Mapping):
            return cls(image["user_id"], image["id"], image["created_at"])
        return cls(image.user_id, image.id, image.created_at)


class MediaSigner:
    """Signs and verifies media URLs; made once in the lifespan from the secret key."""

    def __init__(
        self,
        secret_key: str,
        expire_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = hmac.new(secret_key.encode(), _KEY_PURPOSE, hashlib.sha256).digest()
        # Keyed once: each signature copies this state instead of keying HMAC again.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self.expire_seconds = expire_seconds
        self._window = max(1, expire_seconds // 4)
        self._clock = clock

    def now(self) -> int:
        """The current time in whole seconds since the epoch, as signatures count it."""
        return int(self._clock())

    def expiry(self, now: int | None = None) -> int:
        """When a URL issued now expires: the same value for a whole window."""
        issued = self.now() if now is None else now
        return issued - issued % self._window + self.expire_seconds

    def signature(self, subject: MediaSubject, variant: MediaVariant, expires: int) -> str:
        """The signature of `variant` of `subject`, valid until `expires`."""
        return self.signatures(subject, (variant,), expires)[0]

    def signatures(
        self, subject: MediaSubject, variants: Iterable[MediaVariant], expires: int
    ) -> list[str]:
        """The signatures of several variants of one subject, valid until `expires`."""
        created = (subject.created_at - _EPOCH) // _MICROSECOND
        prefix = f"{subject.user_id}\n{subject.image_id}\n{created}\n"
        signed = []
        for variant in variants:
            mac = self._keyed.copy()
            mac.update(f"{prefix}{variant.label}\n{expires}".encode())
            signed.append(base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode())
        return signed

    def verify(
        self,
        subject: MediaSubject,
        variant: MediaVariant,
        expires: str | None,
        signature: str | None,
        *,
        now: int | None = None,
    ) -> bool:
        """Whether `signature` opens `variant` of `subject` now.

        Refused: a missing, malformed or edited value; an expiry passed, or further ahead
        than MEDIA_URL_EXPIRE_SECONDS allows (a URL signed before the setting was lowered
        lives no longer than the new setting); a signature for another image or variant.
        """
        if not expires or not signature:
            return False
        if len(expires) > _MAX_EXPIRES_LENGTH or len(signature) > _MAX_SIGNATURE_LENGTH:
            return False
        # Only the canonical spelling (ASCII digits, no leading zero) is a valid expiry.
        if not (expires.isascii() and expires.isdigit()) or expires.startswith("0"):
            return False
        expires_at = int(expires)
        current = self.now() if now is None else now
        if not current < expires_at <= current + self.expire_seconds:
            return False
        expected = self.signature(subject, variant, expires_at)
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


# What an image answer signs for a private image: its `thumbnail_url` and its `raw_url`.
_SIGNED_VARIANTS = (MediaVariant.thumbnail(THUMBNAIL_URL_SIZE), MediaVariant.raw())


class MediaUrls:
    """The `thumbnail_url` and `raw_url` of image answers."""

    def __init__(self, signer: MediaSigner) -> None:
        self.signer = signer

    def for_image(self, image: Mapping[str, Any], *, expires: int | None = None) -> dict[str, str]:
        """`thumbnail_url` and `raw_url` of one image row (it needs `id`, `user_id`,
        `created_at` and `visibility`). Pass `expires` to sign a whole page with one expiry."""
        base = f"/users/{image['user_id']}/images/{image['id']}"
        thumbnail_url = f"{base}/thumbnail?size={THUMBNAIL_URL_SIZE}"
        raw_url = f"{base}/raw"
        if image["visibility"] != Visibility.PUBLIC:
            expiry = self.signer.expiry() if expires is None else expires
            thumbnail, raw = self.signer.signatures(
                MediaSubject.of(image), _SIGNED_VARIANTS, expiry
            )
            # Digits and base64url only: nothing here needs percent-encoding.
            thumbnail_url += f"&expires={expiry}&signature={thumbnail}"
            raw_url += f"?expires={expiry}&signature={raw}"
        return {"thumbnail_url": thumbnail_url, "raw_url": raw_url}

    def attach(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add both URLs to each row, in place (one expiry for the whole page)."""
        expires = self.signer.expiry()
        for row in rows:
            row.update(self.for_image(row, expires=expires))
