"""Load benchmarks for Gallery API: `make bench` (see docs/performance.md)."""

import signal
import sys
from types import FrameType


def stop_on_sigterm() -> None:
    """Turn SIGTERM (`timeout`, a CI job's cancel) into SystemExit, so every `with` block
    of a bench stops the servers it started: they run in process groups of their own, which
    a signal to the bench alone does not reach."""

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
