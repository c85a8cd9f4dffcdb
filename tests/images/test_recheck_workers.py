"""Recheck workers as real processes (`gallery worker`, `gallery recheck --due`) on the test
database: shared fairly between workers, nothing lost to SIGKILL, claims released on SIGTERM.
Their image host is the loopback one; the URLs are 127.0.0.1 literals, so no DNS is asked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from app.db import utcnow
from app.images.models import Image
from app.images.recheck import Rechecker
from app.state import app_state
from app.users.models import User
from tests.conftest import TEST_SECRET
from tests.images.flipping_host import FlippingImage
from tests.support.image_host import ImageHost, make_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(image_host: ImageHost) -> ImageHost:
    image_host.forget()
    return image_host


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def worker_env(database_url: str, **settings: object) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DATABASE_", "RECHECK_", "IMAGE_", "LOG_", "PROMETHEUS_", "WORKER_", "HOST", "PORT")
        )
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "test",
            "SECRET_KEY": TEST_SECRET,
            "DATABASE_URL": database_url,
            "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
            # Generous: the shared test machine may be slow, and a timeout is a failure.
            "IMAGE_FETCH_TIMEOUT": "3",
            "RECHECK_INTERVAL_SECONDS": "3600",
            "LOG_FORMAT": "text",
        }
    )
    env.update({key.upper(): str(value) for key, value in settings.items()})
    return env


@contextmanager
def gallery(
    directory: Path, name: str, env: dict[str, str], *arguments: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`python -m app ARGUMENTS` in `directory` (no developer .env is read); killed if the
    test leaves it running."""
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(  # noqa: S603 (our own command, fixed arguments)
            [sys.executable, "-m", "app", *arguments],
            cwd=directory,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def add_images(app: FastAPI, urls: list[str], *, due_seconds_ago: float = 1) -> list[int]:
    """Store images as if they had been checked long ago and are due now."""
    now = utcnow()
    async with app_state(app).sessionmaker() as session, session.begin():
        user = User(
            username="owner",
            username_key="owner",
            email="owner@example.com",
            email_key="owner@example.com",
            password_hash="x",
        )
        session.add(user)
        await session.flush()
        result = await session.execute(
            insert(Image).returning(Image.id),
            [
                {
                    "user_id": user.id,
                    "image_url": url,
                    "content_type": "image/png",
                    "checked_at": now - timedelta(days=1),
                    "due_at": now - timedelta(seconds=due_seconds_ago),
                }
                for url in urls
            ],
        )
        return list(result.scalars())


async def checked_since(app: FastAPI, moment: datetime) -> int:
    async with app_state(app).sessionmaker() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Image).where(Image.checked_at > moment)
                )
            ).scalar_one()
        )


