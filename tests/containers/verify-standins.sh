#!/usr/bin/env bash
# Smoke-test the stand-in images built by build-standins.sh. Publishes no
# host ports: every check talks container-to-container over a private user
# network, which is removed at the end (with the containers and volumes).
#
# Usage: tests/containers/verify-standins.sh   (after build-standins.sh)
set -euo pipefail

NET="standin-verify-$$"
PG="standin-verify-pg-$$"
NGX="standin-verify-nginx-$$"
APP="standin-verify-app-$$"
TMPL="$(mktemp -d)"
FAIL=0

# shellcheck disable=SC2317  # functions below are called indirectly (trap, check)
cleanup() {
  docker rm -f -v "$PG" "$PG-client" "$NGX" "$APP" >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$TMPL"
}
trap cleanup EXIT

ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; FAIL=1; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

for img in local/debian:bookworm python:3.12-slim postgres:16 nginx:1.27; do
  docker image inspect "$img" >/dev/null 2>&1 || { echo "missing image $img: run build-standins.sh" >&2; exit 1; }
done
docker network create "$NET" >/dev/null

# ---------------------------------------------------------------- python
check "python: ssl + sqlite3 import" \
  docker run --rm python:3.12-slim python -c 'import ssl, sqlite3; print(1)'
check "python: python/python3/pip/pip3 on PATH" \
  docker run --rm python:3.12-slim sh -c 'command -v python && command -v python3 && command -v pip && command -v pip3 && /usr/local/bin/python -V'
check "python: pip install --no-deps six over HTTPS (host CA bundle)" \
  docker run --rm python:3.12-slim sh -c 'pip install -q --no-deps six && python -c "import six; print(six.__version__)"'

# -------------------------------------------------------------- postgres
docker run -d --name "$PG" --network "$NET" \
  -e POSTGRES_USER=gallery -e POSTGRES_PASSWORD=gallery -e POSTGRES_DB=gallery postgres:16 >/dev/null
ready=0
for _ in $(seq 1 60); do
  if docker exec "$PG" pg_isready -q -U gallery -d gallery; then ready=1; break; fi
  sleep 1
done
if [ "$ready" = 1 ]; then ok "postgres: pg_isready"; else bad "postgres: pg_isready"; docker logs "$PG" >&2; fi
check "postgres: psql with password from another container" \
  docker run --rm --network "$NET" -e PGPASSWORD=gallery postgres:16 \
    psql -h "$PG" -U gallery -d gallery -tAc 'select current_user || current_database()'
check "postgres: wrong password rejected" \
  bash -c "! docker run --rm --network '$NET' -e PGPASSWORD=nope postgres:16 psql -h '$PG' -U gallery -d gallery -c 'select 1' >/dev/null 2>&1"
check "postgres: runs as PID 1 user postgres" \
  bash -c "docker exec '$PG' grep -qE '^Uid:[[:space:]]+999' /proc/1/status && [ \"\$(docker exec '$PG' cat /proc/1/comm)\" = postgres ]"
# a client stays connected during the stop: STOPSIGNAL SIGINT must not wait for it
docker run -d --rm --name "$PG-client" --network "$NET" -e PGPASSWORD=gallery postgres:16 \
  psql -h "$PG" -U gallery -d gallery -c 'select pg_sleep(60)' >/dev/null
sleep 1
start=$(date +%s%N)
docker stop "$PG" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
code=$(docker inspect -f '{{.State.ExitCode}}' "$PG")
docker rm -f "$PG-client" >/dev/null 2>&1 || true
if [ "$code" = 0 ] && [ "$ms" -lt 5000 ]; then
  ok "postgres: docker stop (client connected) in ${ms}ms, exit 0"
else
  bad "postgres: docker stop took ${ms}ms, exit $code"
fi
docker start "$PG" >/dev/null
for _ in $(seq 1 30); do docker exec "$PG" pg_isready -q && break; sleep 1; done
check "postgres: restart keeps data, skips initdb" \
  bash -c "docker logs '$PG' 2>&1 | grep -q 'skipping init'"

# ----------------------------------------------------------------- nginx
# a tiny upstream app + a template rendered by envsubst, as compose would do
docker run -d --name "$APP" --network "$NET" python:3.12-slim \
  sh -c 'mkdir -p /srv && echo upstream-ok >/srv/health && cd /srv && exec python -m http.server 8000' >/dev/null
mkdir -p "$TMPL/templates"
cat >"$TMPL/templates/api.conf.template" <<EOF
server {
    listen 8080;
    location / { proxy_pass http://\${UPSTREAM}; proxy_set_header Host \$host; }
}
EOF
docker run -d --name "$NGX" --network "$NET" -e UPSTREAM="$APP:8000" \
  -v "$TMPL/templates:/etc/nginx/templates:ro" nginx:1.27 >/dev/null
sleep 2
fetch() {
  docker run --rm --network "$NET" python:3.12-slim python -c \
    'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip()[:200])' "$1"
}
nginx_page() { fetch "http://$NGX/" | grep -q 'Welcome to nginx'; }
nginx_proxy() { fetch "http://$NGX:8080/health" | grep -q upstream-ok; }
check "nginx: default page from another container" nginx_page
check "nginx: templated reverse proxy to upstream" nginx_proxy
check "nginx: access log on stdout" bash -c "docker logs '$NGX' 2>/dev/null | grep -q 'GET /health'"
start=$(date +%s%N)
docker stop "$NGX" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "$ms" -lt 5000 ]; then ok "nginx: docker stop in ${ms}ms"; else bad "nginx: docker stop took ${ms}ms"; fi

if [ "$FAIL" = 0 ]; then echo "all stand-in checks passed"; else echo "some stand-in checks FAILED"; fi
exit "$FAIL"
