#!/usr/bin/env bash
# Open the dashboards: Grafana when it runs, else the bridge's web view, else Prometheus.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults

grafana="http://127.0.0.1:$GRAFANA_PORT"
prom="http://127.0.0.1:$PROMETHEUS_PORT"
web="http://127.0.0.1:$WEB_PORT"
if tb_http_ok "$grafana/api/health"; then
  url="$grafana/d/tokenbridge-overview"
elif tb_http_ok "$web/healthz"; then
  url="$web/"
elif tb_http_ok "$prom/-/ready"; then
  tb_log "Grafana is not answering at $grafana (native mode without Grafana? see scripts/start.sh output); opening Prometheus"
  url="$prom/query?g0.expr=sum%20by%20(source%2C%20model)%20(claude_code_token_usage_tokens_total)&g0.tab=table"
else
  tb_die "neither Grafana ($grafana), the bridge's page ($web) nor Prometheus ($prom) answers; start the stack with ./start.sh"
fi
echo "$url"
if [[ "${TOKENBRIDGE_NO_BROWSER:-}" != 1 ]]; then
  if command -v xdg-open >/dev/null 2>&1 && [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then xdg-open "$url" >/dev/null 2>&1 &
  elif command -v open >/dev/null 2>&1 && [[ "$(uname -s)" == Darwin ]]; then open "$url"
  fi
fi
