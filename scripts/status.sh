#!/usr/bin/env bash
# Health of the tokenbridge stack: each service, the telemetry variables in THIS shell, and whether Prometheus
# holds claude_code_* series. Exit status 1 when something needs attention.
# --team-server: the central side of team mode instead (docs/team.md): its processes and their health, the tokens
# file (users counted, tokens never shown), TLS, what the team collector accepted, refused and wrote, what
# VictoriaMetrics ingested, and the log files.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults
py="$(tb_python)"

team=0
for arg in "$@"; do
  case "$arg" in
    --team-server) team=1 ;;
    *) tb_die "unknown option '$arg' (usage: scripts/status.sh [--team-server])" ;;
  esac
done

problems=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; problems=$((problems + 1)); }
warn() { printf '  warn  %s\n' "$*"; }

# The tokens file of the running team collector: this shell's setting, else the collector's own environment.
team_tokens_file() {
  local pid="$1"
  if [[ -n "${TOKENBRIDGE_TEAM_TOKENS_FILE:-}" ]]; then echo "$TOKENBRIDGE_TEAM_TOKENS_FILE"; return; fi
  [[ -n "$pid" && -r "/proc/$pid/environ" ]] || return 0
  tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^TOKENBRIDGE_TEAM_TOKENS_FILE=//p'
}

# The per-user budget alerts vmalert has firing now (alert names and users; nothing else), when it answers.
team_budget_alerts() {
  local url="http://127.0.0.1:$TEAM_VMALERT_PORT" firing
  tb_http_ok "$url/health" || return 0
  firing="$("$py" - "$url" <<'PY' 2>/dev/null || echo "?"
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/v1/alerts", timeout=5) as r:
    alerts = json.load(r)["data"]["alerts"]
print(", ".join(sorted({f'{a["name"]} ({a["labels"].get("user", "?")})' for a in alerts if a["state"] == "firing"})) or "none")
PY
)"
  if [[ "$firing" == none ]]; then ok "no budget alerts firing (vmalert $url)"; else warn "budget alerts firing: $firing"; fi
}

