#!/usr/bin/env bash
# Start the tokenbridge stack.
#   Docker engine answering -> docker compose up -d --build (collector, Prometheus, Grafana, bridge)
#   otherwise               -> native mode: collector, Prometheus and `tokenbridge run` as local processes (plus
#                              Alertmanager and Grafana when present), with pids, logs and data under
#                              $TOKENBRIDGE_NATIVE_DIR (default ~/.local/state/tokenbridge/native). Binaries not on PATH
#                              are the official releases, downloaded once into $TOKENBRIDGE_CACHE_DIR (default
#                              ~/.cache/tokenbridge) and checked against scripts/release-checksums.txt, else built with Go.
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
    -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) tb_die "unknown option '$arg' (see --help)" ;;
  esac
done

# How long until the first numbers show: the bridge scans the history at start (seconds; a minute or more for
# gigabytes), exports every 60 s (TOKENBRIDGE_EXPORT_INTERVAL) and Prometheus scrapes every 15 s.
first_data_note() {
  echo "First data: the bridge's scan of your history shows in the web view as soon as it finishes (seconds; a few"
  echo "  minutes for gigabytes of transcripts), and in Prometheus/Grafana about 1-2 minutes after the start (one export,"
  echo "  60 s, plus one scrape, 15 s). Claude Code's own telemetry (source telemetry.sh) arrives ~30 s after a request."
}

# ------------------------------------------------------------------ Docker mode
if [[ $force_native == 0 ]] && tb_have_docker; then
  [[ -f "$TB_ROOT/.env" ]] || "$TB_ROOT/scripts/init.sh"
  # The bridge's receiver listens on the Compose network and requires the collector's token (docs/events.md).
  [[ "$(tb_ensure_events_token "$TB_ROOT/.env")" != added ]] || tb_log "added a random TOKENBRIDGE_EVENTS_TOKEN to $TB_ROOT/.env"
  tb_load_env "$TB_ROOT/.env"
  problem="$(tb_grafana_password_problem)"
  [[ -z "$problem" ]] || tb_die "$problem"
  tb_compose_mounts
  tb_alert_config
  (cd "$TB_ROOT" && docker compose up -d --build)
  echo "tokenbridge stack started with Docker Compose."
  echo "  Grafana     http://127.0.0.1:$GRAFANA_PORT  (user ${GRAFANA_ADMIN_USER:-admin}, password in .env)"
  echo "  Prometheus  http://127.0.0.1:$PROMETHEUS_PORT"
  echo "  Alerts      http://127.0.0.1:$ALERTMANAGER_PORT  (webhook: TOKENBRIDGE_ALERT_WEBHOOK_URL in .env)"
  echo "  OTLP        grpc 127.0.0.1:$OTLP_GRPC_PORT, http 127.0.0.1:$OTLP_HTTP_PORT  -> source telemetry.sh"
  first_data_note
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
mkdir -p "$TOKENBRIDGE_NATIVE_DIR"/{run,logs,config,prometheus-data,grafana,alertmanager-data,otelcol-queue}

# Where each binary comes from, in this order: TOKENBRIDGE_*_BIN; PATH; the official release archive for this host
# (downloaded once into $TB_CACHE_DIR, verified against scripts/release-checksums.txt); a copy already built from
# source; the Go build (several minutes and ~5 GB, announced first). A tampered download stops the start.
# find_binary LABEL ENV_VAR RELEASE_NAME VERSION FILE BUILD_SCRIPT PATH_CANDIDATES...
find_binary() {
  local label="$1" var="$2" release="$3" version="$4" file="$5" script="$6" c dir rc=0
  shift 6
  if [[ -n "${!var:-}" ]]; then
    [[ -x "${!var}" ]] || tb_die "$var=${!var} is not executable"
    echo "${!var}"; return
  fi
  for c in "$@"; do
    if command -v "$c" >/dev/null 2>&1 && path_ok "$c"; then command -v "$c"; return; fi
  done
  if dir="$(TB_FETCH_CACHED_ONLY=1 tb_fetch_release "$release" "$version" 2>/dev/null)"; then
    tb_release_file "$dir" "$file"; return
  fi
  if c="$("$TB_ROOT/scripts/$script" --cached-only 2>/dev/null)"; then echo "$c"; return; fi
  dir="$(tb_fetch_release "$release" "$version")" || rc=$?
  case $rc in
    0) tb_release_file "$dir" "$file"; return ;;
    3) tb_die "$label: refusing the download that failed verification (see above). Retry later or from another network, or set $var to a binary you trust" ;;
    2) tb_go_fallback "$label" "$script" "no official archive is pinned for $(tb_platform)" ;;
    *) tb_go_fallback "$label" "$script" "the official download failed (no network?)" ;;
  esac
}

