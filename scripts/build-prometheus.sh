#!/usr/bin/env bash
# Build the Prometheus release the compose file pins (prom/prometheus:v3.14.0) from its Go module and cache it.
# Prints the prometheus binary path as the last line of stdout (promtool sits next to it).
#
# Why not `go install github.com/prometheus/prometheus/cmd/prometheus@v0.314.0`: that module's go.mod carries a
# `replace cloud.google.com/go => ...` line and `go install pkg@version` refuses modules with replace directives.
# So we download the module, copy it to a writable dir and `go build` there (GOWORK=off: the module ships a
# go.work that names directories absent from the module zip). `-tags remove_all_sd` drops the cloud service
# discovery plugins (Kubernetes, AWS, Azure, GCE, ...): tokenbridge only uses static scrape targets, and this
# halves the build and its dependency downloads. The official image (compose) has them all; nothing we use differs.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

version="${TOKENBRIDGE_PROMETHEUS_VERSION:-$TB_PROMETHEUS_VERSION}"
[[ "$version" =~ ^3\.([0-9]+)\.([0-9]+)$ ]] || tb_die "unsupported Prometheus version '$version' (expected 3.MINOR.PATCH)"
module_version="v0.$((300 + BASH_REMATCH[1])).${BASH_REMATCH[2]}"   # 3.14.0 -> v0.314.0
tags="remove_all_sd"
recipe="prometheus $module_version tags=$tags ldflags=version"
key="$(printf '%s' "$recipe" | tb_sha)"
outdir="$TB_CACHE_DIR/bin/prometheus-$version-$key"
bin="$outdir/prometheus"

if [[ -x "$bin" && -x "$outdir/promtool" && "${1:-}" != "--force" ]]; then
  tb_log "prometheus $version: cached"
  echo "$bin"
  exit 0
fi
[[ "${1:-}" == "--cached-only" ]] && exit 3  # start.sh asks before it downloads anything

tb_go_module_src "prometheus $version" github.com/prometheus/prometheus "$module_version" tb-prom-build

tb_log "prometheus $version: compiling (tags: $tags); this takes a few minutes on a cold Go cache (each package is listed as it builds)"
mkdir -p "$work/out"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$version"
ldflags+=" -X github.com/prometheus/common/version.Branch=tokenbridge -X github.com/prometheus/common/version.Revision=$module_version"
(cd "$work/src" && GOWORK=off CGO_ENABLED=0 go build -v -trimpath -tags "$tags" -ldflags "$ldflags" \
  -o "$work/out/" ./cmd/prometheus ./cmd/promtool) >&2 || tb_die "go build of Prometheus $version failed (see output above)"

tb_install_build "$outdir" "$bin"