team_status() {
  local mode name url pid state col_pid="" f users collector_url=""
  tb_team_use_dir
  if tb_team_native_active || ! tb_have_docker; then mode=native; else mode=docker; fi
  echo "Team server ($mode mode, state $TOKENBRIDGE_TEAM_DIR):"
  for name in "${TB_TEAM_NAMES[@]}"; do
    url="$(tb_team_health_url "$name")"
    if [[ $mode == native ]]; then
      if pid="$(tb_native_pid "$name")"; then
        [[ $name == team-collector ]] && col_pid="$pid"
        if tb_http_ok "$url"; then ok "$name (pid $pid, $url)"; else bad "$name (pid $pid) not answering $url"; fi
      elif [[ $name == team-grafana ]]; then
        warn "team-grafana not running (the team server runs it when GRAFANA_HOME is set; see docs/team.md)"
      elif [[ $name == team-vmalert ]]; then
        warn "team-vmalert not running: no per-user budget alerts (the team server runs it when a vmalert binary is available: TOKENBRIDGE_VMALERT_BIN, PATH or scripts/build-vmalert.sh)"
      else
        bad "$name is not running (./start.sh --team-server; log: $(tb_logfile "$name"))"
      fi
    else
      state="$(docker compose --project-directory "$TB_ROOT" --profile team ps --format '{{.State}}' "$name" 2>/dev/null)" || state=""
      if [[ "$state" == running ]] && tb_http_ok "$url"; then ok "$name container running ($url)"
      else bad "$name container: ${state:-not created}, $url not answering"; fi
    fi
  done
  team_budget_alerts
  if [[ $mode == native ]]; then
    f="$(team_tokens_file "$col_pid")"
    if [[ -z "$f" ]]; then warn "tokens file unknown (TOKENBRIDGE_TEAM_TOKENS_FILE unset here and no running collector)"
    elif [[ ! -r "$f" ]]; then bad "tokens file $f is not readable"
    else
      # Users, never tokens: the part before the first colon of each user:token line.
      users="$(grep -Ev '^[[:space:]]*(#|$)' "$f" | cut -d: -f1 | tr -d '[:blank:]' | sort -u | grep -c . || true)"
      ok "tokens file $f (users: $users; re-read when it changes)"
      if [[ -n "$(find "$f" -perm /o=rwx 2>/dev/null)" ]]; then warn "$f is readable by other users: chmod 600 it"; fi
    fi
    if [[ -n "$col_pid" ]]; then
      if tr '\0' ' ' <"/proc/$col_pid/cmdline" 2>/dev/null | grep -q 'otel-collector-team-tls.yml'; then ok "TLS on both OTLP receivers"
      else warn "no TLS: tokens cross the network in clear text (docs/team.md, TLS)"; fi
    fi
  fi
  collector_url="http://127.0.0.1:$TEAM_OTELCOL_METRICS_PORT/metrics"
  echo "Traffic (counters since each process started):"
  local args=(traffic --collector "$collector_url" --vm "http://127.0.0.1:$VICTORIAMETRICS_PORT")
  if [[ $mode == native ]]; then
    "$py" "$TB_ROOT/scripts/team_stats.py" "${args[@]}" --log "$(tb_logfile team-collector)" || problems=$((problems + 1))
  else
    docker compose --project-directory "$TB_ROOT" --profile team logs --no-color team-collector 2>/dev/null \
      | "$py" "$TB_ROOT/scripts/team_stats.py" "${args[@]}" --log - || problems=$((problems + 1))
  fi
  if [[ $mode == native ]]; then
    echo "Logs (scripts/logs.sh --team-server [NAME] [-f]):"
    for name in "${TB_TEAM_NAMES[@]}"; do
      f="$(tb_logfile "$name")"
      [[ -f "$f" ]] && printf '  %-16s %s\n' "$name" "$f"
    done
  else
    echo "Logs: scripts/logs.sh --team-server [NAME] [-f] (docker compose --profile team logs)"
  fi
  if [[ $problems -gt 0 ]]; then echo "$problems problem(s)."; exit 1; fi
  echo "All good."
  exit 0
}
[[ $team == 1 ]] && team_status

if tb_native_mode_active; then mode=native
elif tb_have_docker; then mode=docker
else mode=native; fi
echo "Services ($mode mode):"

check() { # check NAME URL
  if tb_http_ok "$2"; then ok "$1 ($2)"; else bad "$1 not answering $2"; fi
}
check "collector health_check" "http://127.0.0.1:$OTELCOL_HEALTH_PORT/"
check "prometheus" "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
if tb_http_ok "http://127.0.0.1:$GRAFANA_PORT/api/health"; then ok "grafana (http://127.0.0.1:$GRAFANA_PORT)"
elif [[ $mode == native ]]; then warn "grafana not running (native mode runs it after scripts/get-grafana.sh, or with GRAFANA_HOME)"
else bad "grafana not answering http://127.0.0.1:$GRAFANA_PORT/api/health"; fi
if tb_http_ok "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready"; then
  ok "alertmanager (http://127.0.0.1:$ALERTMANAGER_PORT)"
  firing="$("$py" - "http://127.0.0.1:$ALERTMANAGER_PORT" <<'PY' 2>/dev/null || echo "?"
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/api/v2/alerts?active=true&silenced=false&inhibited=false", timeout=5) as r:
    alerts = json.load(r)
print(", ".join(sorted({a["labels"].get("alertname", "?") for a in alerts})) or "none")
PY
)"
  if [[ "$firing" == none ]]; then ok "no alerts firing"; else warn "alerts firing: $firing"; fi
elif [[ $mode == native ]]; then warn "alertmanager not running (native mode runs it when a binary is available; see scripts/start.sh)"
else bad "alertmanager not answering http://127.0.0.1:$ALERTMANAGER_PORT/-/ready"; fi
if [[ $mode == native ]]; then
  if pid="$(tb_native_pid tokenbridge)"; then ok "tokenbridge run (pid $pid)"
  else bad "tokenbridge run is not running (log: $(tb_logfile tokenbridge))"; fi
