#!/usr/bin/env bash
# Build vmalert (VictoriaMetrics' rule evaluator, Apache-2.0) from the same Go module and version as
# scripts/build-victoriametrics.sh, and cache it. Prints the vmalert binary path as the last line of stdout.
#
# The team server's per-user budget rules (prometheus/team/rules.yml) are MetricsQL for vmalert: VictoriaMetrics
# single-node evaluates no rules itself (docs/team.md).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/build-victoriametrics.sh" --app vmalert "$@"
