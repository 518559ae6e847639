#!/usr/bin/env bash
# shellcheck shell=bash
# Point Claude Code's native OpenTelemetry export at the tokenbridge collector. SOURCE it (bash or zsh):
#
#   source telemetry.sh                    # OTLP over HTTP/protobuf to 127.0.0.1:14318
#   source telemetry.sh --protocol=grpc    # OTLP over gRPC to 127.0.0.1:14317 (same as: source telemetry-grpc.sh)
#   source telemetry.sh --host=10.0.0.5 --port=4318
#   source telemetry.sh --unset            # remove everything this script sets
#   source telemetry.sh --team --host=team.example.com [--tls] [--token-file=F] [--protocol=grpc]
#                                          # team mode (docs/team.md): the central collector, port 4318 / 4317
#                                          # (TEAM_OTLP_HTTP_PORT / TEAM_OTLP_GRPC_PORT), the bearer token from F
#                                          # (default $TOKENBRIDGE_TEAM_TOKEN_FILE, else
#                                          # ~/.config/tokenbridge/team-token), user= and machine= resource
#                                          # attributes, and TOKENBRIDGE_TEAM=1 for a `tokenbridge run` from here
#
# Then start `claude` from this shell. Ports default to OTLP_HTTP_PORT / OTLP_GRPC_PORT from the environment or
# from the .env next to this file, else 14318 / 14317.
#
# Each sourcing adds a unique service.instance.id to OTEL_RESOURCE_ATTRIBUTES (other keys are kept). Several
# Claude Code processes resumed from one session share session.id; without a distinct instance their series
# have identical labels and collide in the collector (one overwrites the other). Source this script in each
# shell (e.g. from ~/.bashrc), not once before starting tmux: shells that inherit one id share it.

