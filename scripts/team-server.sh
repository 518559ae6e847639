#!/usr/bin/env bash
# The central side of team mode (docs/team.md), started by `./start.sh --team-server`, stopped by
# `scripts/stop.sh --team-server`:
#   team collector (per-user bearer tokens, stamps `user` on every point) -> VictoriaMetrics <- Grafana (optional)
#                                                  vmalert (per-user spend records, budget alerts) <-> VictoriaMetrics
#   Docker engine answering -> docker compose --profile team up -d (team-collector, victoriametrics, team-vmalert,
#                              team-grafana)
#   otherwise               -> native processes with pids, logs and data under $TOKENBRIDGE_TEAM_DIR
#                              (default ~/.local/state/tokenbridge/team)
# Usage: scripts/team-server.sh start|stop [--native]
# Native needs TOKENBRIDGE_TEAM_TOKENS_FILE (user:token lines); TLS: TOKENBRIDGE_TEAM_TLS_CERT_FILE + _KEY_FILE.
# Docker reads $TOKENBRIDGE_TEAM_CONFIG_DIR/tokens (default ./team/tokens); TLS: docs/team.md.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults
tb_team_use_dir  # pid files and logs under $TOKENBRIDGE_TEAM_DIR

action="${1:-}"; shift || true
force_native=0
for arg in "$@"; do
  case "$arg" in
    --native) force_native=1 ;;
    *) tb_die "unknown option '$arg' (usage: scripts/team-server.sh start|stop [--native])" ;;
  esac
done
[[ "$action" == start || "$action" == stop ]] || tb_die "usage: scripts/team-server.sh start|stop [--native]"

team_names=(team-grafana team-collector team-vmalert victoriametrics)  # stop order: vmalert before its store

stop_native() {
  local name pid stopped=0
  for name in "${team_names[@]}"; do
    tb_stop_native "$name" && stopped=$((stopped + 1))
  done
  [[ $stopped -gt 0 ]] || echo "team server: nothing running natively ($TOKENBRIDGE_TEAM_DIR)"
}

check_tokens_file() {
  local f="${TOKENBRIDGE_TEAM_TOKENS_FILE:-}"
  [[ -n "$f" ]] || tb_die "TOKENBRIDGE_TEAM_TOKENS_FILE is not set: create a file of user:token lines (docs/team.md) and set it in .env"
  [[ -f "$f" && -r "$f" ]] || tb_die "TOKENBRIDGE_TEAM_TOKENS_FILE=$f is not a readable file"
  if [[ -n "$(find "$f" -perm /o=rwx 2>/dev/null)" ]]; then
    tb_log "warning: $f is readable by other users; chmod 600 it (it holds every user's token)"
  fi
}

check_tls() {
  if [[ -n "${TOKENBRIDGE_TEAM_TLS_CERT_FILE:-}" || -n "${TOKENBRIDGE_TEAM_TLS_KEY_FILE:-}" ]]; then
    [[ -r "${TOKENBRIDGE_TEAM_TLS_CERT_FILE:-}" ]] || tb_die "TOKENBRIDGE_TEAM_TLS_CERT_FILE='${TOKENBRIDGE_TEAM_TLS_CERT_FILE:-}' is not a readable file (TLS needs the certificate and the key)"
    [[ -r "${TOKENBRIDGE_TEAM_TLS_KEY_FILE:-}" ]] || tb_die "TOKENBRIDGE_TEAM_TLS_KEY_FILE='${TOKENBRIDGE_TEAM_TLS_KEY_FILE:-}' is not a readable file (TLS needs the certificate and the key)"
    return 0
  fi
  return 1
}

# Where vmalert sends alerts, for the start output: a password in TEAM_ALERTMANAGER_URL is never shown.
alerts_to() {
  if [[ -n "${TEAM_ALERTMANAGER_URL:-}" ]]; then sed -E 's|//[^/@]*@|//***@|' <<<"$TEAM_ALERTMANAGER_URL"
  else echo "nowhere: TEAM_ALERTMANAGER_URL unset, -notifier.blackhole"; fi
}

