#!/usr/bin/env bash
# One-time setup: create .env from .env.example with a random Grafana admin password, a random token for the
# bridge's events receiver and your uid/gid (an existing .env only gets the token when it lacks one), and
# report what is available (Docker engine, or Go to build the native binaries). Never prints the password.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

env_file="$TB_ROOT/.env"
if [[ -f "$env_file" ]]; then
  if [[ "$(tb_ensure_events_token "$env_file")" == added ]]; then
    echo "added a random TOKENBRIDGE_EVENTS_TOKEN to $env_file (the bridge's events receiver; read it there)"
  else
    echo ".env exists; left unchanged ($env_file)"
  fi
else
  [[ -f "$TB_ROOT/.env.example" ]] || tb_die ".env.example not found in $TB_ROOT"
  pw="$(tb_random_hex 16)"
  umask 077
  sed -e "s|^GRAFANA_ADMIN_PASSWORD=.*|GRAFANA_ADMIN_PASSWORD=$pw|" "$TB_ROOT/.env.example" >"$env_file"
  printf '\n# Written by scripts/init.sh: the uid/gid the bridge container runs as (to read ~/.claude),\n# and its stable identity.\nTOKENBRIDGE_UID=%s\nTOKENBRIDGE_GID=%s\nTOKENBRIDGE_INSTANCE_ID=tokenbridge@%s\n' \
    "$(id -u)" "$(id -g)" "$(hostname 2>/dev/null || echo local)" >>"$env_file"
  tb_ensure_events_token "$env_file" >/dev/null
  echo "wrote $env_file (random GRAFANA_ADMIN_PASSWORD and TOKENBRIDGE_EVENTS_TOKEN; read them there)"
fi

tb_defaults
if tb_have_docker; then
  echo "Docker engine and compose: available -> ./start.sh runs the Docker stack"
else
  echo "Docker engine: not available -> ./start.sh runs native mode (collector, Prometheus, bridge; Alertmanager and"
  echo "    Grafana when present). Binaries not on PATH: the official releases, downloaded once into $TB_CACHE_DIR and"
  echo "    checked against scripts/release-checksums.txt; where no download is possible, built with Go (several"
  echo "    minutes, ~5 GB). Grafana: scripts/get-grafana.sh fetches the official standalone release the same way."
  if command -v go >/dev/null 2>&1; then echo "Go: $(go version | awk '{print $3}') (the fallback build is possible)"
  else echo "Go: not found (only needed when the official downloads are not possible: https://go.dev/dl/)"; fi
fi
if command -v tokenbridge >/dev/null 2>&1; then echo "tokenbridge: $(command -v tokenbridge)"
else echo "tokenbridge: not installed (pip install -e $TB_ROOT) - needed for native mode's bridge"; fi
echo "Next: ./start.sh, then: source telemetry.sh && claude"
