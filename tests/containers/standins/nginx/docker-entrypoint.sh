#!/bin/sh
# Subset of the official nginx image's entrypoint: run /docker-entrypoint.d/*.sh
# and render /etc/nginx/templates/*.template into /etc/nginx/conf.d/ with
# envsubst (only variables defined in the environment are substituted, so
# nginx's own $variables survive). Then exec the command as PID 1.
set -eu

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
  for f in /docker-entrypoint.d/*.sh; do
    [ -e "$f" ] || continue
    echo "standin-nginx: running $f" >&2
    # shellcheck disable=SC1090
    if [ -x "$f" ]; then "$f"; else . "$f"; fi
  done

  template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
  suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
  output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
  if [ -d "$template_dir" ]; then
    # shellcheck disable=SC2016,SC2046
    defined_envs=$(printf '${%s} ' $(env | cut -d= -f1 | grep -E '^[A-Za-z_][A-Za-z0-9_]*$'))
    find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
      relative_path="${template#"$template_dir/"}"
      output_path="$output_dir/${relative_path%"$suffix"}"
      mkdir -p "$(dirname "$output_path")"
      echo "standin-nginx: envsubst $template -> $output_path" >&2
      envsubst "$defined_envs" <"$template" >"$output_path"
    done
  fi
fi

exec "$@"