# ------------------------------------------------------------------ Docker
if [[ $force_native == 0 ]] && ! tb_team_native_active && tb_have_docker; then
  if [[ "$action" == stop ]]; then
    (cd "$TB_ROOT" && docker compose --profile team stop team-grafana team-collector team-vmalert victoriametrics)
    exit 0
  fi
  confdir="${TOKENBRIDGE_TEAM_CONFIG_DIR:-./team}"
  [[ "$confdir" == /* ]] || confdir="$TB_ROOT/${confdir#./}"
  [[ -f "$confdir/tokens" ]] || tb_die "Docker team server: $confdir/tokens not found (user:token lines; the directory is TOKENBRIDGE_TEAM_CONFIG_DIR, default ./team; docs/team.md)"
  if [[ "${TOKENBRIDGE_TEAM_EXTRA_CONFIG:-}" == /etc/otelcol/tls.yml ]]; then
    [[ -f "$confdir/tls/cert.pem" && -f "$confdir/tls/key.pem" ]] || tb_die "TLS on (TOKENBRIDGE_TEAM_EXTRA_CONFIG) but $confdir/tls/cert.pem or key.pem is missing"
  fi
  [[ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]] || tb_die "GRAFANA_ADMIN_PASSWORD is not set in $TB_ROOT/.env (run scripts/init.sh)"
  # The budgets: prometheus/team/thresholds.yml, mounted into team-vmalert with the rules.
  "$(tb_python)" "$TB_ROOT/prometheus/generate_team_rules.py" --thresholds --env-file "$TB_ROOT/.env" \
    || tb_die "fix the team budget named above (.env or the environment)"
  (cd "$TB_ROOT" && docker compose --profile team up -d --build team-collector victoriametrics team-vmalert team-grafana)
  echo "tokenbridge team server started with Docker Compose."
  echo "  OTLP (tokens)    grpc $TEAM_BIND:$TEAM_OTLP_GRPC_PORT, http $TEAM_BIND:$TEAM_OTLP_HTTP_PORT"
  echo "  VictoriaMetrics  http://127.0.0.1:$VICTORIAMETRICS_PORT"
  echo "  vmalert          http://127.0.0.1:$TEAM_VMALERT_PORT  (alerts to $(alerts_to))"
  echo "  Grafana          http://127.0.0.1:$TEAM_GRAFANA_PORT"
  exit 0
fi

if [[ "$action" == stop ]]; then
  stop_native
  exit 0
fi

# ------------------------------------------------------------------ native
check_tokens_file
mkdir -p "$TOKENBRIDGE_TEAM_DIR"/{run,logs,vm-data,grafana}

find_team_collector() {
  if [[ -n "${TOKENBRIDGE_TEAM_OTELCOL_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_TEAM_OTELCOL_BIN" ]] || tb_die "TOKENBRIDGE_TEAM_OTELCOL_BIN=$TOKENBRIDGE_TEAM_OTELCOL_BIN is not executable"
    echo "$TOKENBRIDGE_TEAM_OTELCOL_BIN"; return
  fi
  command -v go >/dev/null 2>&1 || tb_die "no team collector: set TOKENBRIDGE_TEAM_OTELCOL_BIN, or install Go >= 1.25 (https://go.dev/dl/) to build it from otelcol-team-builder.yaml"
  tb_log "building the team collector (otelcol-team-builder.yaml; cached after the first time)"
  TOKENBRIDGE_OTELCOL_MANIFEST="$TB_ROOT/otelcol-team-builder.yaml" "$TB_ROOT/scripts/build-collector.sh" | tail -n1
}

find_victoriametrics() {
  if [[ -n "${TOKENBRIDGE_VICTORIAMETRICS_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_VICTORIAMETRICS_BIN" ]] || tb_die "TOKENBRIDGE_VICTORIAMETRICS_BIN=$TOKENBRIDGE_VICTORIAMETRICS_BIN is not executable"
    echo "$TOKENBRIDGE_VICTORIAMETRICS_BIN"; return
  fi
  if command -v victoria-metrics >/dev/null 2>&1; then command -v victoria-metrics; return; fi
  command -v go >/dev/null 2>&1 || tb_die "no VictoriaMetrics: set TOKENBRIDGE_VICTORIAMETRICS_BIN, put victoria-metrics on PATH, or install Go >= 1.25 to build it"
  tb_log "building VictoriaMetrics $TB_VICTORIAMETRICS_VERSION (scripts/build-victoriametrics.sh; cached after the first time)"
  "$TB_ROOT/scripts/build-victoriametrics.sh" | tail -n1
}

# vmalert is optional: without a binary (and no Go to build one) the rest runs and the start output says so.
find_vmalert() {
  if [[ -n "${TOKENBRIDGE_VMALERT_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_VMALERT_BIN" ]] || tb_die "TOKENBRIDGE_VMALERT_BIN=$TOKENBRIDGE_VMALERT_BIN is not executable"
    echo "$TOKENBRIDGE_VMALERT_BIN"; return
  fi
  if command -v vmalert >/dev/null 2>&1; then command -v vmalert; return; fi
  # Cached builds answer without Go; otherwise Go builds it once (minutes), like VictoriaMetrics.
  "$TB_ROOT/scripts/build-vmalert.sh" 2>>"$(tb_logfile team-vmalert)" | tail -n1 || true
}



otelcol="$(find_team_collector)"
vm="$(find_victoriametrics)"
configs=("--config=$TB_ROOT/otel-collector-team.yml")
scheme=plain
if check_tls; then configs+=("--config=$TB_ROOT/otel-collector-team-tls.yml"); scheme=TLS; fi
# vmalert: the per-user spend records (the Team usage time series) and budget alerts. The rules and the budgets
# (TOKENBRIDGE_TEAM_BUDGET_* from .env or the environment) are written under the state directory at every start,
# before anything starts, so a bad budget stops the start with its name.
vmalert_note=""
vmalert_bin="$(find_vmalert)"
rules_dir="$TOKENBRIDGE_TEAM_DIR/vmalert"
if [[ -n "$vmalert_bin" && -x "$vmalert_bin" ]]; then
  mkdir -p "$rules_dir"
  interval=()
  [[ -z "${TEAM_VMALERT_INTERVAL:-}" ]] || interval=(--interval "$TEAM_VMALERT_INTERVAL")
  py="$(tb_python)"
  "$py" "$TB_ROOT/prometheus/generate_team_rules.py" --out "$rules_dir/rules.yml" ${interval[@]+"${interval[@]}"} \
    || tb_die "fix the vmalert setting named above (.env or the environment)"
  "$py" "$TB_ROOT/prometheus/generate_team_rules.py" --thresholds --env-file "$TB_ROOT/.env" \
    --out "$rules_dir/thresholds.yml" ${interval[@]+"${interval[@]}"} || tb_die "fix the team budget named above (.env or the environment)"
else
  vmalert_note="vmalert: not started (no binary: set TOKENBRIDGE_VMALERT_BIN, put vmalert on PATH, or install Go to build it with scripts/build-vmalert.sh); no per-user budget alerts and the Team usage spend-over-time panel stays empty"
fi

echo "tokenbridge team server, native (state: $TOKENBRIDGE_TEAM_DIR)"

mapfile -t vmflags < <(tb_victoriametrics_flags)
tb_spawn victoriametrics "$vm" "-storageDataPath=$TOKENBRIDGE_TEAM_DIR/vm-data" \
  "-httpListenAddr=$TOKENBRIDGE_BIND:$VICTORIAMETRICS_PORT" "${vmflags[@]}"

OTELCOL_GRPC_ENDPOINT="$TEAM_BIND:$TEAM_OTLP_GRPC_PORT" \
OTELCOL_HTTP_ENDPOINT="$TEAM_BIND:$TEAM_OTLP_HTTP_PORT" \
OTELCOL_HEALTH_ENDPOINT="127.0.0.1:$TEAM_OTELCOL_HEALTH_PORT" \
OTELCOL_TELEMETRY_HOST=127.0.0.1 OTELCOL_TELEMETRY_PORT="$TEAM_OTELCOL_METRICS_PORT" \
TOKENBRIDGE_TEAM_REMOTE_WRITE_URL="http://127.0.0.1:$VICTORIAMETRICS_PORT/api/v1/write" \
  tb_spawn team-collector "$otelcol" "${configs[@]}"

ok=1
tb_wait_http victoriametrics "http://127.0.0.1:$VICTORIAMETRICS_PORT/health" 30 || ok=0
tb_wait_http team-collector "http://127.0.0.1:$TEAM_OTELCOL_HEALTH_PORT/" 30 || ok=0

if [[ -z "$vmalert_note" ]]; then
  mapfile -t alertflags < <(tb_vmalert_flags "http://127.0.0.1:$VICTORIAMETRICS_PORT" "$rules_dir/*.yml")
  tb_spawn team-vmalert "$vmalert_bin" "-httpListenAddr=127.0.0.1:$TEAM_VMALERT_PORT" "${alertflags[@]}"
  tb_wait_http team-vmalert "http://127.0.0.1:$TEAM_VMALERT_PORT/health" 30 || ok=0
fi

grafana_note=""
if [[ -n "${GRAFANA_HOME:-}" && -x "${GRAFANA_HOME}/bin/grafana" ]]; then
  [[ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]] || tb_die "GRAFANA_ADMIN_PASSWORD is not set (run scripts/init.sh, it writes .env)"
  prov="$TOKENBRIDGE_TEAM_DIR/grafana/provisioning"
  rm -rf "$prov"; mkdir -p "$prov"
  cp -R "$TB_ROOT/grafana/provisioning-team/." "$prov/"
  sed -i "s|/var/lib/grafana/dashboards/team|$TB_ROOT/grafana/dashboards-team|" "$prov/dashboards/team.yml"
  TOKENBRIDGE_GRAFANA_VICTORIAMETRICS_URL="http://127.0.0.1:$VICTORIAMETRICS_PORT" \
  GF_PATHS_DATA="$TOKENBRIDGE_TEAM_DIR/grafana/data" GF_PATHS_LOGS="$TOKENBRIDGE_TEAM_DIR/logs" \
  GF_PATHS_PROVISIONING="$prov" GF_SERVER_HTTP_ADDR="$TOKENBRIDGE_BIND" GF_SERVER_HTTP_PORT="$TEAM_GRAFANA_PORT" \
  GF_SECURITY_ADMIN_USER="${GRAFANA_ADMIN_USER:-admin}" GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD" \
  GF_USERS_ALLOW_SIGN_UP=false GF_ANALYTICS_REPORTING_ENABLED=false \
    tb_spawn team-grafana "$GRAFANA_HOME/bin/grafana" server --homepath "$GRAFANA_HOME"
else
  grafana_note="Grafana: not started (no local install; set GRAFANA_HOME to an unpacked Grafana tarball, or use Docker's team profile). VictoriaMetrics answers PromQL at http://127.0.0.1:$VICTORIAMETRICS_PORT/vmui"
fi

echo
echo "  OTLP (bearer token per user, $scheme)  grpc $TEAM_BIND:$TEAM_OTLP_GRPC_PORT, http $TEAM_BIND:$TEAM_OTLP_HTTP_PORT"
echo "  VictoriaMetrics                     http://127.0.0.1:$VICTORIAMETRICS_PORT  (Prometheus API; UI at /vmui)"
[[ -z "$vmalert_note" ]] && echo "  vmalert                             http://127.0.0.1:$TEAM_VMALERT_PORT  (alerts to $(alerts_to))"
echo "  tokens file                         $TOKENBRIDGE_TEAM_TOKENS_FILE  (re-read when it changes)"
[[ -z "$grafana_note" ]] && echo "  Grafana                             http://127.0.0.1:$TEAM_GRAFANA_PORT"
[[ -n "$grafana_note" ]] && { echo; echo "Not running: $grafana_note"; }
[[ -n "$vmalert_note" ]] && { echo; echo "Not running: $vmalert_note"; }
[[ "$scheme" == plain ]] && { echo; echo "Note: no TLS (TOKENBRIDGE_TEAM_TLS_CERT_FILE unset): tokens cross the network in clear text; see docs/team.md"; }
echo "Agents: docs/team.md (tokenbridge run with TOKENBRIDGE_TEAM=1, source telemetry.sh --team). Stop with scripts/stop.sh --team-server."
[[ $ok == 1 ]] || exit 1
