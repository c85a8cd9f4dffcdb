"""Load benchmarks for Gallery API: `make bench` (see docs/performance.md)."""
