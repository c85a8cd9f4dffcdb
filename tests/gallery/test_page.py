"""GET /u/{username}: the gallery page as a browser receives it, parsed as HTML."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.gallery.service import GALLERY_PAGE_SIZE
from app.images.models import Image
from app.state import app_state
from tests.support.helpers import PASSWORD, Account, sign_up, sign_up_admin


class Page(HTMLParser):
    """What a browser would load and show: elements with their attributes, the text, the
    inline styles, and every URL the page points at."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        elif data.strip():
            self.text.append(data.strip())

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.elements if name == tag]

    def urls(self) -> list[str]:
        return [
            value
            for _, attrs in self.elements
            for key, value in attrs.items()
            if key in ("src", "href", "action", "srcset") and value is not None
        ]


async def _store(
    app: FastAPI, owner: Account, titles: list[str | None], visibility: str = "public"
) -> list[int]:
    """Images stored directly (oldest first): the page is about showing, not checking."""
    async with app_state(app).sessionmaker() as session, session.begin():
        images = [
            Image(
                user_id=owner.id,
                image_url=f"http://127.0.0.1:9/{owner.id}/{visibility}/{n}.png",
                title=title,
                content_type="image/png",
                visibility=visibility,
            )
            for n, title in enumerate(titles)
        ]
        for image in images:
            session.add(image)
            await session.flush()  # one at a time: ids in the order given
        return [image.id for image in images]


