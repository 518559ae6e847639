#!/usr/bin/env bash
# Build VictoriaMetrics single-node (team mode's central store, Apache-2.0) from its Go module and cache it.
# Prints the binary path as the last line of stdout.
#   --app vmalert   build vmalert (the rule evaluator for the team budget rules, prometheus/team/rules.yml) from the
#                   same module and version instead; scripts/build-vmalert.sh does this.
#   --force         rebuild even when cached.
#
# Pinned to the version docker-compose.yml's team profile runs (victoriametrics/victoria-metrics:v1.151.0):
# the newest release this machine's Go (1.26) builds without a toolchain download. Built like Prometheus: the module
# is copied to a writable dir and `go build` runs there (GOWORK=off), so a replace directive cannot stop the build.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

app=victoria-metrics force=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --app) app="${2:-}"; shift 2 ;;
    --force) force=1; shift ;;
    *) tb_die "unknown option $1 (expected --app victoria-metrics|vmalert, --force)" ;;
  esac
done
[[ "$app" == victoria-metrics || "$app" == vmalert ]] || tb_die "unsupported --app '$app' (victoria-metrics or vmalert)"

version="${TOKENBRIDGE_VICTORIAMETRICS_VERSION:-$TB_VICTORIAMETRICS_VERSION}"
[[ "$version" =~ ^1\.[0-9]+\.[0-9]+$ ]] || tb_die "unsupported VictoriaMetrics version '$version' (expected 1.MINOR.PATCH)"
recipe="$app v$version ldflags=version"
key="$(printf '%s' "$recipe" | tb_sha)"
outdir="$TB_CACHE_DIR/bin/$app-$version-$key"
bin="$outdir/$app"

if [[ -x "$bin" && "$force" == 0 ]]; then
  tb_log "$app $version: cached"
  echo "$bin"
  exit 0
fi

tb_go_module_src "$app $version" github.com/VictoriaMetrics/VictoriaMetrics "v$version" "tb-$app-build"

tb_log "$app $version: compiling; this takes a few minutes on a cold Go cache"
mkdir -p "$work/out"
ldflags="-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=$app-v$version-tokenbridge"
(cd "$work/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$work/out/$app" "./app/$app") >&2 \
  || tb_die "go build of $app $version failed (see output above)"

tb_install_build "$outdir" "$bin"
