#!/usr/bin/env bash
# Build vmalert (VictoriaMetrics' rule evaluator, Apache-2.0) from the same Go module and version as
# scripts/build-victoriametrics.sh, and cache it. Prints the vmalert binary path as the last line of stdout.
#
# The team server's per-user budget rules (prometheus/team/rules.yml) are MetricsQL for vmalert: VictoriaMetrics
# single-node evaluates no rules itself (docs/team.md).
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

version="${TOKENBRIDGE_VICTORIAMETRICS_VERSION:-$TB_VICTORIAMETRICS_VERSION}"
[[ "$version" =~ ^1\.[0-9]+\.[0-9]+$ ]] || tb_die "unsupported VictoriaMetrics version '$version' (expected 1.MINOR.PATCH)"
recipe="vmalert v$version ldflags=version"
key="$(printf '%s' "$recipe" | tb_sha)"
outdir="$TB_CACHE_DIR/bin/vmalert-$version-$key"
bin="$outdir/vmalert"

if [[ -x "$bin" && "${1:-}" != "--force" ]]; then
  tb_log "vmalert $version: cached"
  echo "$bin"
  exit 0
fi

tb_go_module_src "vmalert $version" github.com/VictoriaMetrics/VictoriaMetrics "v$version" tb-vmalert-build

tb_log "vmalert $version: compiling; this takes a few minutes on a cold Go cache"
mkdir -p "$work/out"
ldflags="-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=vmalert-v$version-tokenbridge"
(cd "$work/src" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
  -o "$work/out/vmalert" ./app/vmalert) >&2 \
  || tb_die "go build of vmalert $version failed (see output above)"

mkdir -p "$(dirname "$outdir")"
rm -rf "$outdir.tmp"
mv "$work/out" "$outdir.tmp"
rm -rf "$outdir"
mv "$outdir.tmp" "$outdir"
"$bin" --version >&2 || tb_die "built $bin does not run"
echo "$bin"
