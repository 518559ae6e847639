#!/usr/bin/env bash
# Claude Code's `otelHeadersHelper` for team mode (docs/team.md): prints the OTLP Authorization header as JSON from
# the token file, read fresh on every run, so replacing the file rotates the token without restarting Claude Code
# (which re-runs the helper every 29 minutes; http/protobuf only, gRPC takes the static OTEL_EXPORTER_OTLP_HEADERS).
# Token file: $TOKENBRIDGE_TEAM_TOKEN_FILE, else ~/.config/tokenbridge/team-token. Errors never show the token.
set -euo pipefail
file="${TOKENBRIDGE_TEAM_TOKEN_FILE:-$HOME/.config/tokenbridge/team-token}"
[[ -r "$file" ]] || { echo "team-headers.sh: token file $file is not readable" >&2; exit 1; }
token="$(head -n1 "$file" | tr -d '\r')"
[[ -n "$token" ]] || { echo "team-headers.sh: token file $file is empty" >&2; exit 1; }
[[ "$token" =~ ^[A-Za-z0-9._~+/=-]+$ ]] || { echo "team-headers.sh: the token in $file has characters a header cannot carry (not shown)" >&2; exit 1; }
printf '{"Authorization": "Bearer %s"}\n' "$token"
