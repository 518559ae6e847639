#!/usr/bin/env bash
# Build the Alertmanager release the compose file pins (prom/alertmanager:vX.Y.Z) from its Go module and cache it.
# Prints the alertmanager binary path as the last line of stdout (amtool sits next to it).
# Same recipe as build-prometheus.sh: download the module, build in a writable copy with GOWORK=off
# (`go install pkg@version` refuses modules with replace directives). The web UI is embedded in the module.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

version="${TOKENBRIDGE_ALERTMANAGER_VERSION:-$TB_ALERTMANAGER_VERSION}"
[[ "$version" =~ ^0\.[0-9]+\.[0-9]+$ ]] || tb_die "unsupported Alertmanager version '$version' (expected 0.MINOR.PATCH)"
module_version="v$version"
recipe="alertmanager $module_version ldflags=version ui=placeholder"
key="$(printf '%s' "$recipe" | tb_sha)"
outdir="$TB_CACHE_DIR/bin/alertmanager-$version-$key"
bin="$outdir/alertmanager"

if [[ -x "$bin" && -x "$outdir/amtool" && "${1:-}" != "--force" ]]; then
  tb_log "alertmanager $version: cached"
  echo "$bin"
  exit 0
fi

tb_go_module_src "alertmanager $version" github.com/prometheus/alertmanager "$module_version" tb-am-build
# The module ships the web UI's sources, not its compiled assets (ui/app/dist, built with npm in a release). The
# binary embeds that directory: give it a one-page placeholder. The API (/api/v2), routing and receivers are all
# in Go and unaffected; the compose image has the full UI.
for ui in elm mantine; do
  mkdir -p "$work/src/ui/app/dist/$ui"
  printf '%s\n' '<!doctype html><title>Alertmanager</title><p>Built by tokenbridge without the web UI: use the API at /api/v2/alerts or amtool.</p>' \
    >"$work/src/ui/app/dist/$ui/index.html"
done

tb_log "alertmanager $version: compiling; this takes a few minutes on a cold Go cache"
mkdir -p "$work/out"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
ldflags+=" -X github.com/prometheus/common/version.Branch=tokenbridge -X github.com/prometheus/common/version.Revision=$module_version"
(cd "$work/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$work/out/" ./cmd/alertmanager ./cmd/amtool) >&2 || tb_die "go build of Alertmanager $version failed (see output above)"

tb_install_build "$outdir" "$bin"
