#!/usr/bin/env bash
# Build the local stand-in images that `make compose-test` needs on machines
# that reach no container registry (only Debian's mirror, PyPI and npm).
#
#   local/debian:bookworm  debootstrap --variant=minbase base (host CA bundle baked in)
#   python:3.12-slim       stand-in: Debian's Python 3.11 in a venv (NOT 3.12, see its Dockerfile)
#   postgres:16            stand-in: Debian's PostgreSQL 15 with the official image's env contract
#   nginx:1.27             stand-in: Debian's nginx (1.22) with the official image's layout
#
# Idempotent and cached:
#   - installs docker.io/docker-compose/debootstrap with apt-get if missing;
#   - starts dockerd if `docker info` fails (log /tmp/dockerd.log, pid /tmp/dockerd.pid);
#   - installs the `docker compose` -> docker-compose v1 shim plugin if missing;
#   - builds local/debian:bookworm only if that image is missing
#     (FORCE_BASE=1 rebuilds it);
#   - builds each stand-in only when the sha256 of its recipe directory (plus
#     the base image id) differs from the image's `standin.recipe` label
#     (FORCE=1 rebuilds them all).
#
# Usage: tests/containers/build-standins.sh [name...]   (default: all stand-ins)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STANDINS_DIR="$HERE/standins"
BASE_IMAGE="local/debian:bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
DOCKERD_PID="${DOCKERD_PID:-/tmp/dockerd.pid}"

# stand-in directory name -> exact image tag the project's files reference
declare -A TAGS=(
  [python]="python:3.12-slim"
  [postgres]="postgres:16"
  [nginx]="nginx:1.27"
)
ORDER=(python postgres nginx)

# Classic builder only: no buildx on these machines, and the recipes use no
# BuildKit features.
export DOCKER_BUILDKIT=0

log() { printf '[build-standins +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    # de-duplicate
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]} with apt-get"
    local aptlog=/tmp/build-standins-apt.log
    { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
           apt-get install -y -qq "${missing[@]}"; } >"$aptlog" 2>&1 \
      || { tail -n 30 "$aptlog" >&2; die "apt-get install failed (log $aptlog)"; }
  fi
}

ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid+nohup: dockerd must outlive this script and its terminal. Started
  # directly (not through a function) so $! is dockerd's own pid.
  # 9>&-: dockerd must not inherit (and forever hold) this script's lock.
  if [ "$(id -u)" -eq 0 ]; then
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  else
    # shellcheck disable=SC2024
    sudo setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  fi
  echo $! >"$DOCKERD_PID"
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then log "dockerd up (pid $(cat "$DOCKERD_PID"))"; return 0; fi
    sleep 1
  done
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not come up within 60s"
}

ensure_compose_plugin() {
  # cheap check (the CLI asks each plugin for metadata; the shim answers
  # without starting Python, unlike `docker compose version`)
  if docker info --format '{{range .ClientInfo.Plugins}}{{.Name}} {{end}}' 2>/dev/null \
      | grep -qw compose; then
    return 0
  fi
  local dir="${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins"
  log "installing docker compose shim plugin in $dir"
  mkdir -p "$dir"
  cat >"$dir/docker-compose" <<'EOF'
#!/bin/sh
# Forwards `docker compose ...` (v2 syntax) to Debian's docker-compose v1.
[ "$1" = docker-cli-plugin-metadata ] && { echo '{"SchemaVersion":"0.1.0","Vendor":"shim","Version":"1.29.2"}'; exit 0; }
shift; exec /usr/bin/docker-compose "$@"
EOF
  chmod +x "$dir/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose shim does not work"
}

build_base() {
  if [ "${FORCE_BASE:-0}" != 1 ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE present, skipping debootstrap"
    return 0
  fi
  local root
  root="$(mktemp -d /var/tmp/standin-rootfs.XXXXXX)"
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" EXIT
  log "debootstrap --variant=minbase bookworm (takes ~1 min)"
  as_root debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 \
    || { tail -n 40 "$root.log" >&2; die "debootstrap failed (log $root.log)"; }
  rm -f "$root.log"

  # HTTPS from containers goes through a re-signing proxy: bake the host's CA
  # bundle (and its extra CAs, so update-ca-certificates keeps them) into the base.
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" >"$root/etc/apt/sources.list"
  # Like Debian's official container images: no services started by package
  # postinst scripts, no apt caches left in layers.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  # The mirror these machines see may be a dated snapshot: don't reject it.
  printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
    >"$root/etc/apt/apt.conf.d/99standin-snapshot"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/log/*.log

  log "importing $BASE_IMAGE"
  # PATH must be explicit: the classic builder expands ENV PATH=...:$PATH
  # from the image config, which `docker import` leaves empty otherwise.
  tar --numeric-owner -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    -c 'LABEL standin.base=debootstrap-minbase-bookworm' \
    -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  trap - EXIT
}

# sha256 over the recipe directory (relative paths, modes, contents) plus the
# base image id, so a rebuilt base also rebuilds the stand-ins.
recipe_hash() {
  local dir="$1" base_id
  base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
  {
    echo "base $base_id"
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z \
      | while IFS= read -r -d '' f; do
          printf '%s %s %s\n' "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"
        done)
  } | sha256sum | cut -d' ' -f1
}

build_standin() {
  local name="$1" tag="${TAGS[$1]:-}" dir="$STANDINS_DIR/$1" want have
  [ -n "$tag" ] || die "unknown stand-in '$name' (known: ${ORDER[*]})"
  [ -f "$dir/Dockerfile" ] || die "missing $dir/Dockerfile"
  want="$(recipe_hash "$dir")"
  have="$(docker image inspect -f '{{ index .Config.Labels "standin.recipe" }}' "$tag" 2>/dev/null || true)"
  if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$want" ]; then
    log "$tag up to date (recipe ${want:0:12})"
    return 0
  fi
  log "building $tag from standins/$name (recipe ${want:0:12})"
  local out old_id
  old_id="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
  out="$(mktemp /tmp/standin-build-"$name".XXXXXX.log)"
  if ! docker build --label "standin.recipe=$want" --label "standin.name=$name" \
      -t "$tag" "$dir" >"$out" 2>&1; then
    tail -n 60 "$out" >&2
    die "build of $tag failed (full log $out)"
  fi
  rm -f "$out"
  # Drop the previous version of this stand-in by id. (Not `image prune --filter
  # label=standin.name`: images built FROM a stand-in inherit its labels, so that would
  # also delete the project's own build cache, e.g. the Dockerfile's build stage.)
  if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
  fi
}

main() {
  local names=("$@")
  [ "${#names[@]}" -gt 0 ] || names=("${ORDER[@]}")
  # one run at a time (parallel make targets must not start two dockerds)
  exec 9>/tmp/build-standins.lock
  flock -w 900 9 || die "another build-standins.sh holds /tmp/build-standins.lock for 15 min"
  ensure_packages
  ensure_dockerd
  ensure_compose_plugin
  build_base
  local n
  for n in "${names[@]}"; do build_standin "$n"; done
  for n in "${names[@]}"; do
    docker image inspect "${TAGS[$n]}" >/dev/null 2>&1 || die "${TAGS[$n]} missing after build"
  done
  log "ready: $BASE_IMAGE $(for n in "${names[@]}"; do printf '%s ' "${TAGS[$n]}"; done)"
}

main "$@"
