#!/usr/bin/env bash
# Stop the tokenbridge stack (Docker Compose, or the native processes started by scripts/start.sh).
# Data is kept: Docker volumes, or $TOKENBRIDGE_NATIVE_DIR. Option: --native (only the native processes),
# --team-server (the central side of team mode: scripts/team-server.sh stop).
set -euo pipefail
for arg in "$@"; do
  if [[ "$arg" == --team-server ]]; then
    rest=()
    for a in "$@"; do [[ "$a" == --team-server ]] || rest+=("$a"); done
    exec "$(dirname "${BASH_SOURCE[0]}")/team-server.sh" stop ${rest[@]+"${rest[@]}"}
  fi
done
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults

if [[ "${1:-}" != "--native" ]] && ! tb_native_mode_active && tb_have_docker; then
  (cd "$TB_ROOT" && docker compose stop)
  exit 0
fi

stopped=0
for name in tokenbridge grafana prometheus alertmanager otel-collector; do
  tb_stop_native "$name" && stopped=$((stopped + 1))
done
[[ $stopped -gt 0 ]] || echo "nothing running in native mode ($TOKENBRIDGE_NATIVE_DIR)"
