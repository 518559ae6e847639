#!/usr/bin/env bash
# The data flow end to end: what the collector received and exposed, and per metric and source what Prometheus
# holds (series, latest value summed, age of the last sample).
# --team-server: the team server's flow instead (docs/team.md): what the team collector accepted, refused and wrote,
# what VictoriaMetrics ingested, and per metric and user what it holds.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
tb_defaults
py="$(tb_python)"

case "${1:-}" in
  "") ;;
  --team-server)
    tb_team_use_dir
    vm="http://127.0.0.1:$VICTORIAMETRICS_PORT"
    tb_http_ok "$vm/health" || tb_die "VictoriaMetrics is not answering on 127.0.0.1:$VICTORIAMETRICS_PORT (./start.sh --team-server)"
    collector="http://127.0.0.1:$TEAM_OTELCOL_METRICS_PORT/metrics" log=()
    if tb_team_native_active || ! tb_have_docker; then log=(--log "$(tb_logfile team-collector)"); fi
    echo "Team collector and VictoriaMetrics (their own counters, since each started):"
    "$py" "$TB_ROOT/scripts/team_stats.py" traffic --collector "$collector" --vm "$vm" ${log[@]+"${log[@]}"} || true
    echo
    exec "$py" "$TB_ROOT/scripts/team_stats.py" data --vm "$vm" ;;
  *) tb_die "unknown option '$1' (usage: scripts/metrics.sh [--team-server])" ;;
esac
tb_http_ok "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" || tb_die "Prometheus is not answering on 127.0.0.1:$PROMETHEUS_PORT (./start.sh)"

exec "$py" - "http://127.0.0.1:$PROMETHEUS_PORT" <<'PY'
import json, sys, time, urllib.parse, urllib.request
base = sys.argv[1]

def q(expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"error: query failed: {expr}: {body.get('error')}")
    return body["data"]["result"]

def val(rows):
    return {tuple(r["metric"].get(k, "") for k in ("__name__", "source")): float(r["value"][1]) for r in rows}

print("Collector (its own telemetry, scraped by Prometheus):")
def otelcol(name):  # the collector's own metrics, with or without the _total suffix
    # The collector creates a counter on its first increment (no failed export yet = no failure series): 0 while its
    # telemetry is being scraped, n/a only when it is not.
    scraped = 'max(up{job="otel-collector-internal"} == 1)'
    return f'sum({{__name__=~"otelcol_{name}(_total)?"}}) or (0 * {scraped})'
flow = [
    ("received metric points", otelcol("receiver_accepted_metric_points")),
    ("refused metric points", otelcol("receiver_refused_metric_points")),
    ("exported metric points", otelcol("exporter_sent_metric_points")),
    ("failed exports (points)", otelcol("exporter_send_failed_metric_points")),
    ("collector's /metrics scrape up", 'max(up{job="otel-collector"})'),
]
for label, expr in flow:
    rows = q(expr)
    print(f"  {label:40s} {rows[0]['value'][1] if rows else 'n/a (not scraped yet)'}")

sel = '{__name__=~"claude_code_.+|tokenbridge_.+"}'
count = val(q(f"count by (__name__, source) ({sel})"))
total = val(q(f"sum by (__name__, source) ({sel})"))
# timestamp() drops the metric name: copy it into a label first, or two metrics with the same labels (a balance and a
# key limit, a cost and its unpriced count) collide ("vector cannot contain metrics with the same labelset").
named = f'label_replace({sel}, "name", "$1", "__name__", "(.+)")'
last = {
    (r["metric"].get("name", ""), r["metric"].get("source", "")): float(r["value"][1])
    for r in q(f"max by (name, source) (timestamp({named}))")
}
print()
if not count:
    print("Prometheus holds no claude_code_* / tokenbridge_* series yet.")
    print("  - Claude Code: start it from a shell that ran `source telemetry.sh` (export interval 10 s)")
    print("  - bridge: scripts/logs.sh tokenbridge")
    sys.exit(1)
now = time.time()
print(f"{'metric':45s} {'source':22s} {'series':>6s} {'sum of latest':>16s} {'last sample':>12s}")
for key in sorted(count):
    name, source = key
    age = now - last.get(key, now)
    print(f"{name:45s} {source or '-':22s} {int(count[key]):6d} {total.get(key, 0):16.4f} {age:10.0f} s ago")
PY
