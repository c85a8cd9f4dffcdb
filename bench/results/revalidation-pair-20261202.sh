#!/bin/sh
# Alternating runs: main (base) and issue-16, gallery_page (+ revalidation on issue-16).
export BENCH_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/gallery_i16_bench
PY=/work/wt/i16/.venv/bin/python
for round in ${ROUNDS:-1 2}; do
  echo "== uptime before base round $round: $(uptime)"
  (cd /tmp/i16-base && PYTHONPATH=/tmp/i16-base $PY -m bench.run --scenarios gallery_page --output /tmp/i16-bench --label base-$round)
  echo "== uptime before i16 round $round: $(uptime)"
  (cd /work/wt/i16 && $PY -m bench.run --scenarios gallery_page,gallery_revalidate --output /tmp/i16-bench --label i16-$round)
done
echo "== uptime after: $(uptime)"
