"""The gallery's HTML: Jinja2 templates (autoescaped), one stylesheet inlined under a strict CSP.

The page loads nothing but its own thumbnails: no script, no third-party asset, no font.
Its one inline stylesheet is allowed by its SHA-256 hash, so the policy needs neither
`'unsafe-inline'` nor a second request.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from app.gallery.service import GalleryPage
from app.users.schemas import gallery_path

# The page is public data that changes when images are added: a short shared cache.
_CACHE_CONTROL = "public, max-age=60"


class GalleryPages:
    """Renders the gallery page and its error pages; made once in the lifespan."""

    def __init__(self) -> None:
        self._templates = Environment(
            loader=PackageLoader("app.gallery", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        css = (resources.files("app.gallery") / "static" / "gallery.css").read_text("utf-8")
        self._css = Markup(css)  # noqa: S704 (our own stylesheet, from the package)
        css_hash = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        self.content_security_policy = (
            f"default-src 'none'; img-src 'self'; style-src 'sha256-{css_hash}'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )

    def _response(self, template: str, status_code: int, **context: object) -> HTMLResponse:
        body = self._templates.get_template(template).render(css=self._css, **context)
        return HTMLResponse(
            body,
            status_code=status_code,
            headers={
                "Content-Security-Policy": self.content_security_policy,
                "Cache-Control": _CACHE_CONTROL if status_code == 200 else "no-store",
            },
        )

    def gallery(self, page: GalleryPage) -> HTMLResponse:
        """One page of a gallery, with its Newest and Older links."""
        path = gallery_path(page.username)
        older = f"{path}?{urlencode({'cursor': page.older_cursor})}" if page.older_cursor else None
        return self._response("gallery.html", 200, page=page, newest_url=path, older_url=older)

    def user_not_found(self) -> HTMLResponse:
        """The 404 page of a gallery that does not exist."""
        return self._response(
            "message.html",
            404,
            heading="No gallery here",
            message="There is no user with this name.",
            link=None,
            link_text=None,
        )

    def invalid_cursor(self, username: str) -> HTMLResponse:
        """The page for an "Older" link that is not one of this gallery's."""
        return self._response(
            "message.html",
            422,
            heading="This link does not work",
            message="The link to older images is not valid for this gallery.",
            link=gallery_path(username),
            link_text="Go to the newest images",
        )
