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
  if pid="$(tb_native_pid "$name")"; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      tb_log "$name (pid $pid) did not stop within 15 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)"
    stopped=$((stopped + 1))
  fi
  rm -f "$(tb_pidfile "$name")"
done
[[ $stopped -gt 0 ]] || echo "nothing running in native mode ($TOKENBRIDGE_NATIVE_DIR)"
