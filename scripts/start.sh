#!/usr/bin/env bash
# Start the tokenbridge stack.
#   Docker engine answering -> docker compose up -d --build (collector, Prometheus, Grafana, bridge)
#   otherwise               -> native mode: collector, Prometheus and `tokenbridge run` as local processes, with pids,
#                              logs and data under $TOKENBRIDGE_NATIVE_DIR (default ~/.local/state/tokenbridge/native)
# Options: --native (force native mode), --no-bridge (native: do not start `tokenbridge run`),
#          --team-server (the central side of team mode instead: scripts/team-server.sh, docs/team.md).
set -euo pipefail
for arg in "$@"; do
  if [[ "$arg" == --team-server ]]; then
    rest=()
    for a in "$@"; do [[ "$a" == --team-server ]] || rest+=("$a"); done
    exec "$(dirname "${BASH_SOURCE[0]}")/team-server.sh" start ${rest[@]+"${rest[@]}"}
  fi
done
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults

force_native=0
with_bridge=1
for arg in "$@"; do
  case "$arg" in
    --native) force_native=1 ;;
    --no-bridge) with_bridge=0 ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) tb_die "unknown option '$arg' (see --help)" ;;
  esac
done

# ------------------------------------------------------------------ Docker mode
if [[ $force_native == 0 ]] && tb_have_docker; then
  [[ -f "$TB_ROOT/.env" ]] || "$TB_ROOT/scripts/init.sh"
  tb_load_env "$TB_ROOT/.env"
  [[ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]] || tb_die "GRAFANA_ADMIN_PASSWORD is not set in $TB_ROOT/.env (run scripts/init.sh)"
  tb_alert_config
  (cd "$TB_ROOT" && docker compose up -d --build)
  echo "tokenbridge stack started with Docker Compose."
  echo "  Grafana     http://127.0.0.1:$GRAFANA_PORT  (user ${GRAFANA_ADMIN_USER:-admin}, password in .env)"
  echo "  Prometheus  http://127.0.0.1:$PROMETHEUS_PORT"
  echo "  Alerts      http://127.0.0.1:$ALERTMANAGER_PORT  (webhook: TOKENBRIDGE_ALERT_WEBHOOK_URL in .env)"
  echo "  OTLP        grpc 127.0.0.1:$OTLP_GRPC_PORT, http 127.0.0.1:$OTLP_HTTP_PORT  -> source telemetry.sh"
  echo "Check it with scripts/status.sh"
  exit 0
fi

# ------------------------------------------------------------------ native mode
if [[ $force_native == 0 ]]; then
  if command -v docker >/dev/null 2>&1; then
    tb_log "Docker CLI found but no engine/compose answers (docker info / docker compose version failed): native mode."
  else
    tb_log "docker not found: native mode."
  fi
fi
mkdir -p "$TOKENBRIDGE_NATIVE_DIR"/{run,logs,config,prometheus-data,grafana,alertmanager-data}

find_collector() {
  if [[ -n "${TOKENBRIDGE_OTELCOL_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_OTELCOL_BIN" ]] || tb_die "TOKENBRIDGE_OTELCOL_BIN=$TOKENBRIDGE_OTELCOL_BIN is not executable"
    echo "$TOKENBRIDGE_OTELCOL_BIN"; return
  fi
  local c
  for c in otelcol-tokenbridge otelcol-contrib; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return; fi
  done
  command -v go >/dev/null 2>&1 || tb_die "no collector: otelcol-tokenbridge/otelcol-contrib not on PATH and Go not installed to build it (install Go >= 1.25 from https://go.dev/dl/, or set TOKENBRIDGE_OTELCOL_BIN)"
  tb_log "building the collector (scripts/build-collector.sh; cached after the first time)"
  "$TB_ROOT/scripts/build-collector.sh" | tail -n1
}

find_prometheus() {
  if [[ -n "${TOKENBRIDGE_PROMETHEUS_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_PROMETHEUS_BIN" ]] || tb_die "TOKENBRIDGE_PROMETHEUS_BIN=$TOKENBRIDGE_PROMETHEUS_BIN is not executable"
    echo "$TOKENBRIDGE_PROMETHEUS_BIN"; return
  fi
  if command -v prometheus >/dev/null 2>&1; then
    if prometheus --version 2>&1 | grep -Eq 'version 3\.'; then command -v prometheus; return; fi
    tb_log "ignoring $(command -v prometheus): not Prometheus 3 (tokenbridge needs created-timestamp-zero-ingestion and the OTLP receiver)"
  fi
  command -v go >/dev/null 2>&1 || tb_die "no Prometheus 3: not on PATH and Go not installed to build it (install Go >= 1.25 from https://go.dev/dl/, download Prometheus 3 from https://prometheus.io/download/, or set TOKENBRIDGE_PROMETHEUS_BIN)"
  tb_log "building Prometheus $TB_PROMETHEUS_VERSION (scripts/build-prometheus.sh; cached after the first time)"
  "$TB_ROOT/scripts/build-prometheus.sh" | tail -n1
}

