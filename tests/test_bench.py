"""The load bench's own plumbing (bench/run.py): what the measured servers run with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench.run import server_environments


def test_the_bench_servers_run_with_the_benchs_settings_not_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A setting exported in the shell that starts the bench (a JSON access line, debug
    logging, rate limits on) would change what is measured without showing in the report."""
    for name, value in {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "RATE_LIMIT_ENABLED": "true",
        "DATABASE_URL": "postgresql+asyncpg://elsewhere/db",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    plan: Any = SimpleNamespace(
        args=SimpleNamespace(pool_size=10, workers=2),
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/gallery_bench",
    )
    common, app_env = server_environments(plan, "s" * 64)
    for env in (common, app_env):
        assert "LOG_FORMAT" not in env
        assert "LOG_LEVEL" not in env
        assert env["PATH"] == "/usr/bin:/bin"
        assert env["LANG"] == "C.UTF-8"
    assert app_env["RATE_LIMIT_ENABLED"] == "false"
    assert app_env["DATABASE_URL"] == plan.database_url
    assert "DATABASE_URL" not in common


def _run(target: str, rps: float, p99_ms: float) -> Any:
    from bench.run import Run

    return Run(
        scenario="gallery_page",
        target=target,
        connections=128,
        duration_s=5.0,
        requests=int(rps * 5),
        rps=rps,
        p50_ms=p99_ms / 2,
        p90_ms=p99_ms / 1.5,
        p99_ms=p99_ms,
        max_ms=p99_ms * 2,
        cpu_us_per_request=1_000_000 / rps,
        connections_per_worker=[60, 68],
    )


def test_paired_rounds_settle_p99_per_side_and_throughput_per_pair() -> None:
    """Throughput: a slow spell slows both sides of a pair, so each pair's ratio counts.
    p99: each side's tail is its own draw, so each side's median counts (bench/run.py
    `paired`); the median of the per-round ratios is kept alongside."""
    from bench.run import paired

    # (app rps, app p99) and (framework rps, framework p99) per round; the third round ran
    # in a slow spell (both sides at half speed).
    rounds = [
        ((800, 100), (1000, 150)),
        ((800, 200), (1000, 80)),
        ((400, 110), (500, 200)),
        ((800, 210), (1000, 90)),
        ((800, 120), (1000, 100)),
    ]
    pairs = [
        (_run("app", a_rps, a_p99), _run("framework", f_rps, f_p99))
        for (a_rps, a_p99), (f_rps, f_p99) in rounds
    ]
    app, framework = paired(pairs)
    assert app.rps == 800
    assert framework.rps == 1000
    assert app.vs_framework["rps"] == 0.8
    assert app.p99_ms == 120
    assert framework.p99_ms == 100
    assert app.vs_framework["p99_ms"] == 1.2  # 120 / 100: each side's median
    # Per round: 0.67, 2.5, 0.55, 2.33, 1.2; their median is 1.2 here too, and both are kept.
    assert app.vs_framework["p99_ms_per_round"] == 1.2
    assert app.rounds[0]["connections_per_worker"] == [60, 68]
    assert [r["p99_ms"] for r in framework.rounds] == [150, 80, 200, 90, 100]


def test_p99_ratio_is_each_sides_median_not_the_median_of_round_ratios() -> None:
    """The same five tails on both sides, drawn in another order: each side's median is
    120 ms, so 1.0; the per-round ratios (0.71, 1.1, 0.92, 1.18, 1.17) have a median of 1.1."""
    from bench.run import paired

    app_p99 = [100, 110, 120, 130, 140]
    framework_p99 = [140, 100, 130, 110, 120]
    pairs = [
        (_run("app", 800, a), _run("framework", 1000, f))
        for a, f in zip(app_p99, framework_p99, strict=True)
    ]
    app, _ = paired(pairs)
    assert app.vs_framework["p99_ms"] == 1.0
    assert app.vs_framework["p99_ms_per_round"] == 1.1


TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1002 1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1
   3: 0100007F:1F90 0100007F:C351 06 00000000:00000000 00:00000000 00000000     0        0 1004 1
   4: 0100007F:1F91 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 1005 1
"""


def test_established_inodes_are_the_connections_accepted_on_the_port() -> None:
    """Port 8080 is 1F90: the listener (0A), the client's own end (local port C350), a
    closing connection (06) and another port's connection are not counted."""
    from bench.run import established_inodes

    assert established_inodes(TCP_TABLE, 8080) == {"1002"}
    assert established_inodes(TCP_TABLE, 8081) == {"1005"}
    assert established_inodes(TCP_TABLE, 9) == set()


def test_connections_per_worker_counts_the_accepted_sockets_a_process_holds() -> None:
    """On loopback: this process listens, three clients connect, and it holds the three
    accepted ends (the clients' ends have another local port and are not counted)."""
    import os
    import socket

    from bench.run import connections_per_worker

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in range(3)]
        try:
            # This process has no spawned workers, so it is counted as the one server.
            assert connections_per_worker(os.getpid(), port) == [3]
            accepted[0].close()
            clients[0].close()
            assert connections_per_worker(os.getpid(), port) == [2]
        finally:
            for sock in clients + accepted:
                sock.close()