else
  state="$(docker compose --project-directory "$TB_ROOT" ps --format '{{.State}}' tokenbridge 2>/dev/null)" || state=""
  if [[ "$state" == running ]]; then ok "tokenbridge container running"; else bad "tokenbridge container: ${state:-not created}"; fi
fi

echo "Telemetry variables in this shell (source telemetry.sh sets them):"
if [[ "${CLAUDE_CODE_ENABLE_TELEMETRY:-}" == 1 ]]; then ok "CLAUDE_CODE_ENABLE_TELEMETRY=1"
else bad "CLAUDE_CODE_ENABLE_TELEMETRY is not 1: Claude Code started from this shell sends nothing"; fi
if [[ ",${OTEL_METRICS_EXPORTER:-}," == *,otlp,* ]]; then ok "OTEL_METRICS_EXPORTER=$OTEL_METRICS_EXPORTER"
else bad "OTEL_METRICS_EXPORTER=${OTEL_METRICS_EXPORTER:-<unset>} (needs otlp)"; fi
proto="${OTEL_EXPORTER_OTLP_METRICS_PROTOCOL:-${OTEL_EXPORTER_OTLP_PROTOCOL:-}}"
endpoint="${OTEL_EXPORTER_OTLP_METRICS_ENDPOINT:-${OTEL_EXPORTER_OTLP_ENDPOINT:-}}"
case "$proto" in
  grpc) want="$OTLP_GRPC_PORT" ;;
  http/protobuf | http/json) want="$OTLP_HTTP_PORT" ;;
  http) want=""; bad "OTEL_EXPORTER_OTLP_PROTOCOL=http is not a valid value: use http/protobuf (or grpc)" ;;
  "") want=""; bad "OTEL_EXPORTER_OTLP_PROTOCOL is unset: Claude Code needs it (grpc or http/protobuf)" ;;
  *) want=""; bad "OTEL_EXPORTER_OTLP_PROTOCOL=$proto is not grpc, http/protobuf or http/json" ;;
esac
if [[ -n "$want" ]]; then
  ok "protocol $proto"
  if [[ "$endpoint" =~ :([0-9]+)(/|$) ]]; then
    if [[ "${BASH_REMATCH[1]}" == "$want" ]]; then ok "endpoint $endpoint"
    else bad "endpoint $endpoint uses port ${BASH_REMATCH[1]}, but $proto goes to port $want"; fi
  else bad "OTEL_EXPORTER_OTLP_ENDPOINT=${endpoint:-<unset>} (expected http://127.0.0.1:$want)"; fi
fi
temporality="${OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE:-}"
case "$temporality" in
  cumulative) ok "temporality cumulative" ;;
  *) warn "temporality ${temporality:-unset, so delta (the Claude Code default)}: fine here (the collector converts delta), but direct remote backends reject delta" ;;
esac

echo "Data in Prometheus:"
series_by_source() {
  "$py" - "http://127.0.0.1:$PROMETHEUS_PORT" <<'PY'
import json, sys, urllib.parse, urllib.request
base = sys.argv[1]
def q(expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]
res = q('count by (source) ({__name__=~"claude_code_.+"})')
if not res:
    print("none")
else:
    for r in sorted(res, key=lambda r: r["metric"].get("source", "")):
        print(f'{r["metric"].get("source", "(no source label: other native metrics)")}: {r["value"][1]} series')
PY
}
if out="$(series_by_source 2>&1)"; then
  if [[ "$out" == none ]]; then
    bad "no claude_code_* series yet: start claude from a shell that sourced telemetry.sh, or check the bridge (scripts/logs.sh tokenbridge)"
  else
    while IFS= read -r line; do ok "$line"; done <<<"$out"
  fi
else
  bad "could not query Prometheus: ${out##*$'\n'}"
fi

if (tb_team_use_dir && tb_team_native_active); then echo "A team server runs here too: scripts/status.sh --team-server"; fi
if [[ $problems -gt 0 ]]; then echo "$problems problem(s)."; exit 1; fi
echo "All good."