# Alertmanager is optional in native mode: used when a binary is at hand (never built implicitly: it takes minutes).
find_alertmanager() {
  if [[ -n "${TOKENBRIDGE_ALERTMANAGER_BIN:-}" ]]; then
    [[ -x "$TOKENBRIDGE_ALERTMANAGER_BIN" ]] || tb_die "TOKENBRIDGE_ALERTMANAGER_BIN=$TOKENBRIDGE_ALERTMANAGER_BIN is not executable"
    echo "$TOKENBRIDGE_ALERTMANAGER_BIN"; return
  fi
  local c
  for c in alertmanager prometheus-alertmanager; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return; fi
  done
  for c in "$TB_CACHE_DIR"/bin/alertmanager-"$TB_ALERTMANAGER_VERSION"-*/alertmanager; do
    if [[ -x "$c" ]]; then echo "$c"; return; fi
  done
  return 0  # none: start without it
}

# spawn NAME LOG CMD... : start in the background, record "pid binary" in the pid file
spawn() {
  local name="$1"; shift
  local log; log="$(tb_logfile "$name")"
  if pid="$(tb_native_pid "$name")"; then
    echo "  $name already running (pid $pid)"
    return 0
  fi
  nohup "$@" >>"$log" 2>&1 </dev/null &
  echo "$! $1" >"$(tb_pidfile "$name")"
  echo "  $name started (pid $!, log $log)"
}

wait_http() { # wait_http NAME URL SECONDS
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    tb_http_ok "$2" && return 0
    tb_native_pid "$1" >/dev/null || { tb_log "$1 exited; last log lines:"; tail -n 20 "$(tb_logfile "$1")" >&2; return 1; }
    sleep 0.25
  done
  tb_log "$1 did not answer $2 within $3 s; see $(tb_logfile "$1")"
  return 1
}

optional=()
otelcol="$(find_collector)"
prometheus="$(find_prometheus)"
alertmanager="$(find_alertmanager)"
tb_alert_config
echo "tokenbridge native mode (state: $TOKENBRIDGE_NATIVE_DIR)"

# Collector: the repo's config, ports from env.
OTELCOL_GRPC_ENDPOINT="$TOKENBRIDGE_BIND:$OTLP_GRPC_PORT" \
OTELCOL_HTTP_ENDPOINT="$TOKENBRIDGE_BIND:$OTLP_HTTP_PORT" \
OTELCOL_PROMETHEUS_ENDPOINT="127.0.0.1:$OTELCOL_PROM_PORT" \
OTELCOL_HEALTH_ENDPOINT="127.0.0.1:$OTELCOL_HEALTH_PORT" \
OTELCOL_TELEMETRY_HOST=127.0.0.1 OTELCOL_TELEMETRY_PORT="$OTELCOL_METRICS_PORT" \
  spawn otel-collector "$otelcol" "--config=$TB_ROOT/otel-collector-config.yml"

# Prometheus: the repo's prometheus.yml with the scrape targets pointed at the local processes.
cfgdir="$TOKENBRIDGE_NATIVE_DIR/config"
sed -e "s|\"otel-collector:8889\"|\"127.0.0.1:$OTELCOL_PROM_PORT\"|" \
    -e "s|\"otel-collector:8888\"|\"127.0.0.1:$OTELCOL_METRICS_PORT\"|" \
    -e "s|\"localhost:9090\"|\"127.0.0.1:$PROMETHEUS_PORT\"|" \
    -e "s|\"alertmanager:9093\"|\"127.0.0.1:$ALERTMANAGER_PORT\"|" \
    "$TB_ROOT/prometheus.yml" >"$cfgdir/prometheus.yml"
rm -rf "$cfgdir/prometheus"
cp -R "$TB_ROOT/prometheus" "$cfgdir/prometheus"
mapfile -t pflags < <(tb_prometheus_flags)
spawn prometheus "$prometheus" "--config.file=$cfgdir/prometheus.yml" \
  "--storage.tsdb.path=$TOKENBRIDGE_NATIVE_DIR/prometheus-data" \
  "--web.listen-address=$TOKENBRIDGE_BIND:$PROMETHEUS_PORT" "${pflags[@]}"

if [[ -n "$alertmanager" ]]; then
  spawn alertmanager "$alertmanager" "--config.file=$TB_ROOT/alertmanager/alertmanager.yml" \
    "--storage.path=$TOKENBRIDGE_NATIVE_DIR/alertmanager-data" \
    "--web.listen-address=$TOKENBRIDGE_BIND:$ALERTMANAGER_PORT" "--cluster.listen-address="
fi

ok=1
wait_http otel-collector "http://127.0.0.1:$OTELCOL_HEALTH_PORT/" 30 || ok=0
wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 30 || ok=0
if [[ -n "$alertmanager" ]]; then
  wait_http alertmanager "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" 30 || ok=0
