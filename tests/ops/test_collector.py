"""The collector's settings for a serving process (app/ops/collector.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

import app.lifespan
from app.main import create_app
from app.ops.collector import YOUNG_THRESHOLD
from app.state import app_state
from tests.conftest import empty_tables, make_settings

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json
from app.ops.collector import settle_collector
before = gc.get_threshold()
kept = [[n] for n in range(1000)]  # long-lived, made by "start-up"
settle_collector()
frozen = gc.get_freeze_count()
after = gc.get_threshold()
settle_collector()  # a second app in the same process changes nothing
garbage = []
garbage.append(garbage)  # a cycle made after start-up stays collectable
del garbage
print(json.dumps({"before": before, "frozen": frozen, "after": after,
                  "again": [gc.get_freeze_count(), gc.get_threshold()],
                  "collected": gc.collect()}))
"""


def test_start_up_objects_are_frozen_once_and_young_collections_run_less_often() -> None:
    # A fresh interpreter: this test process has already settled its collector.
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(result.stdout)
    assert seen["before"][0] == 700  # CPython's default, which the setting replaces
    assert seen["frozen"] >= 1000
    assert seen["after"] == [YOUNG_THRESHOLD, seen["before"][1], seen["before"][2]]
    assert seen["again"] == [seen["frozen"], seen["after"]]
    assert seen["collected"] >= 1


async def test_the_app_settles_the_collector_once_start_up_is_done(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def spy() -> None:
        # Called after the state is built: start-up's objects exist by now.
        calls.append(app_state(application).settings is not None)

    monkeypatch.setattr(app.lifespan, "settle_collector", spy)
    application = create_app(make_settings(database_url))
    try:
        async with LifespanManager(application):
            assert calls == [True]
    finally:
        await empty_tables(database_url)
