#!/usr/bin/env bash
# Show the stack's logs: scripts/logs.sh [SERVICE] [-f]
# SERVICE: otel-collector | prometheus | grafana | tokenbridge (default: all).
# --team-server [team-collector | victoriametrics | team-grafana] [-f]: the team server's logs (docs/team.md); the
# team collector's log holds its refusals (peer and reason, never a token) and the tokens file reloads.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults

service="" follow=0 team=0
for arg in "$@"; do
  case "$arg" in
    -f | --follow) follow=1 ;;
    --team-server) team=1 ;;
    otel-collector | prometheus | grafana | tokenbridge | team-collector | victoriametrics | team-grafana) service="$arg" ;;
    *) tb_die "unknown argument '$arg' (services: otel-collector prometheus grafana tokenbridge; with --team-server: team-collector victoriametrics team-grafana; option -f)" ;;
  esac
done

if [[ $team == 1 ]]; then
  tb_team_use_dir
  case "$service" in
    "" | team-collector | victoriametrics | team-grafana) ;;
    *) tb_die "'$service' is not a team server service (team-collector victoriametrics team-grafana)" ;;
  esac
  if ! tb_team_native_active && tb_have_docker; then
    args=(--profile team logs --tail=200)
    [[ $follow == 1 ]] && args+=(-f)
    if [[ -n "$service" ]]; then args+=("$service"); else args+=("${TB_TEAM_NAMES[@]}"); fi
    cd "$TB_ROOT" && exec docker compose "${args[@]}"
  fi
  names=("${TB_TEAM_NAMES[@]}")
else
  case "$service" in
    team-collector | victoriametrics | team-grafana) tb_die "$service is a team server service: scripts/logs.sh --team-server $service" ;;
  esac
  if ! tb_native_mode_active && tb_have_docker; then
    args=(logs --tail=200)
    [[ $follow == 1 ]] && args+=(-f)
    [[ -n "$service" ]] && args+=("$service")
    cd "$TB_ROOT" && exec docker compose "${args[@]}"
  fi
  names=(otel-collector prometheus grafana tokenbridge)
fi

files=()
[[ -n "$service" ]] && names=("$service")
for name in "${names[@]}"; do
  f="$(tb_logfile "$name")"
  [[ -f "$f" ]] && files+=("$f")
done
if [[ $team == 1 ]]; then
  ((${#files[@]})) || tb_die "no logs under $TOKENBRIDGE_TEAM_DIR/logs (is the team server started? ./start.sh --team-server)"
else
  ((${#files[@]})) || tb_die "no logs under $TOKENBRIDGE_NATIVE_DIR/logs (is the stack started? scripts/start.sh)"
fi
if [[ $follow == 1 ]]; then exec tail -n 50 -F "${files[@]}"; else tail -n 200 "${files[@]}"; fi
