"""The load soak in short form (bench/soak.py does the long one by hand): the app under
uvicorn with two workers on a PostgreSQL cluster of the tests' own, 64 clients, a mix of
reads, creates, patches, deletes and logins. Marked `soak`: CI runs it as `make soak`."""

from __future__ import annotations

import json
import os

import pytest

from bench.soak import rss_is_flat, run_soak
from tests.reliability.support import PostgresCluster

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "10"))
SOAK_WARMUP = float(os.environ.get("SOAK_WARMUP", "15"))
# Idle RSS is read after warm-up, halfway and at the end. Allocator arenas make it wander by
# tens of MiB either way; a leak makes every reading a new high. The end may rise this much
# above the earlier readings.
RSS_ALLOWED_MIB = float(os.environ.get("SOAK_RSS_ALLOWED_MIB", "24"))


async def test_soak_has_no_errors_loses_nothing_and_memory_stays_flat(
    postgres_cluster: PostgresCluster,
) -> None:
    report = await run_soak(
        postgres_cluster.server_url,
        seconds=SOAK_SECONDS,
        clients=64,
        workers=2,
        users=8,
        warmup=SOAK_WARMUP,
    )
    print(json.dumps(report.__dict__, indent=2))
    assert report.requests > 0
    assert report.server_errors == 0, report.unexpected
    assert report.connection_errors == 0, report.unexpected
    assert report.unexpected == []
    assert report.lost_images == 0
    assert report.acknowledged_images > 0
    assert {"create", "patch", "delete", "login", "list_gallery"} <= set(report.by_operation)
    assert len(report.rss_mib) == 2, report.rss_mib
    assert rss_is_flat(report, RSS_ALLOWED_MIB), report.rss_mib
