#!/usr/bin/env bash
# `make compose-test`: build the real image, bring the compose stack up from local images
# only, and prove it through the nginx port: smoke flow, --scale api=3, a database restart,
# and two recheck workers marking a broken image broken.
#
#   1. build-standins.sh: docker (apt), dockerd, the stand-in base images (cached)
#   2. every image the compose files and the Dockerfile name must exist locally: nothing
#      is ever pulled
#   3. docker compose up -d --build (two workers); wait for health; smoke.py through the proxy
#   4. --scale api=3: every replica healthy and serving reads
#   5. stop db (readiness answers 503 database_unavailable), start it: the API recovers
#   6. an image whose file is deleted is marked broken by the two workers, seen through nginx
#   7. docker compose down -v (always, also on failure)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/containers"
cd "$ROOT"

export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-gallerycompose}"
export GALLERY_IMAGE="gallery-api:compose-test"
# A subnet of its own, so a developer's `docker compose up` can run beside the test.
export COMPOSE_SUBNET="${TEST_COMPOSE_SUBNET:-172.29.77.0/24}"
export PROXY_IP="${TEST_PROXY_IP:-172.29.77.10}"
export PROXY_BIND=127.0.0.1
PROXY_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PROXY_PORT
BASE="http://127.0.0.1:$PROXY_PORT"
COMPOSE=(docker compose -f docker-compose.yml -f tests/containers/compose.test.yml)
T0=$(date +%s)
LOGS="$(mktemp /tmp/gallery-compose-logs.XXXXXX)"

step() { printf '\n[compose-test +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "[compose-test] FAILED; last logs:" >&2
    "${COMPOSE[@]}" ps >&2 || true
    "${COMPOSE[@]}" logs --tail=40 >&2 || true
  fi
  step "docker compose down -v"
  "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -f /tmp/gallery-compose-smoke.json "$LOGS"
  exit "$rc"
}

step "stand-in images (cached)"
"$HERE/build-standins.sh"

step "every referenced image exists locally (nothing is pulled)"
# The compose files' images, except the ones compose builds itself, and the Dockerfile's base.
mapfile -t IMAGES < <("${COMPOSE[@]}" config | python3 -c '
import sys, yaml
config = yaml.safe_load(sys.stdin)
for service in config["services"].values():
    if "build" not in service:
        print(service["image"])
')
IMAGES+=("$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)")
for image in "${IMAGES[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "missing local image: $image" >&2; exit 1; }
  echo "  local: $image"
done

trap cleanup EXIT
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

step "docker compose up -d --build (two recheck workers)"
"${COMPOSE[@]}" up -d --build --scale worker=2

wait_healthy() {  # wait_healthy SERVICE COUNT SECONDS
  local service="$1" want="$2" deadline=$(( $(date +%s) + $3 )) healthy ids
  while [ "$(date +%s)" -lt "$deadline" ]; do
    ids="$("${COMPOSE[@]}" ps -q "$service")"
    healthy=0
    for id in $ids; do
      [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && healthy=$((healthy + 1))
    done
    if [ "$healthy" -ge "$want" ]; then echo "  $service: $healthy healthy"; return 0; fi
    sleep 2
  done
  echo "$service: only $healthy of $want healthy after $3s" >&2
  return 1
}

step "waiting for health"
wait_healthy db 1 120
wait_healthy api 1 180
migrate_id="$("${COMPOSE[@]}" ps -q migrate)"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$migrate_id")" = 0 ] || { echo "migrate failed" >&2; exit 1; }
echo "  migrate: exited 0"
# The proxy may still be starting after the api turned healthy.
for _ in $(seq 1 60); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('$BASE/health/ready', timeout=2)" 2>/dev/null && break
  sleep 1
done

step "smoke flow through nginx on $BASE"
python3 "$HERE/smoke.py" "$BASE" full
python3 "$HERE/smoke.py" "$BASE" reads one

step "non-root, healthcheck and JSON logs in the api container"
api_id="$("${COMPOSE[@]}" ps -q api | sed -n 1p)"
uid="$(docker exec "$api_id" id -u)"
[ "$uid" != 0 ] || { echo "api runs as root" >&2; exit 1; }
echo "  api runs as uid $uid"
# (Logs go through a file: `grep -q` closing a pipe early would fail the pipeline.)
docker logs "$api_id" >"$LOGS" 2>&1
grep '"logger": "app.access"' "$LOGS" | grep '"request_id": "one-0"' >/dev/null \
  || { echo "no JSON access line with the passed request id" >&2; exit 1; }
echo "  access log is JSON and carries the proxy's X-Request-ID"
# nginx sends X-Forwarded-For; the api believes it only from the proxy, so the logged client
# is the caller nginx saw (the host, through the bridge), not the proxy's own address.
line="$(grep '"request_id": "one-0"' "$LOGS" | grep '"logger": "app.access"' | sed -n 1p)"
case "$line" in
  *"\"client\": \"$PROXY_IP\""*) echo "api logged the proxy as the client: $line" >&2; exit 1 ;;
  *'"client": "'*) echo "  client address taken from the trusted proxy's X-Forwarded-For" ;;
  *) echo "no client in the access line: $line" >&2; exit 1 ;;
