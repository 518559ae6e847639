#!/usr/bin/env bash
# Start the tokenbridge stack (Docker Compose when an engine answers, else native processes). See scripts/start.sh.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/start.sh" "$@"