else
  optional+=("Alertmanager: alerts are evaluated by Prometheus (see its /alerts page) but not sent. Build it with scripts/build-alertmanager.sh (Go), install Debian's prometheus-alertmanager, or set TOKENBRIDGE_ALERTMANAGER_BIN; then run ./start.sh again")
fi

# The bridge.
missing=()
bridge=()
if [[ $with_bridge == 1 ]]; then
  if command -v tokenbridge >/dev/null 2>&1; then
    bridge=(tokenbridge run --http-port "$WEB_PORT")
  elif (cd "$TB_ROOT" && "$(tb_python)" -c 'import bridge.cli' 2>/dev/null); then
    bridge=("$(tb_python)" -m bridge.cli run --http-port "$WEB_PORT")
  else
    bridge=()
    missing+=("the bridge: tokenbridge is not installed (pip install -e $TB_ROOT), so local transcripts are not exported")
  fi
  if ((${#bridge[@]})); then
    # A stable service.instance.id (label `instance`): the OTel SDK would pick a random one per process, and every
    # restart would then start new series.
    resattrs="${OTEL_RESOURCE_ATTRIBUTES:-}"
    if [[ ",$resattrs" != *",service.instance.id="* ]]; then
      resattrs="${resattrs:+$resattrs,}service.instance.id=${TOKENBRIDGE_INSTANCE_ID:-tokenbridge@$(hostname 2>/dev/null || echo local)}"
    fi
    (cd "$TB_ROOT" && OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_GRPC_PORT" OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
      OTEL_RESOURCE_ATTRIBUTES="$resattrs" \
      TOKENBRIDGE_PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT" spawn tokenbridge "${bridge[@]}")
  fi
fi

# Grafana: only when a local install is available (GRAFANA_HOME=<unpacked grafana tarball>).
grafana_bin=""
if [[ -n "${GRAFANA_HOME:-}" && -x "${GRAFANA_HOME}/bin/grafana" ]]; then
  grafana_bin="$GRAFANA_HOME/bin/grafana"
fi
if [[ -n "$grafana_bin" ]]; then
  prov="$TOKENBRIDGE_NATIVE_DIR/grafana/provisioning"
  rm -rf "$prov"; mkdir -p "$prov"
  cp -R "$TB_ROOT/grafana/provisioning/." "$prov/"
  sed -i "s|/var/lib/grafana/dashboards/tokenbridge|$TB_ROOT/grafana/dashboards|" "$prov/dashboards/tokenbridge.yml"
  [[ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]] || tb_die "GRAFANA_ADMIN_PASSWORD is not set (run scripts/init.sh, it writes .env)"
  TOKENBRIDGE_GRAFANA_PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT" \
  GF_PATHS_DATA="$TOKENBRIDGE_NATIVE_DIR/grafana/data" GF_PATHS_LOGS="$TOKENBRIDGE_NATIVE_DIR/logs" \
  GF_PATHS_PROVISIONING="$prov" GF_SERVER_HTTP_ADDR="$TOKENBRIDGE_BIND" GF_SERVER_HTTP_PORT="$GRAFANA_PORT" \
  GF_SECURITY_ADMIN_USER="${GRAFANA_ADMIN_USER:-admin}" GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD" \
  GF_USERS_ALLOW_SIGN_UP=false GF_ANALYTICS_REPORTING_ENABLED=false \
  GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH="$TB_ROOT/grafana/dashboards/ai-usage-overview.json" \
    spawn grafana "$grafana_bin" server --homepath "$GRAFANA_HOME"
else
  missing+=("Grafana: no Docker engine and no local Grafana. Get it without root: download the standalone Linux/macOS tar.gz from https://grafana.com/grafana/download, unpack it, set GRAFANA_HOME=<unpacked dir> and GRAFANA_ADMIN_PASSWORD (scripts/init.sh writes one to .env), run ./start.sh again. Until then use Prometheus at http://127.0.0.1:$PROMETHEUS_PORT")
fi

echo
echo "  OTLP        grpc $TOKENBRIDGE_BIND:$OTLP_GRPC_PORT, http $TOKENBRIDGE_BIND:$OTLP_HTTP_PORT  -> source telemetry.sh"
echo "  Prometheus  http://127.0.0.1:$PROMETHEUS_PORT"
[[ -n "$alertmanager" ]] && echo "  Alerts      http://127.0.0.1:$ALERTMANAGER_PORT"
[[ -n "$grafana_bin" ]] && echo "  Grafana     http://127.0.0.1:$GRAFANA_PORT"
((${#bridge[@]})) && echo "  Web view    http://127.0.0.1:$WEB_PORT  (./view.sh; the bridge's first scan may take a minute on a large history)"
if ((${#missing[@]})); then
  echo
  echo "Missing:"
  printf '  - %s\n' "${missing[@]}"
fi
if ((${#optional[@]})); then
  echo
  echo "Optional, not running:"
  printf '  - %s\n' "${optional[@]}"
fi
echo "Stop with scripts/stop.sh; check with scripts/status.sh."
[[ $ok == 1 ]] || exit 1
