"""The cyclic garbage collector's settings for a serving process, set once start-up is done.

Measured under wrk on a single-image read (docs/performance.md, "Third round"): with
CPython's defaults a worker spent about 7% of its CPU in the collector, and an app whose
start-up objects are left in place (the framework floor before it called this) about 18%,
most of it full collections scanning every long-lived object.

- Everything made by start-up lives as long as the process: frozen, it is never scanned
  again (a full collection paused a worker for up to 144 ms before; under 7 ms after).
- Young collections run every `YOUNG_THRESHOLD` new container objects instead of 700: a
  read makes a few thousand, nearly all freed by reference counting before a collection
  sees them, so the collector's work per collection is the objects still alive (the
  requests in flight) and fewer collections cost less in total. At most that many
  objects of cyclic garbage (a few MB) wait longer to be freed.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_collector() -> None:
    """Freeze what start-up made and raise the young generation's threshold; only once per
    process (a test run starts many apps, and their later garbage must stay collectable)."""
    if gc.get_freeze_count() == 0:
        gc.collect()  # start-up's garbage goes first, rather than pinned for good
        gc.freeze()
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