esac

step "docker compose up -d --scale api=3"
"${COMPOSE[@]}" up -d --no-recreate --scale api=3 --scale worker=2
wait_healthy api 3 180
sleep 11  # nginx asks Docker's DNS again after 10 s (resolver valid=10s)
python3 "$HERE/smoke.py" "$BASE" reads scaled
served=0
for id in $("${COMPOSE[@]}" ps -q api); do
  docker logs "$id" >"$LOGS" 2>&1
  if grep '"request_id": "scaled-' "$LOGS" >/dev/null; then served=$((served + 1)); fi
done
echo "  replicas that served the scaled reads: $served of 3"
[ "$served" -eq 3 ] || { echo "the proxy did not spread reads over the replicas" >&2; exit 1; }

step "stop db: readiness says so; start it again: the API recovers"
"${COMPOSE[@]}" stop db
python3 "$HERE/smoke.py" "$BASE" down
"${COMPOSE[@]}" start db
wait_healthy db 1 120
python3 "$HERE/smoke.py" "$BASE" wait
python3 "$HERE/smoke.py" "$BASE" reads after-restart

step "two workers: an image whose file is deleted is marked broken, seen through nginx"
workers="$("${COMPOSE[@]}" ps -q worker)"
running=0
for id in $workers; do
  [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] && running=$((running + 1))
done
[ "$running" -eq 2 ] || { echo "expected 2 running workers, found $running" >&2; exit 1; }
echo "  workers running: $running"
python3 "$HERE/smoke.py" "$BASE" doomed
"${COMPOSE[@]}" exec -T images rm /srv/images/doomed.png
python3 "$HERE/smoke.py" "$BASE" broken
passes=0
for id in $workers; do
  docker logs "$id" >"$LOGS" 2>&1
  if grep '"message": "recheck pass:' "$LOGS" >/dev/null; then passes=$((passes + 1)); fi
done
echo "  workers that ran recheck passes: $passes of 2"
[ "$passes" -ge 1 ] || { echo "no worker logged a recheck pass" >&2; exit 1; }
counted=0
for id in $workers; do
  docker exec "$id" python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())" >"$LOGS"
  if grep '^gallery_image_rechecks_total{outcome="image_url_bad_status"}' "$LOGS" >/dev/null; then counted=$((counted + 1)); fi
done
echo "  workers whose metrics count a failed recheck: $counted"
[ "$counted" -ge 1 ] || { echo "no worker metrics count the failed rechecks" >&2; exit 1; }
api_id="$("${COMPOSE[@]}" ps -q api | sed -n 1p)"
docker logs "$api_id" >"$LOGS" 2>&1
if grep '"message": "recheck pass:' "$LOGS" >/dev/null; then
  echo "the api ran rechecks although RECHECK_IN_PROCESS=false" >&2; exit 1
fi
echo "  the api ran no rechecks (RECHECK_IN_PROCESS=false)"

step "passed in $(( $(date +%s) - T0 ))s"
