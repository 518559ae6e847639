#!/usr/bin/env bash
# Build VictoriaMetrics single-node (team mode's central store, Apache-2.0) from its Go module and cache it.
# Prints the victoria-metrics binary path as the last line of stdout.
#
# Pinned to the version docker-compose.yml's team profile runs (victoriametrics/victoria-metrics:v1.151.0):
# the newest release this machine's Go (1.26) builds without a toolchain download. Built like Prometheus: the module
# is copied to a writable dir and `go build` runs there (GOWORK=off), so a replace directive cannot stop the build.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

version="${TOKENBRIDGE_VICTORIAMETRICS_VERSION:-$TB_VICTORIAMETRICS_VERSION}"
[[ "$version" =~ ^1\.[0-9]+\.[0-9]+$ ]] || tb_die "unsupported VictoriaMetrics version '$version' (expected 1.MINOR.PATCH)"
recipe="victoria-metrics v$version ldflags=version"
key="$(printf '%s' "$recipe" | tb_sha)"
outdir="$TB_CACHE_DIR/bin/victoria-metrics-$version-$key"
bin="$outdir/victoria-metrics"

if [[ -x "$bin" && "${1:-}" != "--force" ]]; then
  tb_log "victoria-metrics $version: cached"
  echo "$bin"
  exit 0
fi

tb_go_module_src "victoria-metrics $version" github.com/VictoriaMetrics/VictoriaMetrics "v$version" tb-vm-build

tb_log "victoria-metrics $version: compiling; this takes a few minutes on a cold Go cache"
mkdir -p "$work/out"
ldflags="-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=victoria-metrics-v$version-tokenbridge"
(cd "$work/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$work/out/victoria-metrics" ./app/victoria-metrics) >&2 \
  || tb_die "go build of VictoriaMetrics $version failed (see output above)"

mkdir -p "$(dirname "$outdir")"
rm -rf "$outdir.tmp"
mv "$work/out" "$outdir.tmp"
rm -rf "$outdir"
mv "$outdir.tmp" "$outdir"
"$bin" --version >&2 || tb_die "built $bin does not run"
echo "$bin"