async def wait_until(condition: Any, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def all_images(app: FastAPI) -> list[Image]:
    async with app_state(app).sessionmaker() as session:
        return list((await session.execute(select(Image).order_by(Image.id))).scalars())


async def test_two_workers_on_postgresql_check_each_due_image_exactly_once(
    app: FastAPI, backend: str, database_url: str, host: ImageHost, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("several worker processes share one database on PostgreSQL")
    count = 2000
    png = make_image("PNG")
    paths = [f"/pass/{index}.png" for index in range(count)]
    for path in paths:
        host.add(path, 200, png, {"Content-Type": "image/png"})
    await add_images(app, [host.url(path) for path in paths])
    started = utcnow()
    env = worker_env(
        database_url, recheck_concurrency=16, recheck_per_host_concurrency=16, log_level="INFO"
    )
    with (
        gallery(tmp_path, "worker-1", env, "worker") as (first, first_log),
        gallery(tmp_path, "worker-2", env, "worker") as (second, second_log),
    ):

        async def all_checked() -> bool:
            return await checked_since(app, started) == count

        await wait_until(all_checked, 180)
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0, first_log.read_text()
        assert second.wait(timeout=30) == 0, second_log.read_text()
    requests = Counter(request for request in host.requests if request[1].startswith("/pass/"))
    # Every image was checked once (a HEAD, then a GET), by one of the two workers.
    assert len(requests) == 2 * count
    assert set(requests.values()) == {1}
    # Both workers took part.
    for log in (first_log, second_log):
        assert "recheck pass:" in log.read_text(), log.read_text()
    images = await all_images(app)
    assert {image.status for image in images} == {"ok"}
    assert {image.recheck_claim for image in images} == {None}
    assert all(image.due_at > started + timedelta(seconds=3000) for image in images)


async def test_a_worker_killed_mid_batch_loses_no_image(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, host: ImageHost, tmp_path: Path
) -> None:
    route = FlippingImage(make_image("PNG"))
    route.serve_delay = 0.15
    host.routes["/killed.png"] = route
    ids = await add_images(app, [host.url(f"/killed.png?n={index}") for index in range(30)])
    started = utcnow()
    env = worker_env(database_url, recheck_lease_seconds=5, recheck_per_host_concurrency=2)
    with gallery(tmp_path, "killed", env, "worker") as (process, _):

        async def busy() -> bool:
            return len(host.requests) >= 6

        await wait_until(busy, 60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    killed_at = utcnow()
    images = await all_images(app)
    held = [image for image in images if image.recheck_claim is not None]
    assert held, "the worker held claims when it was killed"
    assert all(killed_at < image.due_at <= killed_at + timedelta(seconds=5) for image in held)
    # While the lease runs, nobody checks them again.
    rechecker = Rechecker(
        app_state(app).sessionmaker, app_state(app).image_checker, app_state(app).settings
    )
    early = await rechecker.run_pass()
    assert early.claimed == 0
    # After it, another worker checks every one of them.
    await asyncio.sleep(max((max(image.due_at for image in held) - utcnow()).total_seconds(), 0))
    late = await rechecker.run_pass()
    assert late.claimed == len(held)
    images = await all_images(app)
    assert [image.id for image in images] == ids
    assert all(image.checked_at > started for image in images)
    assert {(image.status, image.last_error) for image in images} == {("ok", None)}
    assert {image.recheck_claim for image in images} == {None}
    listed = await client.get(f"/users/{images[0].user_id}/images", params={"status": "ok"})
    assert sorted(item["id"] for item in listed.json()["items"]) == ids


async def test_sigterm_finishes_running_checks_and_releases_the_rest(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, host: ImageHost, tmp_path: Path
) -> None:
    route = FlippingImage(make_image("PNG"))
    route.serve_delay = 0.3
    host.routes["/stopped.png"] = route
    await add_images(app, [host.url(f"/stopped.png?n={index}") for index in range(20)])
    started = utcnow()
    port = free_port()
    env = worker_env(
        database_url, recheck_per_host_concurrency=1, worker_metrics_port=port, host="127.0.0.1"
    )
    with gallery(tmp_path, "stopped", env, "worker") as (process, log):

        async def counted() -> bool:
            # The worker's own metrics count its rechecks as they finish.
            try:
                async with httpx.AsyncClient() as metrics_client:
                    text = (await metrics_client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                return False
            return 'gallery_image_rechecks_total{outcome="ok"}' in text

        await wait_until(counted, 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log.read_text()
        assert "recheck worker stopped" in log.read_text()
    stopped_at = utcnow()
    images = await all_images(app)
    checked = [image for image in images if image.checked_at > started]
    released = [image for image in images if image.checked_at <= started]
    assert checked, "the running check finished"
    assert released, "the rest were not checked"
    assert {image.recheck_claim for image in images} == {None}
    # Released images are due again at once, not after the lease.
    assert all(image.due_at <= stopped_at for image in released)
    assert all(image.due_at > stopped_at + timedelta(seconds=3000) for image in checked)
    # Released images are as they were: ok, never checked since.
    listed = await client.get(f"/users/{images[0].user_id}/images", params={"status": "ok"})
    assert len(listed.json()["items"]) == len(images)


async def test_recheck_due_runs_one_pass_and_reports_it(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, host: ImageHost, tmp_path: Path
) -> None:
    host.add("/cron-gone.png", 404, b"gone", {"Content-Type": "text/plain"})
    ids = await add_images(app, [host.url("/cat.png"), host.url("/cron-gone.png")])
    # Not due yet: left alone.
    await add_images_later(app, host.url("/photo.jpg"))
    env = worker_env(database_url)
    with gallery(tmp_path, "cron", env, "recheck", "--due") as (process, log):
        assert process.wait(timeout=60) == 0, log.read_text()
    report = json.loads(log.read_text().strip().splitlines()[-1])
    assert report == {"claimed": 2, "outcomes": {"image_url_bad_status": 1, "ok": 1}}
    images = {image.id: image for image in await all_images(app)}
    assert images[ids[0]].status == "ok"
    assert (images[ids[1]].status, images[ids[1]].failure_count) == ("failing", 1)
    assert ("GET", "/photo.jpg") not in host.requests
    failing = await client.get(
        f"/users/{images[ids[1]].user_id}/images", params={"status": "failing"}
    )
    assert [item["id"] for item in failing.json()["items"]] == [ids[1]]

    disabled = worker_env(database_url, recheck_enabled="false")
    await add_images_later(app, host.url("/anim.gif"), due=True)
    host.forget()
    with gallery(tmp_path, "disabled", disabled, "recheck", "--due") as (process, log):
        assert process.wait(timeout=60) == 0
    assert "RECHECK_ENABLED is false" in log.read_text()
    assert host.requests == []
    with gallery(tmp_path, "no-flag", env, "recheck") as (process, log):
        assert process.wait(timeout=60) == 2
    assert "--due" in log.read_text()


async def add_images_later(app: FastAPI, url: str, *, due: bool = False) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        owner = (await session.execute(select(User.id))).scalars().first()
        now = utcnow()
        session.add(
            Image(
                user_id=owner,
                image_url=url,
                content_type="image/png",
                checked_at=now,
                due_at=now - timedelta(seconds=1) if due else now + timedelta(hours=1),
            )
        )
