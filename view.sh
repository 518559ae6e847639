#!/usr/bin/env bash
# Open tokenbridge's dashboards: Grafana when it runs, else the bridge's own page, else Prometheus. See scripts/view.sh.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/view.sh" "$@"
