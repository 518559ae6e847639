"""What the team server received and stored, for `scripts/status.sh --team-server` and `scripts/metrics.sh
--team-server` (docs/team.md). Standard library only: it runs with the system's python3.

  team_stats.py traffic --collector URL --vm URL [--log FILE|-]   the team collector's own telemetry (points
      accepted/refused by its receivers, sent/failed by its exporter), the requests refused for their token (counted
      in the collector's log, which never holds a token), VictoriaMetrics' ingested rows and active series
  team_stats.py data --vm URL                                    per metric and user: series, sum of the latest
      values and the age of the last sample, from VictoriaMetrics' query API

Every line starts with `ok`, `warn` or `FAIL` in the scripts' style; the exit status is 1 when a line is FAIL.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
REFUSAL = "team OTLP request refused"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode("utf-8", "replace"))


def scrape(url: str) -> dict[str, dict[str, float]]:
    """A Prometheus text exposition as {metric name without _total: {label text: value}}."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for line in _get(url).splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1).removesuffix("_total")][m.group(2) or ""] = value
    return out


def _sum(metrics: dict[str, dict[str, float]], name: str, labels: str = "") -> int | None:
    series = metrics.get(name)
    if series is None:
        return None
    return int(sum(v for k, v in series.items() if labels in k))


def _n(value: int | None) -> str:
    # The collector creates a counter on its first increment: absent means none yet.
    return str(value or 0)


def refusals(log: Path) -> tuple[int, str]:
    """How many requests the collector refused for their token, and the last such line's reason and peer."""
    try:  # "-": the log on stdin (`docker compose logs team-collector`)
        text = sys.stdin.read() if str(log) == "-" else log.read_text(errors="replace")
    except OSError:
        return 0, ""
    lines = [line for line in text.splitlines() if REFUSAL in line]
    if not lines:
        return 0, ""
    last = lines[-1]
    fields = {k: v for k, v in re.findall(r'"(reason|peer)":\s*"([^"]*)"', last)}
    detail = ", ".join(f"{k} {fields[k]}" for k in ("reason", "peer") if k in fields)
    return len(lines), detail


def traffic(collector: str, vm: str, log: Path | None) -> int:
    failed = 0
    try:
        c = scrape(collector)
    except (OSError, urllib.error.URLError) as exc:
        print(f"  warn  team collector's own telemetry not readable at {collector} ({exc})")
    else:
        accepted = _sum(c, "otelcol_receiver_accepted_metric_points")
        refused = _sum(c, "otelcol_receiver_refused_metric_points")
        logs_in = _sum(c, "otelcol_receiver_accepted_log_records")
        print(f"  ok    received: {_n(accepted)} metric points, {_n(logs_in)} log records (Claude Code events)")
        line = f"refused by the receivers (bad data, not tokens): {_n(refused)} metric points"
        print(f"  {'warn' if refused else 'ok  '}  {line}")
        sent = _sum(c, "otelcol_exporter_sent_metric_points")
        send_failed = _sum(c, "otelcol_exporter_send_failed_metric_points")
        print(f"  ok    written to VictoriaMetrics: {_n(sent)} metric points")
        if send_failed:
            print(f"  FAIL  failed writes to VictoriaMetrics: {send_failed} metric points (see the collector's log)")
            failed += 1
    if log is not None:
        count, detail = refusals(log)
        if count:
            print(f"  warn  refused requests (missing or unknown token): {count}; last: {detail or 'see the log'}")
        else:
            print("  ok    refused requests (missing or unknown token): 0")
    try:
        v = scrape(vm)
    except (OSError, urllib.error.URLError) as exc:
        print(f"  FAIL  VictoriaMetrics' /metrics not readable at {vm} ({exc})")
        return failed + 1
    rows = _sum(v, "vm_rows_inserted")
    active = _sum(v, "vm_cache_entries", 'type="storage/hour_metric_ids"')
    created = _sum(v, "vm_new_timeseries_created")
    print(f"  ok    VictoriaMetrics: {_n(rows)} rows ingested, {_n(active)} active series (last hour)", end="")
    print(f", {_n(created)} series created since its start")
    return failed


def _query(vm: str, expr: str) -> list[dict[str, object]]:
    # latency_offset: VictoriaMetrics hides the last 30 s by default; here the newest sample matters.
    params = {"query": expr, "latency_offset": "1ms", "nocache": "1"}
    body = json.loads(_get(f"{vm}/api/v1/query?" + urllib.parse.urlencode(params)))
    if body.get("status") != "success":
        raise SystemExit(f"error: query failed: {expr}: {body.get('error')}")
    return list(body["data"]["result"])


def data(vm: str) -> int:
    sel = '{__name__=~"claude_code_.+|tokenbridge_.+"}'
    keys = ("__name__", "user")

    def by(expr: str, name_label: str = "__name__") -> dict[tuple[str, str], float]:
        out = {}
        for r in _query(vm, expr):
            metric = r["metric"]
            value = r["value"]
            assert isinstance(metric, dict) and isinstance(value, list)
            out[(metric.get(name_label, ""), metric.get("user", ""))] = float(value[1])
        return out

    window = f"last_over_time({sel}[1d])"
    count = by(f"count by ({', '.join(keys)}) ({window})")
    total = by(f"sum by ({', '.join(keys)}) ({window})")
    # MetricsQL: the time of each series' last sample in the window, the metric name kept for the grouping.
    last = by(f"max by ({', '.join(keys)}) (tlast_over_time({sel}[1d]) keep_metric_names)")
    if not count:
        print("VictoriaMetrics holds no claude_code_* / tokenbridge_* series from the last day.")
        print("  - agents: docs/team.md (tokenbridge run with TOKENBRIDGE_TEAM=1; source telemetry.sh --team)")
        print("  - refused tokens: scripts/status.sh --team-server, scripts/logs.sh --team-server team-collector")
        return 1
    now = time.time()
    print(f"{'metric':45s} {'user':20s} {'series':>6s} {'sum of latest':>16s} {'last sample':>12s}")
    for key in sorted(count):
        name, user = key
        age = f"{now - last[key]:10.0f} s ago" if key in last else "         n/a"
        print(f"{name:45s} {user or '-':20s} {int(count[key]):6d} {total.get(key, 0):16.4f} {age}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="team_stats.py")
    p.add_argument("what", choices=("traffic", "data"))
    p.add_argument("--collector", default="http://127.0.0.1:18898/metrics")
    p.add_argument("--vm", required=True)
    p.add_argument("--log", type=Path)
    a = p.parse_args(argv)
    if a.what == "traffic":
        return 1 if traffic(a.collector, a.vm.rstrip("/") + "/metrics", a.log) else 0
    return data(a.vm.rstrip("/"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
