#!/usr/bin/env bash
# Fetch the official standalone Grafana OSS release that docker-compose.yml pins (grafana/grafana:13.2.0) into the
# cache, verified against its SHA-256 in scripts/release-checksums.txt (the same code as start.sh's downloads).
# ./start.sh then runs it in native mode with the repo's datasource and dashboards. No root, no package manager.
# Prints Grafana's home directory (the unpacked archive) as the last line of stdout.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults  # .env may set TOKENBRIDGE_CACHE_DIR and the download base

version="${TOKENBRIDGE_GRAFANA_VERSION:-$TB_GRAFANA_VERSION}"
rc=0
dir="$(tb_fetch_release grafana "$version")" || rc=$?
case $rc in
  0) ;;
  2) tb_die "no pinned Grafana $version archive for $(tb_platform): download the standalone OSS tar.gz from https://grafana.com/grafana/download (check its SHA-256 there), unpack it and set GRAFANA_HOME=<that dir>" ;;
  3) tb_die "Grafana $version: the download failed checksum verification and was deleted (see above)" ;;
  *) tb_die "Grafana $version: the download failed (see above); retry when online, or set GRAFANA_HOME to an unpacked Grafana" ;;
esac
bin="$(tb_release_file "$dir" bin/grafana)" || tb_die "the Grafana archive unpacked into $dir has no bin/grafana"
home="$(dirname "$(dirname "$bin")")"
tb_log "Grafana $version ready in $home: ./start.sh runs it (native mode)"
echo "$home"
