"""Link health through the API and the recheck pass: statuses, the schedule, filters, the
summary, politeness toward image hosts, conditional requests, and outcomes that arrive
too late. The image host is a real server on loopback whose behaviour the tests flip."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.db import utcnow
from app.images.checker import CheckedImage, parse_retry_after
from app.images.link_health import RecheckPolicy
from app.images.models import Image
from app.images.recheck import Rechecker, RecheckPassResult
from app.state import app_state
from tests.images.flipping_host import FlippingImage
from tests.support.helpers import Account, assert_error, sign_up, sign_up_admin
from tests.support.image_host import ImageHost, make_image

INTERVAL = 3600
RETRY = 60


SETTINGS = {
    "recheck_interval_seconds": INTERVAL,
    "recheck_retry_seconds": RETRY,
    "recheck_broken_after": 3,
    "recheck_per_host_concurrency": 2,
    "recheck_concurrency": 16,
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(SETTINGS)


@pytest.fixture
def host(image_host: ImageHost) -> ImageHost:
    image_host.forget()
    return image_host


def flipping(host: ImageHost, path: str, body: bytes | None = None) -> FlippingImage:
    route = FlippingImage(body or make_image("PNG", (3, 2)))
    host.routes[path] = route
    return route


async def add(client: httpx.AsyncClient, owner: Account, url: str) -> dict[str, Any]:
    response = await client.post(
        f"/users/{owner.id}/images", json={"image_url": url}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_due(app: FastAPI, *image_ids: int) -> None:
    """Bring the next check of these images (all when none is named) to now."""
    statement = update(Image).values(
        due_at=utcnow() - timedelta(seconds=1), updated_at=Image.updated_at
    )
    if image_ids:
        statement = statement.where(Image.id.in_(image_ids))
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(statement)


async def stored(app: FastAPI, image_id: int) -> Image:
    async with app_state(app).sessionmaker() as session:
        image = await session.get(Image, image_id)
        assert image is not None
        return image


def rechecker(app: FastAPI, **hooks: Any) -> Rechecker:
    return Rechecker(
        app_state(app).sessionmaker, app_state(app).image_checker, app_state(app).settings, **hooks
    )


async def recheck_pass(app: FastAPI) -> RecheckPassResult:
    return await rechecker(app).run_pass()


async def image_json(client: httpx.AsyncClient, owner: Account, image_id: int) -> dict[str, Any]:
    response = await client.get(f"/users/{owner.id}/images/{image_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def listed_ids(client: httpx.AsyncClient, path: str, **params: Any) -> list[int]:
    admin_headers = params.pop("headers", None)
    response = await client.get(path, params=params, headers=admin_headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def seconds_until(moment: datetime) -> float:
    return (moment - utcnow()).total_seconds()


async def test_statuses_move_from_ok_to_failing_to_broken_and_back(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/flip.png")
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    image = await add(client, alice, host.url("/flip.png"))
    steady = await add(client, alice, host.url("/cat.png"))
    assert (image["status"], image["failure_count"], image["last_error"]) == ("ok", 0, None)

    expected = [
        ("missing", "failing", 1, "image_url_bad_status"),
        ("missing", "failing", 2, "image_url_bad_status"),
        ("missing", "broken", 3, "image_url_bad_status"),
        ("slow", "broken", 4, "image_url_unreachable"),
    ]
    for mode, status, failures, code in expected:
        route.mode = mode  # type: ignore[assignment]
        await make_due(app)
        result = await recheck_pass(app)
        assert result.claimed == 2
        assert result.outcomes[code] == 1
        assert result.outcomes["ok"] + result.outcomes["not_modified"] == 1
        body = await image_json(client, alice, image["id"])
        assert (body["status"], body["failure_count"], body["last_error"]) == (
            status,
            failures,
            code,
        )
        # The metadata read when the image was ok is kept while it fails.
        assert (body["content_type"], body["width"], body["height"]) == ("image/png", 3, 2)
        assert body["checked_at"] > image["checked_at"]

    # Filters and the summary agree with the statuses.
    gallery = f"/users/{alice.id}/images"
    assert await listed_ids(client, gallery, status="broken") == [image["id"]]
    assert await listed_ids(client, gallery, status="ok") == [steady["id"]]
    assert await listed_ids(client, gallery, status="failing") == []
    assert await listed_ids(client, "/images", status="broken", headers=admin.headers) == [
        image["id"]
    ]
    assert await listed_ids(client, "/images", status="ok", headers=admin.headers) == [steady["id"]]
    health = await client.get("/images/health", headers=admin.headers)
    assert health.status_code == 200
    assert health.json() == {"ok": 1, "failing": 0, "broken": 1, "due": 0, "oldest_due_seconds": 0}

    # Back to serving: one good check makes it ok again.
    route.mode = "serve"
    await make_due(app, image["id"])
    result = await recheck_pass(app)
    assert result.claimed == 1
    body = await image_json(client, alice, image["id"])
    assert (body["status"], body["failure_count"], body["last_error"]) == ("ok", 0, None)
    assert await listed_ids(client, gallery, status="broken") == []
    assert (await client.get("/images/health", headers=admin.headers)).json()["ok"] == 2


@pytest.mark.parametrize("settings_overrides", [{**SETTINGS, "recheck_per_host_concurrency": 1}])
async def test_a_busy_host_postpones_its_images_without_a_failure(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    first = flipping(host, "/busy-1.png")
    second = flipping(host, "/busy-2.png")
    alice = await sign_up(client, "alice")
    one = await add(client, alice, host.url("/busy-1.png"))
    two = await add(client, alice, host.url("/busy-2.png"))
    first.mode = second.mode = "busy"
    first.retry_after = second.retry_after = "600"
    await make_due(app)
    host.forget()
    # One check at a time on this host: the first busy answer holds back the other image.
    result = await recheck_pass(app)
    assert result.claimed == 2
    assert result.outcomes == {"image_host_busy": 1, "postponed": 1}
    # The host was asked once; the other image waited without a request.
    assert len([r for r in host.requests if r[1].startswith("/busy-")]) == 1
    for image in (one, two):
        saved = await stored(app, image["id"])
        assert (saved.status, saved.failure_count, saved.last_error) == ("ok", 0, None)
        assert saved.checked_at == datetime.fromisoformat(image["checked_at"])
        assert saved.recheck_claim is None
        assert 590 < seconds_until(saved.due_at) <= 600


async def test_retry_after_is_bounded_both_ways(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/bounded.png")
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/bounded.png"))
    route.mode = "busy"
    # A host cannot make us call it in a loop: at least the failure retry delay.
    route.retry_after = "0"
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"image_host_busy": 1}
    assert RETRY - 5 < seconds_until((await stored(app, image["id"])).due_at) <= RETRY
    # Nor make us forget it: at most one interval.
    route.retry_after = str(10**12)
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"image_host_busy": 1}
    assert INTERVAL - 5 < seconds_until((await stored(app, image["id"])).due_at) <= INTERVAL
    # A 503 that does not say when to come back is a failure like any other.
    route.mode = "busy-no-retry-after"
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"image_url_bad_status": 1}
    assert (await stored(app, image["id"])).failure_count == 1


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime.fromisoformat("2026-12-02T10:00:00+00:00")
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 7 ", now) == 7
    assert parse_retry_after("Wed, 02 Dec 2026 10:01:30 GMT", now) == 90
    assert parse_retry_after("Wed, 02 Dec 2026 09:00:00 GMT", now) == 0
    assert parse_retry_after(None, now) is None
    for junk in ("", "-5", "soon", "1.5", "Wed, 99 Foo 2026", "9" * 5000):
        value = parse_retry_after(junk, now)
        assert value is None or 0 <= value <= 10**11, junk


def test_retries_double_up_to_the_interval_with_jitter_below() -> None:
    policy = RecheckPolicy(interval_seconds=86400, retry_seconds=3600, broken_after=3)
    assert [policy.delay_after(n) for n in range(7)] == [
        86400,
        3600,
        7200,
        14400,
        28800,
        57600,
        86400,
    ]
    assert policy.delay_after(10**6) == 86400
    now = utcnow()
    assert policy.next_due(now, 0, rng=lambda: 0.0) == now + timedelta(seconds=86400)
    assert policy.next_due(now, 0, rng=lambda: 1.0) == now + timedelta(seconds=77760)
    assert policy.next_due(now, 2, rng=lambda: 0.5) == now + timedelta(seconds=7200 * 0.95)
    assert [policy.status_after(n) for n in range(5)] == [
        "ok",
        "failing",
        "failing",
        "broken",
        "broken",
    ]


async def test_failures_are_retried_sooner_doubling_and_a_bulk_import_is_spread(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    images = []
    for index in range(12):
        flipping(host, f"/spread-{index}.png")
        images.append(await add(client, alice, host.url(f"/spread-{index}.png")))
    # Created: due one interval later, jittered by up to 10% earlier, never later.
    dues = [(await stored(app, image["id"])).due_at for image in images]
    for image, due in zip(images, dues, strict=True):
        delay = (due - datetime.fromisoformat(image["checked_at"])).total_seconds()
        assert INTERVAL * 0.9 <= delay <= INTERVAL
    assert len(set(dues)) == len(dues), "a bulk import must not come due at once"

    route = host.routes["/spread-0.png"]
    assert isinstance(route, FlippingImage)
    route.mode = "missing"
    for failures in (1, 2, 3):
        await make_due(app, images[0]["id"])
        await recheck_pass(app)
        saved = await stored(app, images[0]["id"])
        delay = (saved.due_at - saved.checked_at).total_seconds()
        expected = RETRY * 2 ** (failures - 1)
        assert expected * 0.9 <= delay <= expected, (failures, delay)


async def test_create_url_change_and_manual_recheck_count_as_checks(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/manual.png")
    flipping(host, "/other.png")
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/manual.png"))
    path = f"/users/{alice.id}/images/{image['id']}"
    route.mode = "missing"
    await make_due(app)
    await recheck_pass(app)
    await make_due(app)
    await recheck_pass(app)
    assert (await image_json(client, alice, image["id"]))["failure_count"] == 2
    # A failed manual recheck answers its error and counts a failure, like a scheduled one.
    failed = await client.post(f"{path}/recheck", headers=alice.headers)
    assert_error(failed, 422, "image_url_bad_status")
    body = await image_json(client, alice, image["id"])
    assert (body["status"], body["failure_count"]) == ("broken", 3)
    saved = await stored(app, image["id"])
    assert RETRY * 4 * 0.9 <= (saved.due_at - saved.checked_at).total_seconds() <= RETRY * 4
    # A busy host is no failure of the image's: 503 with the host's wish, nothing counted.
    route.mode = "busy"
    busy = await client.post(f"{path}/recheck", headers=alice.headers)
    assert_error(busy, 503, "image_host_busy")
    assert busy.headers["retry-after"] == route.retry_after
    assert (await image_json(client, alice, image["id"]))["failure_count"] == 3
    # A successful one makes it ok and schedules the next check one interval later.
    route.mode = "serve"
    response = await client.post(f"{path}/recheck", headers=alice.headers)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["failure_count"]) == ("ok", 0)
    saved = await stored(app, image["id"])
    assert INTERVAL * 0.9 <= seconds_until(saved.due_at) <= INTERVAL
    # A URL change is a new link: checked, ok, due one interval later.
    route.mode = "missing"
    await make_due(app)
    await recheck_pass(app)
    assert (await image_json(client, alice, image["id"]))["status"] == "failing"
    changed = await client.patch(
        path, json={"image_url": host.url("/other.png")}, headers=alice.headers
    )
    assert changed.status_code == 200
    assert (changed.json()["status"], changed.json()["last_error"]) == ("ok", None)
    saved = await stored(app, image["id"])
    assert INTERVAL * 0.9 <= seconds_until(saved.due_at) <= INTERVAL
    # Nothing is due after these checks: the pass has nothing to do.
    assert (await recheck_pass(app)).claimed == 0


async def test_status_filters_page_with_keyset_cursors_and_refuse_unknown_statuses(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    routes = []
    ids = []
    for index in range(5):
        routes.append(flipping(host, f"/page-{index}.png"))
        ids.append((await add(client, alice, host.url(f"/page-{index}.png")))["id"])
    for index in (0, 2, 4):
        routes[index].mode = "missing"
    await make_due(app)
    await recheck_pass(app)
    for path, headers in ((f"/users/{alice.id}/images", None), ("/images", admin.headers)):
        first = await client.get(path, params={"status": "failing", "limit": 2}, headers=headers)
        assert first.status_code == 200
        assert [item["id"] for item in first.json()["items"]] == [ids[4], ids[2]]
        cursor = first.json()["next_cursor"]
        second = await client.get(
            path, params={"status": "failing", "limit": 2, "cursor": cursor}, headers=headers
        )
        assert [item["id"] for item in second.json()["items"]] == [ids[0]]
        assert second.json()["next_cursor"] is None
        # A cursor belongs to its filter.
        assert_error(
            await client.get(path, params={"status": "ok", "cursor": cursor}, headers=headers),
            422,
            "invalid_cursor",
        )
        assert_error(
            await client.get(path, params={"cursor": cursor}, headers=headers),
            422,
            "invalid_cursor",
        )
        for bad in ("BROKEN", "gone", "", "ok,broken"):
            assert_error(
                await client.get(path, params={"status": bad}, headers=headers),
                422,
                "validation_error",
            )
    assert await listed_ids(
        client, "/images", status="ok", user_id=alice.id, headers=admin.headers
    ) == [ids[3], ids[1]]


async def test_health_summary_counts_due_images_for_admins_only(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    first = await add(client, alice, host.url("/cat.png"))
    await add(client, alice, host.url("/photo.jpg"))
    assert_error(await client.get("/images/health"), 401, "not_authenticated")
    assert_error(await client.get("/images/health", headers=alice.headers), 403, "admin_required")
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(Image)
            .where(Image.id == first["id"])
            .values(due_at=utcnow() - timedelta(seconds=90), updated_at=Image.updated_at)
        )
    summary = (await client.get("/images/health", headers=admin.headers)).json()
    assert summary["ok"] == 2
    assert summary["failing"] == summary["broken"] == 0
    assert summary["due"] == 1
    assert 90 <= summary["oldest_due_seconds"] < 120
    metrics = (await client.get("/metrics")).text
    assert 'gallery_images{status="ok"} 2.0' in metrics
    assert "gallery_images_due 1.0" in metrics


async def test_recheck_outcomes_are_counted_in_the_metrics(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/counted.png")
    alice = await sign_up(client, "alice")
    await add(client, alice, host.url("/counted.png"))
    metrics = app_state(app).metrics
    route.mode = "missing"
    await make_due(app)
    await rechecker(app, on_outcome=metrics.observe_recheck).run_pass()
    text = (await client.get("/metrics")).text
    assert 'gallery_image_rechecks_total{outcome="image_url_bad_status"} 1.0' in text
    assert 'gallery_images{status="failing"} 1.0' in text


async def test_per_host_concurrency_is_never_exceeded(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    route = flipping(host, "/crowded.png")
    for index in range(10):
        # Two host names for the same server: politeness is per name.
        for name in ("127.0.0.1", "localhost"):
            url = f"http://{name}:{host.port}/crowded.png?n={index}"
            await add(client, alice, url)
    route.max_in_flight.clear()
    route.max_total_in_flight = 0
    route.serve_delay = 0.15
    await make_due(app)
    result = await recheck_pass(app)
    assert result.outcomes == {"not_modified": 20}
    # Each host name had 2 requests in flight at most, and reached it; together 4.
    assert dict(route.max_in_flight) == {
        f"127.0.0.1:{host.port}": 2,
        f"localhost:{host.port}": 2,
    }
    assert route.max_total_in_flight == 4


@pytest.mark.parametrize("settings_overrides", [{**SETTINGS, "recheck_concurrency": 3}])
async def test_worker_concurrency_bounds_checks_across_hosts(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    route = flipping(host, "/many.png")
    for index in range(6):
        for name in ("127.0.0.1", "localhost"):
            await add(client, alice, f"http://{name}:{host.port}/many.png?n={index}")
    route.max_total_in_flight = 0
    route.serve_delay = 0.15
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"not_modified": 12}
    assert route.max_total_in_flight == 3


async def test_conditional_requests_make_unchanged_images_cost_a_304(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/etag.png", make_image("PNG", (3, 2)))
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/etag.png"))
    assert (await stored(app, image["id"])).etag == route.etag
    await make_due(app)
    result = await recheck_pass(app)
    assert result.outcomes == {"not_modified": 1}
    assert route.not_modified == 1
    body = await image_json(client, alice, image["id"])
    assert body["checked_at"] > image["checked_at"]
    assert body["content_changed_at"] is None
    assert body["updated_at"] == image["updated_at"]

    # New bytes: a new ETag, so a full check that updates what it read.
    changes: list[tuple[int, CheckedImage]] = []

    async def on_changed(image_id: int, checked: CheckedImage) -> None:
        changes.append((image_id, checked))

    route.replace(make_image("PNG", (7, 5)))
    await make_due(app)
    result = await rechecker(app, on_content_changed=on_changed).run_pass()
    assert result.outcomes == {"changed": 1}
    body = await image_json(client, alice, image["id"])
    assert (body["width"], body["height"], body["size_bytes"]) == (7, 5, len(route.body))
    assert body["content_changed_at"] is not None
    assert body["updated_at"] == body["content_changed_at"]
    assert [image_id for image_id, _ in changes] == [image["id"]]
    assert (await stored(app, image["id"])).etag == route.etag


async def test_new_bytes_without_validators_are_found_by_their_fingerprint(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    host.add("/plain.png", 200, make_image("PNG", (3, 2)), {"Content-Type": "image/png"})
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/plain.png"))
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"ok": 1}
    assert (await image_json(client, alice, image["id"]))["content_changed_at"] is None
    host.add("/plain.png", 200, make_image("GIF", (4, 4)), {"Content-Type": "image/gif"})
    await make_due(app)
    assert (await recheck_pass(app)).outcomes == {"changed": 1}
    body = await image_json(client, alice, image["id"])
    assert (body["content_type"], body["width"]) == ("image/gif", 4)
    assert body["content_changed_at"] is not None


# What is judged is the validators, not the fetch's deadline: with the test default of 1 s, a
# loaded CI machine once let a create's check time out (422 image_url_unreachable) first.
@pytest.mark.parametrize("settings_overrides", [{**SETTINGS, "image_fetch_timeout": 15.0}])
async def test_hostile_validators_are_never_stored_or_sent_back(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    png = make_image("PNG")
    for path, etag in (("/long-etag.png", '"' + "x" * 5000 + '"'), ("/odd-etag.png", '"\x01"')):
        host.add(path, 200, png, {"Content-Type": "image/png", "ETag": etag})
    alice = await sign_up(client, "alice")
    for path in ("/long-etag.png", "/odd-etag.png"):
        image = await add(client, alice, host.url(path))
        assert (await stored(app, image["id"])).etag is None


# The gate, not the checks' deadline, must decide when the outcomes arrive: with the test
# default of 1 s, a slow PATCH and DELETE on a loaded machine let the held checks time out
# first, and their outcome ("image_url_unreachable") arrived before the changes it must lose to.
@pytest.mark.parametrize("settings_overrides", [{**SETTINGS, "image_fetch_timeout": 15.0}])
async def test_an_outcome_arriving_after_a_delete_or_url_change_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    gated = flipping(host, "/gated.png")
    flipping(host, "/elsewhere.png")
    alice = await sign_up(client, "alice")
    changed = await add(client, alice, host.url("/gated.png?a"))
    deleted = await add(client, alice, host.url("/gated.png?b"))
    gated.mode = "missing"
    gated.gate = threading.Event()
    await make_due(app)
    running = asyncio.create_task(recheck_pass(app))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while sum(gated.in_flight.values()) < 2 and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # (the count is kept by the host's threads)
    path = f"/users/{alice.id}/images"
    response = await client.patch(
        f"{path}/{changed['id']}",
        json={"image_url": host.url("/elsewhere.png")},
        headers=alice.headers,
    )
    assert response.status_code == 200
    assert (
        await client.delete(f"{path}/{deleted['id']}", headers=alice.headers)
    ).status_code == 204
    gated.gate.set()
    result = await running
    assert result.outcomes == {"discarded": 2}
    saved = await stored(app, changed["id"])
    assert (saved.image_url, saved.status, saved.failure_count) == (
        host.url("/elsewhere.png"),
        "ok",
        0,
    )
    async with app_state(app).sessionmaker() as session:
        assert (await session.execute(select(Image.id))).scalars().all() == [changed["id"]]


@pytest.mark.parametrize(
    "settings_overrides",
    [{"recheck_in_process": True, "recheck_interval_seconds": 1, "recheck_retry_seconds": 1}],
)
async def test_serve_rechecks_in_process_with_one_second_settings(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    route = flipping(host, "/in-process.png")
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/in-process.png"))
    route.mode = "missing"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    body = await image_json(client, alice, image["id"])
    while body["status"] != "broken" and loop.time() < deadline:
        await asyncio.sleep(0.2)
        body = await image_json(client, alice, image["id"])
    assert (body["status"], body["last_error"]) == ("broken", "image_url_bad_status")
    route.mode = "serve"
    while body["status"] != "ok" and loop.time() < deadline:
        await asyncio.sleep(0.2)
        body = await image_json(client, alice, image["id"])
    assert body["status"] == "ok"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"recheck_enabled": False, "recheck_in_process": True, "recheck_interval_seconds": 1}],
)
async def test_recheck_enabled_false_runs_nothing_in_process(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    flipping(host, "/disabled.png")
    alice = await sign_up(client, "alice")
    await add(client, alice, host.url("/disabled.png"))
    await make_due(app)
    host.forget()
    await asyncio.sleep(1.5)
    assert host.requests == []


async def test_scheduled_rechecks_go_through_the_ssrf_guard(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    forbidden = ImageHost("127.0.0.2")  # not exempt: IMAGE_FETCH_ALLOWED_NETWORKS is 127.0.0.1
    forbidden.start()
    try:
        alice = await sign_up(client, "alice")
        image = await add(client, alice, host.url("/cat.png"))
        # However a stored URL came to point inside (a rule change, a restored backup), the
        # recheck refuses it before connecting.
        async with app_state(app).sessionmaker() as session, session.begin():
            await session.execute(
                update(Image)
                .where(Image.id == image["id"])
                .values(image_url=forbidden.url("/cat.png"), due_at=utcnow())
            )
        result = await recheck_pass(app)
        assert result.outcomes == {"image_url_forbidden": 1}
        assert forbidden.connections == 0
        body = await image_json(client, alice, image["id"])
        assert (body["status"], body["last_error"]) == ("failing", "image_url_forbidden")
    finally:
        forbidden.stop()


async def test_a_stored_punycode_host_that_does_not_decode_is_still_rechecked(
    app: FastAPI, client: httpx.AsyncClient, host: ImageHost
) -> None:
    # `xn--a` is accepted as typed (the URL guard keeps the ASCII form) but is no valid
    # punycode: decoding it for the politeness key must not fail the whole pass.
    url = "http://xn--a.attacker.example/x.png"
    alice = await sign_up(client, "alice")
    image = await add(client, alice, host.url("/cat.png"))
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(Image).where(Image.id == image["id"]).values(image_url=url, due_at=utcnow())
        )
    result = await recheck_pass(app)  # the tests' resolver knows no such name: unreachable
    assert result.outcomes == {"image_url_unreachable": 1}
    body = await image_json(client, alice, image["id"])
    assert (body["status"], body["last_error"]) == ("failing", "image_url_unreachable")
    assert (await stored(app, image["id"])).recheck_claim is None
