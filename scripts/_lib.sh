# shellcheck shell=bash
# Shared helpers for tokenbridge's scripts. Sourced, never executed.

# shellcheck disable=SC2034  # constants used by the scripts that source this file
TB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034
TB_CACHE_DIR="${TOKENBRIDGE_CACHE_DIR:-$HOME/.cache/tokenbridge}"
# Versions pinned here must match docker-compose.yml (tests/test_compose.py checks it).
# shellcheck disable=SC2034
TB_OTELCOL_VERSION="0.159.0"
# shellcheck disable=SC2034
TB_OCB_VERSION="v0.159.0"
# shellcheck disable=SC2034
TB_PROMETHEUS_VERSION="3.14.0"
# shellcheck disable=SC2034
TB_ALERTMANAGER_VERSION="0.35.0"
# shellcheck disable=SC2034
TB_VICTORIAMETRICS_VERSION="1.151.0"

tb_log() { printf '%s\n' "$*" >&2; }
tb_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

tb_need() {
  # tb_need CMD "how to get it"
  command -v "$1" >/dev/null 2>&1 || tb_die "$1 not found on PATH; $2"
}

tb_sha() {
  # sha256 of stdin, first 12 hex chars
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -c1-12
  else shasum -a 256 | cut -c1-12; fi
}

# Load .env (KEY=VALUE lines) without overriding variables already set in the environment.
tb_load_env() {
  local file="$1" line key val
  [[ -f "$file" ]] || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[1]}"; val="${BASH_REMATCH[2]}"
    val="${val%\"}"; val="${val#\"}"; val="${val%\'}"; val="${val#\'}"
    [[ -n "${!key+x}" ]] || export "$key=$val"
  done <"$file"
}

# Port and path defaults (override in .env or the environment).
tb_defaults() {
  tb_load_env "$TB_ROOT/.env"
  : "${TOKENBRIDGE_BIND:=127.0.0.1}"
  : "${OTLP_GRPC_PORT:=14317}"
  : "${OTLP_HTTP_PORT:=14318}"
  : "${PROMETHEUS_PORT:=9090}"
  : "${GRAFANA_PORT:=3000}"
  : "${ALERTMANAGER_PORT:=9093}"
  : "${OTELCOL_PROM_PORT:=18889}"     # collector's Prometheus exporter (scraped by Prometheus)
  : "${OTELCOL_HEALTH_PORT:=13133}"
  : "${OTELCOL_METRICS_PORT:=18888}"  # collector's own telemetry
  : "${WEB_PORT:=8765}"               # the bridge's web view and HTTP API (native mode, loopback)
  : "${PROMETHEUS_RETENTION:=90d}"
  : "${TOKENBRIDGE_NATIVE_DIR:=${XDG_STATE_HOME:-$HOME/.local/state}/tokenbridge/native}"
  export TOKENBRIDGE_BIND OTLP_GRPC_PORT OTLP_HTTP_PORT PROMETHEUS_PORT GRAFANA_PORT ALERTMANAGER_PORT OTELCOL_PROM_PORT \
    OTELCOL_HEALTH_PORT OTELCOL_METRICS_PORT WEB_PORT PROMETHEUS_RETENTION TOKENBRIDGE_NATIVE_DIR
}

# True when a Docker engine answers and compose v2 is available.
tb_have_docker() {
  [[ "${TOKENBRIDGE_MODE:-}" == "native" ]] && return 1
  command -v docker >/dev/null 2>&1 || return 1
  docker info >/dev/null 2>&1 || return 1
  docker compose version >/dev/null 2>&1
}

tb_http_ok() {
  # tb_http_ok URL -> 0 when the URL answers 2xx
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null --max-time 3 "$1" 2>/dev/null
  else
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=3)
PY
  fi
}

# Prometheus flags; the same list as docker-compose.yml's prometheus command (tests/test_scripts.py checks it).
tb_prometheus_flags() {
  printf '%s\n' \
    "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-90d}" \
    "--enable-feature=created-timestamp-zero-ingestion" \
    "--enable-feature=promql-extended-range-selectors" \
    "--web.enable-otlp-receiver" \
    "--web.enable-remote-write-receiver" \
    "--web.enable-lifecycle"
}

# ---- native mode: processes under $TOKENBRIDGE_NATIVE_DIR/{run,logs,...}
tb_pidfile() { printf '%s/run/%s.pid' "$TOKENBRIDGE_NATIVE_DIR" "$1"; }
tb_logfile() { printf '%s/logs/%s.log' "$TOKENBRIDGE_NATIVE_DIR" "$1"; }