_tb_telemetry_main() {
  local protocol="http/protobuf" host="" port="" do_unset=0 arg here envfile line key val rest item attrs=""
  local team=0 tls=0 token_file="" token="" scheme="http" team_user="" team_machine=""
  local http_port="${OTLP_HTTP_PORT:-}" grpc_port="${OTLP_GRPC_PORT:-}"

  for arg in "$@"; do
    case "$arg" in
      --protocol=grpc) protocol="grpc" ;;
      --protocol=http | --protocol=http/protobuf) protocol="http/protobuf" ;;
      --protocol=http/json) protocol="http/json" ;;
      --protocol=*) echo "telemetry.sh: unknown protocol '${arg#--protocol=}' (use grpc or http)" >&2; return 2 ;;
      --host=*) host="${arg#--host=}" ;;
      --port=*) port="${arg#--port=}" ;;
      --unset) do_unset=1 ;;
      --team) team=1 ;;
      --tls) tls=1 ;;
      --token-file=*) token_file="${arg#--token-file=}" ;;
      -h | --help)
        echo "usage: source telemetry.sh [--protocol=grpc|http] [--host=H] [--port=P] [--unset]"
        echo "       source telemetry.sh --team --host=H [--tls] [--token-file=F] [--protocol=grpc|http] [--port=P]"
        return 0 ;;
      *) echo "telemetry.sh: unknown argument '$arg' (usage: source telemetry.sh [--protocol=grpc|http] [--host=H] [--port=P] [--unset])" >&2
         return 2 ;;
    esac
  done

  # OTEL_RESOURCE_ATTRIBUTES without a service.instance.id this script set before (other keys are the user's).
  rest="${OTEL_RESOURCE_ATTRIBUTES:-}"
  while [ -n "$rest" ]; do
    item="${rest%%,*}"
    if [ "$item" = "$rest" ]; then rest=""; else rest="${rest#*,}"; fi
    case "$item" in
      service.instance.id=tb-*| '') ;;
      user=* | machine=*)  # set by an earlier --team: dropped, --team sets them again
        if [ "${TOKENBRIDGE_TELEMETRY_TEAM:-}" != 1 ]; then attrs="${attrs:+$attrs,}$item"; fi ;;
      *) attrs="${attrs:+$attrs,}$item" ;;
    esac
  done

  if [ "$do_unset" = 1 ]; then
    if [ -n "$attrs" ]; then export OTEL_RESOURCE_ATTRIBUTES="$attrs"; else unset OTEL_RESOURCE_ATTRIBUTES; fi
    unset CLAUDE_CODE_ENABLE_TELEMETRY OTEL_METRICS_EXPORTER OTEL_LOGS_EXPORTER OTEL_EXPORTER_OTLP_PROTOCOL \
      OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE OTEL_METRIC_EXPORT_INTERVAL \
      OTEL_LOGS_EXPORT_INTERVAL
    if [ "${TOKENBRIDGE_TELEMETRY_TEAM:-}" = 1 ]; then
      unset OTEL_EXPORTER_OTLP_HEADERS TOKENBRIDGE_TEAM TOKENBRIDGE_TELEMETRY_TEAM
    fi
    echo "telemetry.sh: Claude Code telemetry variables removed from this shell."
    return 0
  fi

  # Ports from .env next to this file, unless already in the environment.
  if [ -n "${BASH_VERSION:-}" ]; then here="$(dirname "${BASH_SOURCE[0]}")"; else here="$(dirname "$_tb_telemetry_self")"; fi
  envfile="$here/.env"
  if [ -f "$envfile" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in
        OTLP_HTTP_PORT=* | OTLP_GRPC_PORT=*)
          key="${line%%=*}"; val="${line#*=}"; val="${val%\"}"; val="${val#\"}"
          if [ "$key" = OTLP_HTTP_PORT ] && [ -z "$http_port" ]; then http_port="$val"; fi
          if [ "$key" = OTLP_GRPC_PORT ] && [ -z "$grpc_port" ]; then grpc_port="$val"; fi ;;
      esac
    done <"$envfile"
  fi
  if [ "$team" = 1 ]; then
    [ -n "$host" ] || host="${TOKENBRIDGE_TEAM_HOST:-}"
    if [ -z "$host" ]; then
      echo "telemetry.sh: --team needs --host=<team server> (or TOKENBRIDGE_TEAM_HOST)" >&2; return 2
    fi
    grpc_port="${TEAM_OTLP_GRPC_PORT:-4317}"; http_port="${TEAM_OTLP_HTTP_PORT:-4318}"
    [ -n "$token_file" ] || token_file="${TOKENBRIDGE_TEAM_TOKEN_FILE:-$HOME/.config/tokenbridge/team-token}"
    if [ ! -r "$token_file" ]; then
      echo "telemetry.sh: team token file $token_file is not readable (put the token the team server gave you there, chmod 600)" >&2
      return 2
    fi
    IFS= read -r token <"$token_file" || [ -n "$token" ]
    token="$(printf '%s' "$token" | tr -d '\r')"
    case "$token" in
      '') echo "telemetry.sh: team token file $token_file is empty" >&2; return 2 ;;
      *[!A-Za-z0-9._~+/=-]*) echo "telemetry.sh: the token in $token_file has characters a header cannot carry (not shown)" >&2; return 2 ;;
    esac
    case "$token_file" in /*) ;; *) token_file="$PWD/$token_file" ;; esac  # for a bridge started elsewhere
    if [ "$tls" = 1 ] || [ "${TOKENBRIDGE_TEAM_TLS:-}" = 1 ]; then scheme="https"; fi
    team_user="${TOKENBRIDGE_USER:-${LOGNAME:-${USER:-$(id -un 2>/dev/null || echo unknown)}}}"
    team_machine="${TOKENBRIDGE_MACHINE:-$(hostname 2>/dev/null || echo unknown)}"
    team_machine="${team_machine%%.*}"
  fi
  [ -n "$host" ] || host="127.0.0.1"
  if [ -z "$port" ]; then
    if [ "$protocol" = grpc ]; then port="${grpc_port:-14317}"; else port="${http_port:-14318}"; fi
  fi
  case "$port" in
    '' | *[!0-9]*) echo "telemetry.sh: port '$port' is not a number" >&2; return 2 ;;
  esac

  export CLAUDE_CODE_ENABLE_TELEMETRY=1
  export OTEL_METRICS_EXPORTER=otlp
  export OTEL_LOGS_EXPORTER=otlp
  export OTEL_EXPORTER_OTLP_PROTOCOL="$protocol"
  export OTEL_EXPORTER_OTLP_ENDPOINT="$scheme://$host:$port"
  # Claude Code exports DELTA by default; the collector converts it, but cumulative is safer for any backend.
  export OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative
  export OTEL_METRIC_EXPORT_INTERVAL=10000
  export OTEL_LOGS_EXPORT_INTERVAL=5000
  # One id per shell: host, shell pid, time and a random number (only [A-Za-z0-9.-], no percent-encoding needed).
  case "$attrs" in
    service.instance.id=* | *,service.instance.id=*) ;;  # the user's own id wins
    *)
      item="tb-$(printf '%s' "${HOSTNAME:-${HOST:-host}}" | tr -c 'A-Za-z0-9.-' '-')-$$-$(date +%s)-${RANDOM:-0}${RANDOM:-0}"
      attrs="${attrs:+$attrs,}service.instance.id=$item" ;;
  esac
  if [ "$team" = 1 ]; then
    # The central collector replaces user= with the token's user; machine= labels this machine's series.
    attrs="$attrs,user=$team_user,machine=$team_machine"
    export OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20$token"
    export TOKENBRIDGE_TEAM=1 TOKENBRIDGE_TELEMETRY_TEAM=1
    # A `tokenbridge run` from this shell re-reads the token from the file before each export (rotation).
    export TOKENBRIDGE_TEAM_TOKEN_FILE="$token_file"
  fi
  export OTEL_RESOURCE_ATTRIBUTES="$attrs"

  # Per-signal settings would silently override the ones above.
  local v cleared=""
  for v in OTEL_EXPORTER_OTLP_METRICS_ENDPOINT OTEL_EXPORTER_OTLP_METRICS_PROTOCOL \
           OTEL_EXPORTER_OTLP_LOGS_ENDPOINT OTEL_EXPORTER_OTLP_LOGS_PROTOCOL; do
    if [ -n "$(eval "printf '%s' \"\${$v:-}\"")" ]; then unset "$v"; cleared="$cleared $v"; fi
  done

  echo "telemetry.sh: Claude Code telemetry -> tokenbridge collector"
  echo "  CLAUDE_CODE_ENABLE_TELEMETRY=$CLAUDE_CODE_ENABLE_TELEMETRY"
  echo "  OTEL_METRICS_EXPORTER=$OTEL_METRICS_EXPORTER"
  echo "  OTEL_LOGS_EXPORTER=$OTEL_LOGS_EXPORTER"
  echo "  OTEL_EXPORTER_OTLP_PROTOCOL=$OTEL_EXPORTER_OTLP_PROTOCOL"
  echo "  OTEL_EXPORTER_OTLP_ENDPOINT=$OTEL_EXPORTER_OTLP_ENDPOINT"
  echo "  OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=$OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
  echo "  OTEL_METRIC_EXPORT_INTERVAL=$OTEL_METRIC_EXPORT_INTERVAL"
  echo "  OTEL_LOGS_EXPORT_INTERVAL=$OTEL_LOGS_EXPORT_INTERVAL"
  echo "  OTEL_RESOURCE_ATTRIBUTES=$OTEL_RESOURCE_ATTRIBUTES"
  if [ -n "$cleared" ]; then echo "  unset (would override the above):$cleared"; fi
  if [ "$team" = 1 ]; then
    echo "  OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token from $token_file, not shown>"
    echo "  TOKENBRIDGE_TEAM=1 TOKENBRIDGE_TEAM_TOKEN_FILE=$token_file (tokenbridge run from this shell sends to the same server, re-reading the token file)"
    echo "Rotating tokens without restarting Claude Code (http only): add to ~/.claude/settings.json"
    echo "  \"otelHeadersHelper\": \"$(cd "$here" && pwd)/scripts/team-headers.sh\""
    echo "  (it prints the header from TOKENBRIDGE_TEAM_TOKEN_FILE or ~/.config/tokenbridge/team-token; Claude Code re-runs it every 29 min)"
  fi
  echo "Start claude from this shell. Undo with: source telemetry.sh --unset"
}

# Refuse to run as a program: variables set in a child process vanish when it exits.
_tb_telemetry_sourced=0
if [ -n "${ZSH_VERSION:-}" ]; then
  case "${ZSH_EVAL_CONTEXT:-}" in *:file*) _tb_telemetry_sourced=1 ;; esac
  # shellcheck disable=SC2296
  _tb_telemetry_self="${(%):-%x}"
elif [ -n "${BASH_VERSION:-}" ]; then
  if [ "${BASH_SOURCE[0]}" != "$0" ]; then _tb_telemetry_sourced=1; fi
  _tb_telemetry_self="${BASH_SOURCE[0]}"
else
  echo "telemetry.sh: needs bash or zsh; run: source telemetry.sh (from bash or zsh)" >&2
  _tb_telemetry_sourced=2
fi

if [ "$_tb_telemetry_sourced" = 0 ]; then
  echo "telemetry.sh must be sourced, not executed: run  source ${_tb_telemetry_self:-telemetry.sh}  (bash or zsh)" >&2
  unset _tb_telemetry_sourced _tb_telemetry_self
  exit 1
elif [ "$_tb_telemetry_sourced" = 1 ]; then
  _tb_telemetry_main "$@"
  _tb_telemetry_rc=$?
  unset -f _tb_telemetry_main
  unset _tb_telemetry_sourced _tb_telemetry_self
  # shellcheck disable=SC2317
  eval "unset _tb_telemetry_rc; return $_tb_telemetry_rc"
else
  unset -f _tb_telemetry_main
  unset _tb_telemetry_sourced _tb_telemetry_self
  # shellcheck disable=SC2317
  return 1 2>/dev/null || exit 1
fi
