"""One URL, normalised once: a create parses and judges the user's URL once, and the checker
takes the result as it is; a stored URL given as a string is normalised by the checker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.images import checker as checker_module
from app.images import service as service_module
from app.images import url_guard
from app.images.url_guard import normalise_image_url
from app.state import app_state
from tests.support.helpers import sign_up
from tests.support.image_host import ImageHost


def _count_normalisations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(raw: str) -> url_guard.NormalisedUrl:
        calls.append(raw)
        return normalise_image_url(raw)

    monkeypatch.setattr(service_module, "normalise_image_url", counting)
    monkeypatch.setattr(checker_module, "normalise_image_url", counting)
    return calls


async def test_a_create_normalises_the_url_once(
    app: Any, client: httpx.AsyncClient, image_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_normalisations(monkeypatch)
    owner = await sign_up(client, "once")
    url = image_host.url("/cat.png") + "#fragment"
    response = await client.post(
        f"/users/{owner.id}/images", json={"image_url": url}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["image_url"] == image_host.url("/cat.png")
    assert calls == [url]


async def test_a_stored_url_given_as_text_is_normalised_by_the_checker(
    app: Any, image_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_normalisations(monkeypatch)
    checker = app_state(app).image_checker
    checked = await checker.check(image_host.url("/cat.png"))
    assert checked.url == image_host.url("/cat.png")
    assert calls == [image_host.url("/cat.png")]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("http://a.example/x#", "http://a.example/x"),
        ("http://a.example/x#top", "http://a.example/x"),
        ("http://a.example/x?q=1#top", "http://a.example/x?q=1"),
        ("http://a.example/x", "http://a.example/x"),
        ("http://0177.0.0.1:80/#", "http://127.0.0.1/"),
    ],
)
def test_fragments_are_dropped_even_when_empty(raw: str, normalised: str) -> None:
    assert str(normalise_image_url(raw)) == normalised
