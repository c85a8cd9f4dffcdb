"""The pure parts of conditional reads: `If-None-Match` as RFC 9110 section 13.1.2 reads it,
and opaque tags."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.http_caching import EntityTags, if_none_match_matches
from app.main import create_app

TAG = '"abc-_9"'


@pytest.mark.parametrize(
    "header",
    [
        TAG,
        f"W/{TAG}",
        f'"other", {TAG}',
        f'"other",{TAG} , "third"',
        f'W/"other", W/{TAG}',
        "*",
        " * ",
    ],
)
def test_if_none_match_names_the_tag(header: str) -> None:
    assert if_none_match_matches(header, TAG)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        '"abc-_"',  # a prefix of the tag
        '"abc-_9x"',  # the tag is a prefix
        "abc-_9",  # unquoted
        f"w/{TAG}",  # the weak prefix is case-sensitive
        f"{TAG[:-1]}",  # unterminated
        f'"x" {TAG}',  # no comma between members
        f"*, {TAG}",  # `*` is only ever alone
        f'"a"b, {TAG}',  # a malformed member spoils the list: no 304 on a guess
        '"other"',
        "W/",
    ],
)
def test_if_none_match_refuses_anything_else(header: str | None) -> None:
    assert not if_none_match_matches(header, TAG)


def test_tags_are_strong_opaque_and_depend_on_every_part_and_the_key() -> None:
    tags = EntityTags(b"secret")
    stamp = datetime(2026, 12, 2, tzinfo=UTC)
    tag = tags.tag("/users/1/images", 7, "public", stamp)
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert not tag.startswith("W/")
    assert "users" not in tag
    assert "public" not in tag
    assert tag == tags.tag("/users/1/images", 7, "public", stamp)
    assert tag == EntityTags(b"secret").tag("/users/1/images", 7, "public", stamp)
    others = {
        tags.tag("/users/2/images", 7, "public", stamp),
        tags.tag("/users/1/images", 8, "public", stamp),
        tags.tag("/users/1/images", 7, "owner", stamp),
        tags.tag("/users/1/images?limit=5", 7, "public", stamp),
        tags.tag("/users/1/images", 7, "public", stamp.replace(microsecond=1)),
        EntityTags(b"other secret").tag("/users/1/images", 7, "public", stamp),
    }
    assert tag not in others
    assert len(others) == 6


def test_body_tags_are_the_exact_bytes_at_their_target() -> None:
    tags = EntityTags(b"secret")
    body = b'{"items":[],"next_cursor":null}'
    tag = tags.tag_body("/images", body)
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert tag == EntityTags(b"secret").tag_body("/images", bytes(body))
    others = {
        tags.tag_body("/images?limit=5", body),
        tags.tag_body("/images", body.replace(b":[]", b": []")),  # same JSON, other bytes
        tags.tag_body("/image", b"s" + body),  # the target is framed, not run into the body
        tags.tag_body("/images\udcff", body),  # a path no UTF-8 spells is still tagged
        EntityTags(b"other secret").tag_body("/images", body),
    }
    assert tag not in others
    assert len(others) == 5


def test_content_tags_follow_every_value_of_a_page_and_nothing_else() -> None:
    tags = EntityTags(b"secret")
    stamp = datetime(2026, 12, 2, tzinfo=UTC)

    def page(**change: object) -> dict[str, object]:
        items = [
            {"id": n, "title": f"t{n}", "checked_at": stamp, "last_error": None} for n in (1, 2)
        ]
        items[1].update(change)
        return {"items": items, "next_cursor": None}

    tag = tags.tag("/images", page())
    assert tag == tags.tag("/images", page())  # equal content, new objects: the same tag
    changed = {
        tags.tag("/images", page(title="t3")),
        tags.tag("/images", page(id="2")),  # a string is not the number
        tags.tag("/images", page(checked_at=stamp.replace(microsecond=1))),
        tags.tag("/images", page(last_error="image_url_unreachable")),
        tags.tag("/images", page(extra=True)),
    }
    assert tag not in changed
    assert len(changed) == 5


def test_every_validated_json_read_documents_its_304() -> None:
    document = create_app().openapi()
    for path in [
        "/users",
        "/users/me",
        "/users/{user_id}",
        "/users/{user_id}/images",
        "/users/{user_id}/images/{image_id}",
        "/images",
        "/users/{user_id}/images/{image_id}/thumbnail",
    ]:
        responses = document["paths"][path]["get"]["responses"]
        assert "If-None-Match" in responses["304"]["description"], path