def _assert_page_headers(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["img-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy
    assert "script-src" not in policy  # default-src 'none': no script at all
    assert response.headers["x-content-type-options"] == "nosniff"
    # The inline stylesheet is exactly the one the policy's hash allows.
    page = Page(response.text)
    assert len(page.styles) == 1
    digest = base64.b64encode(hashlib.sha256(page.styles[0].encode()).digest()).decode()
    assert directives["style-src"] == f"'sha256-{digest}'"
    assert not page.all("script")
    assert not page.all("link")  # no outside stylesheet, font or icon
    for url in page.urls():
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
    return response.text


async def test_gallery_page_shows_public_thumbnails_newest_first_with_titles(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    ids = await _store(app, alice, ["sunrise", None, "harbour"])
    await _store(app, alice, ["diary"], "private")
    response = await client.get("/u/alice")
    assert response.status_code == 200, response.text
    page = Page(_assert_page_headers(response))
    images = page.all("img")
    assert [image["alt"] for image in images] == ["harbour", "Untitled image", "sunrise"]
    expected_src = [f"/users/{alice.id}/images/{i}/thumbnail?size=256" for i in reversed(ids)]
    assert [image["src"] for image in images] == expected_src
    # Each thumbnail links to the original, served through the API.
    links = [attrs["href"] for attrs in page.all("a") if attrs.get("href", "").endswith("/raw")]
    assert links == [f"/users/{alice.id}/images/{i}/raw" for i in reversed(ids)]
    assert "alice\u2019s gallery" in page.text
    assert {"harbour", "Untitled", "sunrise"} <= set(page.text)
    assert "diary" not in response.text
    assert response.headers["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize("viewer", ["alice", "admin"])
async def test_owners_and_admins_see_no_private_images_on_the_page(
    app: FastAPI, client: httpx.AsyncClient, viewer: str
) -> None:
    accounts = {"alice": await sign_up(client, "alice"), "admin": await sign_up_admin(app, client)}
    await _store(app, accounts["alice"], ["shown"])
    await _store(app, accounts["alice"], ["diary entry"], "private")
    response = await client.get("/u/alice", headers=accounts[viewer].headers)
    assert response.status_code == 200
    assert [image["alt"] for image in Page(response.text).all("img")] == ["shown"]
    assert "diary entry" not in response.text
    assert "signature" not in response.text


async def test_titles_are_escaped_in_captions_and_alt_text(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    hostile = [
        '<img src=x onerror="alert(1)">',
        "\"><script>alert('x')</script>",
        "Tom & Jerry's {{ 7*7 }} {% raw %}",
    ]
    await _store(app, alice, hostile)
    response = await client.get("/u/alice")
    page = Page(_assert_page_headers(response))
    # The parser decodes entities: the alt text is each title exactly, as the browser shows it.
    assert [image["alt"] for image in page.all("img")] == list(reversed(hostile))
    assert len(page.all("img")) == 3  # no element smuggled in by a title
    assert not page.all("script")
    assert "49" not in page.text  # templates are not evaluated a second time


async def test_older_and_newest_links_page_through_the_gallery(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    titles = [f"picture {n}" for n in range(GALLERY_PAGE_SIZE + 2)]
    await _store(app, alice, titles)
    await _store(app, alice, ["secret"], "private")  # the newest, and never listed

    first = Page((await client.get("/u/alice")).text)
    shown = [image["alt"] for image in first.all("img")]
    assert shown == list(reversed(titles))[:GALLERY_PAGE_SIZE]
    older = [a for a in first.all("a") if a.get("rel") == "next"]
    assert len(older) == 1
    assert "Newest" not in first.text

    second_response = await client.get(str(older[0]["href"]))
    assert second_response.status_code == 200
    second = Page(_assert_page_headers(second_response))
    assert [image["alt"] for image in second.all("img")] == ["picture 1", "picture 0"]
    assert not [a for a in second.all("a") if a.get("rel") == "next"]
    assert "Newest" in second.text
    assert [a["href"] for a in second.all("a") if a["href"].startswith("/u/")] == ["/u/alice"]


async def test_the_api_and_the_page_share_their_cursors(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    await _store(app, alice, ["one", "two", "three"])
    listing = await client.get(f"/users/{alice.id}/images", params={"limit": 1})
    cursor = listing.json()["next_cursor"]
    page = Page((await client.get("/u/alice", params={"cursor": cursor})).text)
    assert [image["alt"] for image in page.all("img")] == ["two", "one"]


async def test_unknown_users_get_a_404_page(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    for name in ("nobody", "al", "a" * 151, '"><svg onload=alert(1)>', "alice%00", "%00", "ali ce"):
        response = await client.get(f"/u/{name}")
        assert response.status_code == 404, name
        page = Page(_assert_page_headers(response))
        assert "No gallery here" in page.text
        assert "svg" not in response.text
        assert response.headers["cache-control"] == "no-store"


async def test_usernames_are_matched_as_registration_compares_them(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    zoe = await sign_up(client, "Zoë")
    await _store(app, zoe, ["canal"])
    profile = (await client.get(f"/users/{zoe.id}")).json()
    assert profile["gallery_url"] == "/u/Zo%C3%AB"
    for path in (profile["gallery_url"], "/u/zoë", "/u/ZOË", "/u/Zoe\u0308"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert [image["alt"] for image in Page(response.text).all("img")] == ["canal"]


async def test_bad_cursors_get_an_html_page_that_leads_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    await _store(app, alice, ["a1", "a2"])
    await _store(app, bob, ["b1", "b2"])
    bobs_cursor = (await client.get(f"/users/{bob.id}/images", params={"limit": 1})).json()[
        "next_cursor"
    ]
    users_cursor = (await client.get("/users", params={"limit": 1})).json()["next_cursor"]
    for cursor in (bobs_cursor, users_cursor, "not-a-cursor", "%ff", "A" * 5000, "\x00"):
        response = await client.get("/u/alice", params={"cursor": cursor})
        assert response.status_code == 422, cursor
        page = Page(_assert_page_headers(response))
        assert "This link does not work" in page.text
        assert [a["href"] for a in page.all("a")] == ["/u/alice"]


async def test_an_empty_gallery_says_so(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    response = await client.get("/u/alice")
    assert response.status_code == 200
    page = Page(_assert_page_headers(response))
    assert "No public images yet." in page.text
    assert not page.all("img")


async def test_profiles_link_to_the_gallery_page(client: httpx.AsyncClient) -> None:
    alice = await sign_up(client, "alice")
    assert (await client.get(f"/users/{alice.id}")).json()["gallery_url"] == "/u/alice"
    me = await client.get("/users/me", headers=alice.headers)
    assert me.json()["gallery_url"] == "/u/alice"
    odd_name = "x.y@z+w-_"
    registered = await client.post(
        "/accounts/register",
        json={
            "username": odd_name,
            "email": "odd@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )
    assert registered.status_code == 201, registered.text
    listing = (await client.get("/users")).json()["items"]
    assert [user["gallery_url"] for user in listing] == ["/u/alice", "/u/x.y%40z%2Bw-_"]
    page = await client.get(listing[1]["gallery_url"])
    assert page.status_code == 200
    assert f"{odd_name}\u2019s gallery" in Page(page.text).text


async def test_broken_links_carry_a_visible_marker_from_their_link_health(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await sign_up(client, "alice")
    _, failing, broken = await _store(app, alice, ["fine", "wobbly", "gone"])
    async with app_state(app).sessionmaker() as session, session.begin():
        for image_id, status, failures in ((failing, "failing", 1), (broken, "broken", 3)):
            await session.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(status=status, failure_count=failures, last_error="image_url_bad_status")
            )
    response = await client.get("/u/alice")
    assert response.status_code == 200
    _assert_page_headers(response)  # the marker's style is inside the hashed stylesheet
    figures = {}
    for chunk in response.text.split("<figure>")[1:]:
        figure = Page(chunk.split("</figure>")[0])
        figures[figure.all("img")[0]["alt"]] = figure
    assert set(figures) == {"fine", "wobbly", "gone"}
    marker = figures["gone"].all("span")
    assert [attrs.get("class") for attrs in marker] == ["broken"]
    assert "Broken link" in figures["gone"].text
    # Only `broken` is marked: a link that failed once may be back tomorrow.
    for title in ("fine", "wobbly"):
        assert not figures[title].all("span"), title
        assert "Broken link" not in figures[title].text
    assert response.text.count("Broken link") == 1