# A Prometheus on PATH must be Prometheus 3 (created-timestamp-zero-ingestion, the OTLP receiver); others pass.
path_ok() {
  [[ "$1" != prometheus ]] && return 0
  prometheus --version 2>&1 | grep -Eq 'version 3\.' && return 0
  tb_log "ignoring $(command -v prometheus): not Prometheus 3 (tokenbridge needs created-timestamp-zero-ingestion and the OTLP receiver)"
  return 1
}

find_collector() {
  find_binary "the collector (otelcol-contrib $TB_OTELCOL_VERSION)" TOKENBRIDGE_OTELCOL_BIN otelcol-contrib \
    "$TB_OTELCOL_VERSION" otelcol-contrib build-collector.sh otelcol-tokenbridge otelcol-contrib
}

find_prometheus() {
  find_binary "Prometheus $TB_PROMETHEUS_VERSION" TOKENBRIDGE_PROMETHEUS_BIN prometheus "$TB_PROMETHEUS_VERSION" \
    prometheus build-prometheus.sh prometheus
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



optional=()
otelcol="$(find_collector)"
prometheus="$(find_prometheus)"
alertmanager="$(find_alertmanager)"
grafana_home="$(tb_grafana_home)"
grafana_problem="$(tb_grafana_password_problem)"
tb_alert_config
echo "tokenbridge native mode (state: $TOKENBRIDGE_NATIVE_DIR)"

# Collector: the repo's config, ports from env. Claude Code's events go on to the bridge's receiver (docs/events.md)
# unless the bridge is not started here; while the bridge is down they wait on disk in otelcol-queue. The bridge
# listens on loopback here: TOKENBRIDGE_EVENTS_TOKEN is optional (both processes get it from .env when set).
logs_exporters="[debug, signal_to_metrics, otlphttp/tokenbridge]"
[[ $with_bridge == 1 ]] || logs_exporters="[debug, signal_to_metrics]"
TOKENBRIDGE_EVENTS_ENDPOINT="http://127.0.0.1:$EVENTS_PORT" TOKENBRIDGE_LOGS_EXPORTERS="$logs_exporters" \
TOKENBRIDGE_EVENTS_QUEUE_DIR="$TOKENBRIDGE_NATIVE_DIR/otelcol-queue" \
OTELCOL_GRPC_ENDPOINT="$TOKENBRIDGE_BIND:$OTLP_GRPC_PORT" \
OTELCOL_HTTP_ENDPOINT="$TOKENBRIDGE_BIND:$OTLP_HTTP_PORT" \
OTELCOL_PROMETHEUS_ENDPOINT="127.0.0.1:$OTELCOL_PROM_PORT" \
OTELCOL_HEALTH_ENDPOINT="127.0.0.1:$OTELCOL_HEALTH_PORT" \
OTELCOL_TELEMETRY_HOST=127.0.0.1 OTELCOL_TELEMETRY_PORT="$OTELCOL_METRICS_PORT" \
  tb_spawn otel-collector "$otelcol" "--config=$TB_ROOT/otel-collector-config.yml"

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
tb_spawn prometheus "$prometheus" "--config.file=$cfgdir/prometheus.yml" \
  "--storage.tsdb.path=$TOKENBRIDGE_NATIVE_DIR/prometheus-data" \
  "--web.listen-address=$TOKENBRIDGE_BIND:$PROMETHEUS_PORT" "${pflags[@]}"

if [[ -n "$alertmanager" ]]; then
  tb_spawn alertmanager "$alertmanager" "--config.file=$TB_ROOT/alertmanager/alertmanager.yml" \
    "--storage.path=$TOKENBRIDGE_NATIVE_DIR/alertmanager-data" \
    "--web.listen-address=$TOKENBRIDGE_BIND:$ALERTMANAGER_PORT" "--cluster.listen-address="
fi

ok=1
tb_wait_http otel-collector "http://127.0.0.1:$OTELCOL_HEALTH_PORT/" 30 || ok=0
tb_wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 30 || ok=0
if [[ -n "$alertmanager" ]]; then
  tb_wait_http alertmanager "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" 30 || ok=0
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
      OTEL_RESOURCE_ATTRIBUTES="$resattrs" TOKENBRIDGE_EVENTS_PORT="$EVENTS_PORT" TOKENBRIDGE_EVENTS_HOST=127.0.0.1 \
      TOKENBRIDGE_PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT" tb_spawn tokenbridge "${bridge[@]}")
  fi
fi

# Grafana: GRAFANA_HOME, or the official standalone archive scripts/get-grafana.sh put in the cache.
if [[ -n "$grafana_home" && -n "$grafana_problem" ]]; then
  missing+=("Grafana (found at $grafana_home) not started: $grafana_problem")
  grafana_home=""
elif [[ -n "$grafana_home" ]]; then
  prov="$TOKENBRIDGE_NATIVE_DIR/grafana/provisioning"
  rm -rf "$prov"; mkdir -p "$prov"
  cp -R "$TB_ROOT/grafana/provisioning/." "$prov/"
  sed -i.orig "s|/var/lib/grafana/dashboards/tokenbridge|$TB_ROOT/grafana/dashboards|" "$prov/dashboards/tokenbridge.yml"
  rm -f "$prov/dashboards/tokenbridge.yml.orig"
  TOKENBRIDGE_GRAFANA_PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT" \
  GF_PATHS_DATA="$TOKENBRIDGE_NATIVE_DIR/grafana/data" GF_PATHS_LOGS="$TOKENBRIDGE_NATIVE_DIR/logs" \
  GF_PATHS_PROVISIONING="$prov" GF_SERVER_HTTP_ADDR="$TOKENBRIDGE_BIND" GF_SERVER_HTTP_PORT="$GRAFANA_PORT" \
  GF_SECURITY_ADMIN_USER="${GRAFANA_ADMIN_USER:-admin}" GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD" \
  GF_USERS_ALLOW_SIGN_UP=false GF_ANALYTICS_REPORTING_ENABLED=false \
  GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH="$TB_ROOT/grafana/dashboards/ai-usage-overview.json" \
    tb_spawn grafana "$grafana_home/bin/grafana" server --homepath "$grafana_home"
else
  missing+=("Grafana: no Docker engine and no local Grafana. Get the official standalone Grafana OSS $TB_GRAFANA_VERSION (verified download, no root) with scripts/get-grafana.sh, then run ./start.sh again; or set GRAFANA_HOME=<an unpacked Grafana>. Until then ./view.sh opens the bridge's own page")
fi

echo
echo "  OTLP        grpc $TOKENBRIDGE_BIND:$OTLP_GRPC_PORT, http $TOKENBRIDGE_BIND:$OTLP_HTTP_PORT  -> source telemetry.sh"
echo "  Prometheus  http://127.0.0.1:$PROMETHEUS_PORT"
[[ -n "$alertmanager" ]] && echo "  Alerts      http://127.0.0.1:$ALERTMANAGER_PORT"
[[ -n "$grafana_home" ]] && echo "  Grafana     http://127.0.0.1:$GRAFANA_PORT  (user ${GRAFANA_ADMIN_USER:-admin}, password in .env)"
((${#bridge[@]})) && echo "  Web view    http://127.0.0.1:$WEB_PORT  (./view.sh opens Grafana when it runs, else this page)"
((${#bridge[@]})) && first_data_note
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