# tb_native_pid NAME -> prints the pid when the process recorded for NAME is alive (and is what we started).
tb_native_pid() {
  local f pid cmd
  f="$(tb_pidfile "$1")"
  [[ -f "$f" ]] || return 1
  read -r pid cmd <"$f" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the live process must still run the binary we recorded.
  if [[ -r "/proc/$pid/cmdline" && -n "$cmd" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$cmd" || return 1
  fi
  echo "$pid"
}

tb_native_mode_active() {
  [[ -d "$TOKENBRIDGE_NATIVE_DIR/run" ]] && compgen -G "$TOKENBRIDGE_NATIVE_DIR/run/*.pid" >/dev/null
}

# Python for JSON handling in status/metrics.
tb_python() {
  if command -v python3 >/dev/null 2>&1; then echo python3
  elif command -v python >/dev/null 2>&1; then echo python
  else tb_die "python3 not found on PATH; install Python 3.11+"; fi
}

# Alert thresholds (prometheus/rules/thresholds.yml) and the Alertmanager config (alertmanager/alertmanager.yml)
# from .env and the environment; both git-ignored. A bad value stops the start with the key named.
tb_alert_config() {
  local py; py="$(tb_python)"
  "$py" "$TB_ROOT/prometheus/generate_rules.py" --thresholds --env-file "$TB_ROOT/.env" \
    || tb_die "fix the alert threshold in .env named above"
  "$py" "$TB_ROOT/scripts/alertmanager_config.py" --env-file "$TB_ROOT/.env" \
    || tb_die "fix the alert setting in .env named above"
}

# Download a Go module and copy its source into a writable build directory: sets $work ($work/src holds the
# source; the directory is removed at exit). The module's go.work is dropped: it names directories absent from
# the module zip (build with GOWORK=off). Used by the build scripts of Prometheus and Alertmanager.
# Args: label module version mktemp-prefix.
tb_go_module_src() {
  local label="$1" module="$2" version="$3" prefix="$4" moddir
  tb_need go "install Go >= 1.25 from https://go.dev/dl/"
  tb_log "$label: downloading module $module@$version"
  moddir="$(GOFLAGS=-mod=mod go mod download -json "$module@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$moddir" && -d "$moddir" ]] || tb_die "go mod download of $module@$version gave no directory"
  work="$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  cp -R "$moddir/." "$work/src"
  chmod -R u+w "$work/src"
  rm -f "$work/src/go.work" "$work/src/go.work.sum"
}

# ---- team mode's central side (scripts/team-server.sh; docs/team.md)
tb_team_defaults() {
  : "${TEAM_BIND:=0.0.0.0}"             # the team OTLP receivers face the network (tokens required)
  : "${TEAM_OTLP_GRPC_PORT:=4317}"
  : "${TEAM_OTLP_HTTP_PORT:=4318}"
  : "${TEAM_OTELCOL_HEALTH_PORT:=13134}"
  : "${TEAM_OTELCOL_METRICS_PORT:=18898}"
  : "${VICTORIAMETRICS_PORT:=8428}"
  : "${VICTORIAMETRICS_RETENTION:=400d}"
  : "${TEAM_GRAFANA_PORT:=3001}"
  : "${TOKENBRIDGE_TEAM_DIR:=${XDG_STATE_HOME:-$HOME/.local/state}/tokenbridge/team}"
  export TEAM_BIND TEAM_OTLP_GRPC_PORT TEAM_OTLP_HTTP_PORT TEAM_OTELCOL_HEALTH_PORT TEAM_OTELCOL_METRICS_PORT \
    VICTORIAMETRICS_PORT VICTORIAMETRICS_RETENTION TEAM_GRAFANA_PORT TOKENBRIDGE_TEAM_DIR
}

tb_team_native_active() {
  [[ -d "$TOKENBRIDGE_TEAM_DIR/run" ]] && compgen -G "$TOKENBRIDGE_TEAM_DIR/run/*.pid" >/dev/null
}

# VictoriaMetrics flags; the same list as docker-compose.yml's victoriametrics command (tests check it).
tb_victoriametrics_flags() {
  printf '%s\n' "-retentionPeriod=${VICTORIAMETRICS_RETENTION:-400d}"
}

# The collector cache key (12 hex chars): the manifest plus the source of every local module it names with
# `path: ./dir` (relative to the manifest; test files excluded), so editing collector/teamauth rebuilds. A manifest
# without local modules keys on its own hash alone.
tb_otelcol_key() {
  local manifest="$1" dir p f
  dir="$(cd "$(dirname "$manifest")" && pwd)"
  local paths=()
  while IFS= read -r p; do
    [[ -n "$p" ]] || continue
    [[ "$p" == /* ]] || p="$dir/${p#./}"
    [[ -d "$p" ]] || tb_die "local module $p named in $manifest not found"
    paths+=("$p")
  done < <(sed -n 's/^[[:space:]]*path:[[:space:]]*\([^[:space:]#]*\).*$/\1/p' "$manifest")
  {
    cat "$manifest"
    for p in ${paths[@]+"${paths[@]}"}; do
      (cd "$p" && find . -type f ! -name '*_test.go' | LC_ALL=C sort | while IFS= read -r f; do echo "$f"; cat "$f"; done)
    done
  } | tb_sha
}
