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
# shellcheck disable=SC2034
TB_GRAFANA_VERSION="13.2.0"

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

# A random hex secret of $1 bytes (openssl when present), never printed by the callers.
tb_random_hex() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -hex "$1"
  else head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; fi
}

# The bridge's events receiver listens beyond loopback in Docker and then requires a shared token, sent by the
# collector (docs/events.md). Append a random TOKENBRIDGE_EVENTS_TOKEN to the env file FILE unless it has one;
# prints "added" when it did. An .env written before the token existed gets one on the next ./start.sh.
tb_ensure_events_token() {
  local file="$1"
  [[ -f "$file" ]] || return 0
  grep -Eq '^[[:space:]]*TOKENBRIDGE_EVENTS_TOKEN=[^[:space:]]+' "$file" && return 0
  (umask 077 && printf '\n# Written by scripts/init.sh: the shared token of the bridge'"'"'s events receiver (collector -> bridge).\nTOKENBRIDGE_EVENTS_TOKEN=%s\n' \
    "$(tb_random_hex 24)" >>"$file")
  echo added
}

# Port and path defaults (override in .env or the environment).
tb_defaults() {
  tb_load_env "$TB_ROOT/.env"
  TB_CACHE_DIR="${TOKENBRIDGE_CACHE_DIR:-$HOME/.cache/tokenbridge}"  # .env may set it
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
  : "${EVENTS_PORT:=14319}"           # the bridge's receiver of Claude Code's events, fed by the collector
  : "${PROMETHEUS_RETENTION:=90d}"
  : "${TOKENBRIDGE_NATIVE_DIR:=${XDG_STATE_HOME:-$HOME/.local/state}/tokenbridge/native}"
  export TOKENBRIDGE_BIND OTLP_GRPC_PORT OTLP_HTTP_PORT PROMETHEUS_PORT GRAFANA_PORT ALERTMANAGER_PORT OTELCOL_PROM_PORT \
    OTELCOL_HEALTH_PORT OTELCOL_METRICS_PORT WEB_PORT EVENTS_PORT PROMETHEUS_RETENTION TOKENBRIDGE_NATIVE_DIR
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

# tb_spawn NAME CMD... : start CMD in the background (environment from the caller), log to NAME's log file, record
# "pid binary" in NAME's pid file; a NAME already running is left alone. Used by start.sh and team-server.sh.
tb_spawn() {
  local name="$1"; shift
  local log pid; log="$(tb_logfile "$name")"
  if pid="$(tb_native_pid "$name")"; then
    echo "  $name already running (pid $pid)"
    return 0
  fi
  nohup "$@" >>"$log" 2>&1 </dev/null &
  echo "$! $1" >"$(tb_pidfile "$name")"
  echo "  $name started (pid $!, log $log)"
}

# tb_wait_http NAME URL SECONDS: wait until URL answers 2xx; fails early (with NAME's last log lines) if NAME exited.
tb_wait_http() {
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    tb_http_ok "$2" && return 0
    tb_native_pid "$1" >/dev/null || { tb_log "$1 exited; last log lines:"; tail -n 20 "$(tb_logfile "$1")" >&2; return 1; }
    sleep 0.25
  done
  tb_log "$1 did not answer $2 within $3 s; see $(tb_logfile "$1")"
  return 1
}

# tb_stop_native NAME: SIGTERM, up to 15 s to exit, then SIGKILL; removes the pid file. Prints "stopped NAME (pid N)"
# and returns 0 when something was running, 1 otherwise.
tb_stop_native() {
  local name="$1" pid rc=1
  if pid="$(tb_native_pid "$name")"; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      tb_log "$name (pid $pid) did not stop within 15 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)"
    rc=0
  fi
  rm -f "$(tb_pidfile "$name")"
  return $rc
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
# from the tokenbridge config file's [budgets]/[alerts] ($TOKENBRIDGE_CONFIG, else the user's config.toml), then
# .env, then the environment; both git-ignored. A bad value stops the start with the file key or variable named.
tb_alert_config() {
  local py; py="$(tb_python)"
  "$py" "$TB_ROOT/prometheus/generate_rules.py" --thresholds --env-file "$TB_ROOT/.env" \
    || tb_die "fix the alert threshold named above (config file or .env)"
  "$py" "$TB_ROOT/scripts/alertmanager_config.py" --env-file "$TB_ROOT/.env" \
    || tb_die "fix the alert setting named above (config file or .env)"
}

# Move a finished build ($work/out) into its cache directory in one step (a half-built directory is never
# cached), check that BIN runs, and print its path. Used by every build-*.sh after `go build`.
# Args: outdir bin.
tb_install_build() {
  local outdir="$1" bin="$2"
  mkdir -p "$(dirname "$outdir")"
  rm -rf "$outdir.tmp"
  mv "$work/out" "$outdir.tmp"
  rm -rf "$outdir"
  mv "$outdir.tmp" "$outdir"
  "$bin" --version >&2 || tb_die "built $bin does not run"
  echo "$bin"
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

# ---- official release archives (scripts/release-checksums.txt)

# The host as the release archives name it: linux-amd64, darwin-arm64, ...
tb_platform() {
  local os arch
  os="$(uname -s | tr '[:upper:]' '[:lower:]')"
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch="$(uname -m)" ;;
  esac
  printf '%s-%s\n' "$os" "$arch"
}

tb_sha256() { # tb_sha256 FILE -> full hex digest
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# tb_release_entry NAME VERSION PLATFORM -> "sha256 url" from the checksums file (TOKENBRIDGE_CHECKSUMS_FILE overrides
# it, for tests); the URL's directory is replaced by TOKENBRIDGE_<NAME>_DOWNLOAD_BASE or TOKENBRIDGE_DOWNLOAD_BASE.
tb_release_entry() {
  local file="${TOKENBRIDGE_CHECKSUMS_FILE:-$TB_ROOT/scripts/release-checksums.txt}" n v p sha url var base
  [[ -r "$file" ]] || return 1
  while read -r n v p sha url _; do
    [[ "$n" == "$1" && "$v" == "$2" && "$p" == "$3" ]] || continue
    [[ "$sha" =~ ^[0-9a-f]{64}$ && -n "$url" ]] || return 1
    var="TOKENBRIDGE_$(printf '%s' "${1%%-*}" | tr '[:lower:]' '[:upper:]')_DOWNLOAD_BASE"
    base="${!var:-${TOKENBRIDGE_DOWNLOAD_BASE:-}}"
    [[ -n "$base" ]] && url="${base%/}/${url##*/}"
    printf '%s %s\n' "$sha" "$url"
    return 0
  done < <(grep -v '^[[:space:]]*#' "$file")
  return 1
}

tb_download() { # tb_download URL FILE: progress on a terminal, quiet otherwise
  if command -v curl >/dev/null 2>&1; then
    local progress=(-sS)
    [[ -t 2 ]] && progress=(--progress-bar)
    curl -fL --connect-timeout 15 --retry 2 "${progress[@]}" -o "$2" "$1"
  else
    "$(tb_python)" - "$1" "$2" <<'PY'
import shutil, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as r, open(sys.argv[2], "wb") as out:
        shutil.copyfileobj(r, out)
except OSError as exc:
    sys.exit(f"{sys.argv[1]}: {exc}")
PY
  fi
}

# tb_fetch_release NAME VERSION: the official archive for this host, downloaded once, verified against its pinned
# SHA-256 and unpacked into $TB_CACHE_DIR/bin/NAME-VERSION-PLATFORM-<sha prefix>; prints that directory.
# Returns 2 when no checksum is pinned for this platform, 1 when the download failed (no network, HTTP error),
# 3 when the archive's SHA-256 differs (the archive is deleted, nothing from it is unpacked or run).
# With TB_FETCH_CACHED_ONLY=1 it only answers from the cache (4 when absent).
tb_fetch_release() {
  local name="$1" version="$2" platform entry sha url dir archive got
  platform="$(tb_platform)"
  if ! entry="$(tb_release_entry "$name" "$version" "$platform")"; then
    tb_log "$name $version: no official archive with a pinned checksum for $platform (scripts/release-checksums.txt)"
    return 2
  fi
  sha="${entry%% *}"; url="${entry#* }"
  dir="$TB_CACHE_DIR/bin/$name-$version-$platform-${sha:0:12}"
  if [[ -f "$dir/.verified" ]]; then echo "$dir"; return 0; fi
  [[ "${TB_FETCH_CACHED_ONLY:-0}" == 1 ]] && return 4
  mkdir -p "$TB_CACHE_DIR/downloads"
  archive="$TB_CACHE_DIR/downloads/${url##*/}"
  tb_log "$name $version: downloading the official release $url"
  if ! tb_download "$url" "$archive.part"; then
    rm -f "$archive.part"
    tb_log "$name $version: download failed ($url)"
    return 1
  fi
  got="$(tb_sha256 "$archive.part")"
  if [[ "$got" != "$sha" ]]; then
    rm -f "$archive.part"
    tb_log "error: $name $version: the archive from $url FAILED checksum verification (SHA-256 $got, pinned $sha): deleted, not unpacked, not run"
    return 3
  fi
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  if ! tar -xzf "$archive.part" -C "$dir.tmp"; then
    rm -rf "$dir.tmp" "$archive.part"
    tb_log "$name $version: the verified archive from $url does not unpack (tar -xzf failed)"
    return 1
  fi
  rm -f "$archive.part"  # unpacked; the archive itself is not kept
  printf '%s  %s\n' "$sha" "$url" >"$dir.tmp/.verified"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  tb_log "$name $version: SHA-256 verified, unpacked into $dir"
  echo "$dir"
}

# tb_release_file DIR NAME -> the executable NAME inside an unpacked release (at most two directories down).
tb_release_file() {
  local f
  for f in "$1/$2" "$1"/*/"$2" "$1"/*/*/"$2"; do
    if [[ -f "$f" && -x "$f" ]]; then echo "$f"; return 0; fi
  done
  tb_log "no executable $2 inside $1"
  return 1
}

# The Go build fallback: announced before it starts (it is long and large), with its own progress on stderr.
# tb_go_fallback WHAT SCRIPT WHY -> prints the built binary's path.
tb_go_fallback() {
  command -v go >/dev/null 2>&1 || tb_die "cannot get $1: $3, and Go is not installed to build it from source (install Go >= 1.25 from https://go.dev/dl/, put the official binary on PATH, or set the TOKENBRIDGE_*_BIN variable)"
  tb_log "$3: building $1 from source with Go instead. This takes several minutes and ~5 GB of disk (Go module and build caches) the first time; it is cached afterwards. Progress follows."
  "$TB_ROOT/scripts/$2" | tail -n1
}

# Grafana's home (the unpacked standalone archive): GRAFANA_HOME, else the one scripts/get-grafana.sh put in the
# cache. Prints nothing when there is none.
tb_grafana_home() {
  local dir bin
  if [[ -n "${GRAFANA_HOME:-}" ]]; then
    [[ -x "$GRAFANA_HOME/bin/grafana" ]] || tb_die "GRAFANA_HOME=$GRAFANA_HOME has no executable bin/grafana"
    echo "$GRAFANA_HOME"; return 0
  fi
  dir="$(TB_FETCH_CACHED_ONLY=1 tb_fetch_release grafana "${TOKENBRIDGE_GRAFANA_VERSION:-$TB_GRAFANA_VERSION}" 2>/dev/null)" || return 0
  bin="$(tb_release_file "$dir" bin/grafana 2>/dev/null)" || return 0
  dirname "$(dirname "$bin")"
}

# The Grafana admin password must be set and must not be .env.example's placeholder: prints what is wrong, if anything.
tb_grafana_password_problem() {
  local what=""
  [[ -z "${GRAFANA_ADMIN_PASSWORD:-}" ]] && what="not set"
  [[ "${GRAFANA_ADMIN_PASSWORD:-}" == "change-me-please" ]] && what="still the placeholder from .env.example"
  [[ -z "$what" ]] || printf 'GRAFANA_ADMIN_PASSWORD is %s: set your own in %s (or delete .env and run scripts/init.sh, which writes a random one)\n' "$what" "$TB_ROOT/.env"
}

# ---- Docker mode: the agents' directories the bridge container reads (docker-compose.yml mounts them read-only with
# create_host_path: false, so Docker never creates a root-owned directory in $HOME). ~/.claude is created as the user
# when absent (what Claude Code itself does on first run); for the other tools an absent directory is replaced by an
# empty placeholder under the state dir, so nothing is created in their place. Exports the variables compose reads.
TB_AGENT_DIRS=(
  "CLAUDE_HOME .claude" "CLAUDE_XDG_DIR .config/claude" "CODEX_HOST_DIR .codex" "OPENCLAW_HOST_DIR .openclaw"
  "GEMINI_HOST_DIR .gemini" "OPENCODE_HOST_DIR .local/share/opencode" "AMP_HOST_DIR .local/share/amp"
)
tb_compose_mounts() {
  local entry var rel path empty
  empty="${XDG_STATE_HOME:-$HOME/.local/state}/tokenbridge/absent"
  for entry in "${TB_AGENT_DIRS[@]}"; do
    var="${entry%% *}"; rel="${entry#* }"
    path="${!var:-$HOME/$rel}"
    if [[ ! -d "$path" && "$var" == CLAUDE_HOME ]]; then
      (umask 077 && mkdir -p "$path") || tb_die "cannot create $path (CLAUDE_HOME) as $(id -un)"
      tb_log "created $path (empty; Claude Code fills it) so that Docker does not create it as root"
    elif [[ ! -d "$path" ]]; then
      path="$empty/${rel//\//_}"
      mkdir -p "$path"
      tb_log "$HOME/$rel not present: the bridge container sees an empty directory there (run ./start.sh again after first use)"
    fi
    export "$var=$path"
  done
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
  : "${TEAM_VMALERT_PORT:=8880}"
  : "${TOKENBRIDGE_TEAM_DIR:=${XDG_STATE_HOME:-$HOME/.local/state}/tokenbridge/team}"
  export TEAM_BIND TEAM_OTLP_GRPC_PORT TEAM_OTLP_HTTP_PORT TEAM_OTELCOL_HEALTH_PORT TEAM_OTELCOL_METRICS_PORT \
    VICTORIAMETRICS_PORT VICTORIAMETRICS_RETENTION TEAM_GRAFANA_PORT TEAM_VMALERT_PORT TOKENBRIDGE_TEAM_DIR
}

# The team server's processes, as scripts/team-server.sh names their pid and log files under $TOKENBRIDGE_TEAM_DIR.
# shellcheck disable=SC2034
TB_TEAM_NAMES=(team-collector victoriametrics team-vmalert team-grafana)

# tb_team_use_dir: the native helpers (tb_pidfile, tb_logfile, tb_native_pid) then work on the team server's files.
tb_team_use_dir() {
  tb_team_defaults
  TOKENBRIDGE_NATIVE_DIR="$TOKENBRIDGE_TEAM_DIR"
}

# tb_team_health_url NAME -> the loopback URL that answers 2xx when NAME is healthy.
tb_team_health_url() {
  case "$1" in
    team-collector) echo "http://127.0.0.1:$TEAM_OTELCOL_HEALTH_PORT/" ;;
    victoriametrics) echo "http://127.0.0.1:$VICTORIAMETRICS_PORT/health" ;;
    team-vmalert) echo "http://127.0.0.1:$TEAM_VMALERT_PORT/health" ;;
    team-grafana) echo "http://127.0.0.1:$TEAM_GRAFANA_PORT/api/health" ;;
  esac
}

