#!/usr/bin/env bash
# Show the stack's logs: scripts/logs.sh [SERVICE] [-f]
# SERVICE: otel-collector | prometheus | grafana | tokenbridge (default: all).
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults

service="" follow=0
for arg in "$@"; do
  case "$arg" in
    -f | --follow) follow=1 ;;
    otel-collector | prometheus | grafana | tokenbridge) service="$arg" ;;
    *) tb_die "unknown argument '$arg' (services: otel-collector prometheus grafana tokenbridge; option -f)" ;;
  esac
done

if ! tb_native_mode_active && tb_have_docker; then
  args=(logs --tail=200)
  [[ $follow == 1 ]] && args+=(-f)
  [[ -n "$service" ]] && args+=("$service")
  cd "$TB_ROOT" && exec docker compose "${args[@]}"
fi

files=()
for name in ${service:-otel-collector prometheus grafana tokenbridge}; do
  f="$(tb_logfile "$name")"
  [[ -f "$f" ]] && files+=("$f")
done
((${#files[@]})) || tb_die "no logs under $TOKENBRIDGE_NATIVE_DIR/logs (is the stack started? scripts/start.sh)"
if [[ $follow == 1 ]]; then exec tail -n 50 -F "${files[@]}"; else tail -n 200 "${files[@]}"; fi
