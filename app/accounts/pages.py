"""The pages for the mailed links, served by the app itself at the paths the mails use
(`/reset-password`, `/verify-registration`, `/verify-email`), so that the default
FRONTEND_URL works with no front end deployed.

Each page is static HTML from a Jinja2 template plus one script and one stylesheet from this
package: no third-party asset, no inline script, under a CSP that allows nothing else. The
page never reads the token on the server: a GET, which mail scanners send to every link they
see, changes nothing. The script takes the token out of the address bar at once and spends it
only on the user's click, through the same JSON API any client uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from app.errors import NotFound

ASSETS_PATH = "/pages/assets"
_STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {"pages.js": _STATIC / "pages.js", "pages.css": _STATIC / "pages.css"}

# Scripts, styles and API calls from our own origin only; no inline script or style, no
# plugins, no frames, no <base>. form-action 'none': should the script not run, a form
# cannot be sent natively (which would put a password in a URL).
PAGES_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# The token is in the URL when the page loads: no cache may keep the page or its address.
PAGE_HEADERS = {"Content-Security-Policy": PAGES_CSP, "Cache-Control": "no-store"}

PageName = Literal["reset-password", "verify-registration", "verify-email"]
_TITLES: dict[PageName, str] = {
    "reset-password": "Choose a new password",
    "verify-registration": "Confirm your account",
    "verify-email": "Confirm your new email address",
}


def create_page_templates() -> Environment:
    return Environment(
        loader=PackageLoader("app.accounts", "templates/pages"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def pages_router() -> APIRouter:
    """Routes for the three pages and their two assets (an allow-list, nothing else)."""
    missing = [str(path) for path in _ASSETS.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"page assets missing: {', '.join(missing)}")
    templates = create_page_templates()
    router = APIRouter(include_in_schema=False)

    def render(request: Request, page: PageName) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = templates.get_template(f"{page}.html").render(
            page=page, title=_TITLES[page], root=root, assets=root + ASSETS_PATH
        )
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @router.get("/reset-password")
    async def reset_password_page(request: Request) -> HTMLResponse:
        return render(request, "reset-password")

    @router.get("/verify-registration")
    async def verify_registration_page(request: Request) -> HTMLResponse:
        return render(request, "verify-registration")

    @router.get("/verify-email")
    async def verify_email_page(request: Request) -> HTMLResponse:
        return render(request, "verify-email")

    @router.get(ASSETS_PATH + "/{name}")
    async def page_asset(name: str) -> FileResponse:
        path = _ASSETS.get(name)
        if path is None:
            raise NotFound("No such page asset.")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    return router