tb_team_native_active() {
  [[ -d "$TOKENBRIDGE_TEAM_DIR/run" ]] && compgen -G "$TOKENBRIDGE_TEAM_DIR/run/*.pid" >/dev/null
}

# VictoriaMetrics flags; the same list as docker-compose.yml's victoriametrics command (tests check it).
tb_victoriametrics_flags() {
  printf '%s\n' "-retentionPeriod=${VICTORIAMETRICS_RETENTION:-400d}"
}

# tb_vmalert_flags VM_URL RULE_FILE... -> vmalert's flags, one a line; the same list as docker-compose.yml's
# team-vmalert command (tests check it). VictoriaMetrics is the datasource, where the records and ALERTS series go,
# and where alert state is restored from after a restart (-remoteRead.url). Alerts go to TEAM_ALERTMANAGER_URL, else
# nowhere (-notifier.blackhole: vmalert refuses to start with no notifier); the notifier line is written exactly as
# compose interpolates it.
tb_vmalert_flags() {
  local vm="$1" rule; shift
  printf '%s\n' "-datasource.url=$vm" "-remoteWrite.url=$vm" "-remoteRead.url=$vm" \
    "${TEAM_ALERTMANAGER_URL:+-notifier.url=}${TEAM_ALERTMANAGER_URL:--notifier.blackhole}"
  for rule in "$@"; do printf '%s\n' "-rule=$rule"; done
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
