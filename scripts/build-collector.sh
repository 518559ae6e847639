#!/usr/bin/env bash
# Build tokenbridge's OpenTelemetry Collector from otelcol-builder.yaml with the Collector Builder (ocb) and cache it.
# The cache key is the collector version plus the hash of the manifest and of the local Go modules it names with
# `path:` (collector/teamauth for the team manifest), so editing either rebuilds.
# Prints the collector binary path as the last line of stdout.
# TOKENBRIDGE_OTELCOL_MANIFEST picks the manifest: otelcol-builder.yaml (default) or otelcol-team-builder.yaml.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

manifest="${TOKENBRIDGE_OTELCOL_MANIFEST:-$TB_ROOT/otelcol-builder.yaml}"
[[ -f "$manifest" ]] || tb_die "collector manifest $manifest not found"
version="$(sed -n 's/^[[:space:]]*version:[[:space:]]*\([0-9][0-9.]*\)[[:space:]]*$/\1/p' "$manifest" | head -n1)"
[[ -n "$version" ]] || tb_die "no dist.version in $manifest"
name="$(sed -n 's/^[[:space:]]*name:[[:space:]]*\([A-Za-z0-9_.-]*\)[[:space:]]*$/\1/p' "$manifest" | head -n1)"
[[ -n "$name" ]] || tb_die "no dist.name in $manifest"
manifest_dir="$(cd "$(dirname "$manifest")" && pwd)"
key="$(tb_otelcol_key "$manifest")" || exit 1
outdir="$TB_CACHE_DIR/bin/otelcol-$version-$key"
bin="$outdir/$name"

if [[ -x "$bin" && "${1:-}" != "--force" ]]; then
  tb_log "collector $version ($key): cached"
  echo "$bin"
  exit 0
fi

tb_need go "install Go >= 1.25 from https://go.dev/dl/"
ocb_dir="$TB_CACHE_DIR/bin/ocb-$TB_OCB_VERSION"
ocb="$ocb_dir/builder"
if [[ ! -x "$ocb" ]]; then
  tb_log "collector: installing the Collector Builder (go install go.opentelemetry.io/collector/cmd/builder@$TB_OCB_VERSION)"
  mkdir -p "$ocb_dir"
  GOBIN="$ocb_dir" go install "go.opentelemetry.io/collector/cmd/builder@$TB_OCB_VERSION" >&2 \
    || tb_die "go install go.opentelemetry.io/collector/cmd/builder@$TB_OCB_VERSION failed"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tb-otelcol-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Same manifest, output redirected into the work dir.
sed -e "s|^\([[:space:]]*output_path:\).*|\1 $work/_build|" \
  -e "s|^\([[:space:]]*path:[[:space:]]*\)\./|\1$manifest_dir/|" "$manifest" >"$work/manifest.yaml"
tb_log "collector $version ($key): building with ocb; this takes several minutes on a cold Go cache"
(cd "$work" && "$ocb" --config="$work/manifest.yaml") >&2 || tb_die "ocb build of the collector failed (see output above)"
[[ -x "$work/_build/$name" ]] || tb_die "ocb finished but $work/_build/$name is missing"

mkdir -p "$(dirname "$outdir")"
rm -rf "$outdir.tmp"
mkdir -p "$outdir.tmp"
mv "$work/_build/$name" "$outdir.tmp/$name"
cp "$manifest" "$outdir.tmp/manifest.yaml"
rm -rf "$outdir"
mv "$outdir.tmp" "$outdir"
"$bin" --version >&2 || tb_die "built $bin does not run"
echo "$bin"
