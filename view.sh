#!/usr/bin/env bash
# Open tokenbridge's dashboards (Grafana, or Prometheus when Grafana is not running). See scripts/view.sh.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/view.sh" "$@"
