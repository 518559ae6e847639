#!/usr/bin/env python3
"""Load generator for team mode: N developers' bridges and Claude Code clients against the central stack on loopback.

    python3 scripts/loadgen.py --users 1000 --duration 120 [--interval 60] [--history-days 7] [--json out.json]

Starts its own team collector (otelcol-team-builder.yaml, one token per simulated user) and VictoriaMetrics in a
temporary directory, as scripts/team-server.sh runs them, then for a bounded time sends OTLP/HTTP protobuf with each
user's bearer token: each bridge's cumulative token and cost counters (4 models x 4 types, two sources) and health
gauges, each Claude Code's delta counters with its standard attributes (a new session, new series, every ~45 min of
use), every --interval seconds from a random phase. Measures samples ingested per second, collector and
VictoriaMetrics CPU and peak RSS (psutil), active series, load average, the generator's own CPU, the latency of the
Team usage dashboard's queries, and whether VictoriaMetrics holds exactly the tokens sent (docs/team.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric, NumberDataPoint

REPO = Path(__file__).resolve().parents[1]
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
TYPES = ("input", "output", "cacheRead", "cacheCreation")
BRIDGE_SOURCES = {
    "claude_transcripts": ("anthropic", ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5"]),
    "codex": ("openai", ["gpt-5"]),
}
CC_MODELS = (("claude-sonnet-4-5-20250929", "main"), ("claude-haiku-4-5-20251001", "auxiliary"))
SESSION_MINUTES = 45


def _kv(attrs: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]


class Client:
    """One simulated exporter: a protobuf request template whose points are updated before each send."""

    def __init__(self, kind: str, user: str, machine: str, rnd: random.Random) -> None:
        self.kind, self.user, self.rnd = kind, user, rnd
        self.token = f"tok-{user}-{uuid.UUID(int=rnd.getrandbits(128)).hex}"
        self.sent_tokens = 0  # what VictoriaMetrics must hold in the end (exactness check)
        self.pending_tokens = 0
        self.failures = 0
        self.start_ns = time.time_ns()
        self.last_ns = self.start_ns
        self.totals: dict[tuple[str, ...], float] = {}
        if kind == "bridge":
            self.resource = {"service.name": "tokenbridge", "service.instance.id": str(uuid.uuid4())}
            self.resource["machine"] = machine
        else:
            self.resource = {"service.name": "claude-code", "service.version": "2.1.240", "os.type": "linux",
                             "host.arch": "amd64"}  # fmt: skip
            self.std = {"user.id": uuid.uuid4().hex, "organization.id": "org-loadgen", "terminal.type": "tmux",
                        "user.account_uuid": str(uuid.uuid4())}  # fmt: skip
            self.new_session()

    def new_session(self) -> None:
        self.session = str(uuid.uuid4())
        self.session_started = False

    def payload(self, interval_s: float) -> tuple[bytes, int]:
        now = time.time_ns()
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(_kv(self.resource))
        sm = rm.scope_metrics.add()
        if self.kind == "bridge":
            sm.scope.name, added = "tokenbridge", self._bridge(sm.metrics, now)
        else:
            sm.scope.name, sm.scope.version = "com.anthropic.claude_code", "2.1.240"
            added = self._claude_code(sm.metrics, now, interval_s)
        self.last_ns = now
        return req.SerializeToString(), added

    def _sum(self, metrics, name: str, unit: str, temporality) -> Metric:
        m = metrics.add(name=name, unit=unit)
        m.sum.aggregation_temporality = temporality
        m.sum.is_monotonic = True
        return m

    def _point(self, m: Metric, attrs: dict[str, str], value: float, start: int, now: int) -> NumberDataPoint:
        dp = m.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=now, as_double=value)
        dp.attributes.extend(_kv(attrs))
        return dp

    def _bridge(self, metrics, now: int) -> int:
        tok = self._sum(metrics, "claude_code.token.usage", "tokens", CUMULATIVE)
        cost = self._sum(metrics, "claude_code.cost.usage", "USD", CUMULATIVE)
        added = 0
        for source, (provider, models) in BRIDGE_SOURCES.items():
            for model in models:
                base = {"model": model, "provider": provider, "source": source}
                busy = self.rnd.random() < 0.3  # most models see no new request in a given minute
                for t in TYPES:
                    key = (source, model, t)
                    inc = self.rnd.randint(50, 4000) if busy else 0
                    self.totals[key] = self.totals.get(key, 0.0) + inc
                    added += inc
                    self._point(tok, {**base, "type": t}, self.totals[key], self.start_ns, now)
                key = (source, model, "cost")
                self.totals[key] = self.totals.get(key, 0.0) + (self.rnd.randint(0, 90_000) / 1e6 if busy else 0)
                self._point(cost, base, self.totals[key], self.start_ns, now)
        g = metrics.add(name="tokenbridge.source.last_success", unit="s")
        for source in BRIDGE_SOURCES:
            dp = g.gauge.data_points.add(time_unix_nano=now, as_double=now / 1e9)
            dp.attributes.extend(_kv({"source": source}))
        # Cumulative: the latest totals replace what was sent before.
        self.pending_tokens = int(sum(v for k, v in self.totals.items() if k[2] != "cost"))
        return added

    def _claude_code(self, metrics, now: int, interval_s: float) -> int:
        if self.rnd.random() < interval_s / (SESSION_MINUTES * 60):
            self.new_session()
        std = {**self.std, "session.id": self.session}
        added = 0
        if not self.session_started:
            m = self._sum(metrics, "claude_code.session.count", "", DELTA)
            self._point(m, {**std, "start_type": "fresh"}, 1, self.last_ns, now)
            self.session_started = True
        if self.rnd.random() < 0.5:  # an active minute: requests, edits, lines
            tok = self._sum(metrics, "claude_code.token.usage", "tokens", DELTA)
            cost = self._sum(metrics, "claude_code.cost.usage", "USD", DELTA)
            for model, query_source in CC_MODELS:
                attrs = {**std, "model": model, "query_source": query_source}
                for t in TYPES:
                    n = self.rnd.randint(10, 30_000)
                    added += n
                    self._point(tok, {**attrs, "type": t}, n, self.last_ns, now)
                self._point(cost, attrs, self.rnd.randint(1, 200_000) / 1e6, self.last_ns, now)
            lines = self._sum(metrics, "claude_code.lines_of_code.count", "", DELTA)
            for t in ("added", "removed"):
                self._point(lines, {**std, "type": t}, self.rnd.randint(0, 80), self.last_ns, now)
            edit = self._sum(metrics, "claude_code.code_edit_tool.decision", "", DELTA)
            decision = {"tool_name": "Edit", "decision": "accept", "source": "config", "language": "Python"}
            self._point(edit, {**std, **decision}, self.rnd.randint(1, 5), self.last_ns, now)
        active = self._sum(metrics, "claude_code.active_time.total", "s", DELTA)
        for t in ("user", "cli"):
            self._point(active, {**std, "type": t}, self.rnd.uniform(0, interval_s / 2), self.last_ns, now)
        self.pending_tokens = added
        return added


async def _run_client(c: Client, http: httpx.AsyncClient, url: str, interval: float, deadline: float, stats) -> None:
    await asyncio.sleep(c.rnd.uniform(0, interval))
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        body, _added = c.payload(interval)
        headers = {"Authorization": f"Bearer {c.token}", "Content-Type": "application/x-protobuf"}
        try:
            r = await http.post(url, content=body, headers=headers)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        stats["requests"] += 1
        stats["bytes"] += len(body)
        if ok:
            # A delta that reached the collector is counted; a cumulative total replaces the previous one.
            c.sent_tokens = c.pending_tokens if c.kind == "bridge" else c.sent_tokens + c.pending_tokens
        else:
            c.failures += 1
            stats["failures"] += 1
        lag = time.monotonic() - t0
        stats["max_lag"] = max(stats["max_lag"], lag)
        # The next export one interval later; none after the deadline (no idle tail in the measured window).
        next_at = t0 + interval
        if next_at >= deadline:
            return
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


class Sampler(threading.Thread):
    """CPU (percent of one core) and RSS of the given processes, every second."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.procs, self.stop_at = procs, threading.Event()
        self.cpu: dict[str, list[float]] = {k: [] for k in procs}
        self.rss: dict[str, int] = dict.fromkeys(procs, 0)

    def run(self) -> None:
        for p in self.procs.values():
            p.cpu_percent(None)
        while not self.stop_at.wait(1.0):
            for k, p in self.procs.items():
                self.cpu[k].append(p.cpu_percent(None))
                self.rss[k] = max(self.rss[k], p.memory_info().rss)


def _binary(env: str, script: list[str], extra_env: dict[str, str] | None = None) -> str:
    if os.environ.get(env):
        return os.environ[env]
    out = subprocess.run(script, capture_output=True, text=True, env={**os.environ, **(extra_env or {})}, check=True)
    return out.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _vm_metric(vm: str, name: str) -> float:
    text = _get(f"{vm}/metrics").decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _query(vm: str, expr: str, at: float | None = None) -> tuple[list, float]:
    # Samples of the last seconds are visible at once (VictoriaMetrics hides the last 30 s by default).
    params = {"query": expr, "latency_offset": "1ms", **({"time": f"{at:.3f}"} if at else {})}
    t0 = time.perf_counter()
    data = json.loads(_get(f"{vm}/api/v1/query?{urllib.parse.urlencode(params)}"))
    return data["data"]["result"], time.perf_counter() - t0


def _dashboard_queries(range_s: int) -> list[str]:
    """The Team usage dashboard's instant queries, variables at All, over the run."""
    d = json.loads((REPO / "grafana/dashboards-team/team-usage.json").read_text())
    out = []
    stack = list(d["panels"])
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("instant"):
                e = re.sub(r"\$(user|machine|provider|model)\b", ".*", t["expr"])
                out.append(e.replace("$__range", f"{range_s}s"))
    return out


def _timed(vm: str, q: str) -> tuple[float, str]:
    """(seconds, "ok" or the refusal): VictoriaMetrics answers 429 when a query waited in its queue too long."""
    t0 = time.perf_counter()
    try:
        _query(vm, q)
        return time.perf_counter() - t0, "ok"
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - t0, f"HTTP {exc.code}"


def _dashboard_latency(vm: str, range_s: int, rounds: int = 3) -> dict:
    """One dashboard load = every panel query at once (Grafana's way), `rounds` times; then each query alone."""
    queries = _dashboard_queries(range_s)
    walls, slowest, refused = [], [], []
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        for _ in range(rounds):
            t0 = time.perf_counter()
            res = list(pool.map(lambda q: _timed(vm, q), queries))
            walls.append(time.perf_counter() - t0)
            slowest.append(max(t for t, _ in res))
            refused += [r for _, r in res if r != "ok"]
    alone = [_timed(vm, q)[0] for q in queries]
    return {
        "panels": len(queries),
        # The first load reads every series' history; VictoriaMetrics then caches the rollups of windows > 3 h
        # (-search.minWindowForInstantRollupOptimization), so a refresh within 30 minutes reads only the new samples.
        "first_load_s": round(walls[0], 3),
        "load_s": round(statistics.median(walls), 3),
        "slowest_panel_s": round(statistics.median(slowest), 3),
        "refused": len(refused),
        "refusals": sorted(set(refused)),
        "sequential_s": round(sum(alone), 3),
        "one_query_max_s": round(max(alone), 3),
    }


def run(args: argparse.Namespace) -> dict:
    otelcol = _binary(
        "TOKENBRIDGE_TEAM_OTELCOL_BIN",
        [str(REPO / "scripts/build-collector.sh")],
        {"TOKENBRIDGE_OTELCOL_MANIFEST": str(REPO / "otelcol-team-builder.yaml")},
    )
    vmbin = _binary("TOKENBRIDGE_VICTORIAMETRICS_BIN", [str(REPO / "scripts/build-victoriametrics.sh")])
    rnd = random.Random(args.seed)
    clients = [Client(k, f"dev{i:05d}", f"host{i:05d}", rnd) for i in range(args.users) for k in ("bridge", "cc")]
    work = Path(tempfile.mkdtemp(prefix="tb-loadgen-"))
    tokens = work / "tokens"
    tokens.write_text("".join(f"{c.user}:{c.token}\n" for c in clients if c.kind == "bridge"))
    for bridge, cc in zip(clients[::2], clients[1::2], strict=True):
        cc.token = bridge.token  # both clients of a developer use the developer's token
    vm_port, http_port, grpc_port, health, tel = (_free_port() for _ in range(5))
    vm_url = f"http://127.0.0.1:{vm_port}"
    logs = [(work / n).open("wb") for n in ("vm.log", "otelcol.log")]  # closed in finally
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([vmbin, f"-storageDataPath={work / 'vm'}", f"-httpListenAddr=127.0.0.1:{vm_port}",
                                       "-retentionPeriod=400d"], stdout=logs[0], stderr=subprocess.STDOUT))  # fmt: skip
        env = {**os.environ, "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
               "OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}", "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
               "OTELCOL_TELEMETRY_HOST": "127.0.0.1", "OTELCOL_TELEMETRY_PORT": str(tel),
               "OTELCOL_LOG_LEVEL": "warn", "TOKENBRIDGE_TEAM_TOKENS_FILE": str(tokens),
               "TOKENBRIDGE_TEAM_REMOTE_WRITE_URL": f"{vm_url}/api/v1/write"}  # fmt: skip
        procs.append(subprocess.Popen([otelcol, f"--config={REPO / 'otel-collector-team.yml'}"], env=env,
                                      stdout=logs[1], stderr=subprocess.STDOUT))  # fmt: skip
        _wait(f"{vm_url}/health", procs)
        _wait(f"http://127.0.0.1:{health}/", procs)
        history = _import_history(vm_url, clients, args.history_days) if args.history_days else 0
        sampler = Sampler({"victoriametrics": psutil.Process(procs[0].pid), "collector": psutil.Process(procs[1].pid),
                           "loadgen": psutil.Process()})  # fmt: skip
        load_before = os.getloadavg()
        rows0, t_start = _vm_metric(vm_url, "vm_rows_inserted_total"), time.time()
        sampler.start()
        stats = {"requests": 0, "failures": 0, "bytes": 0, "max_lag": 0.0}
        asyncio.run(_drive(clients, f"http://127.0.0.1:{http_port}/v1/metrics", args, stats))
        sampler.stop_at.set()
        sampler.join()
        t_end = time.time()
        load_after = os.getloadavg()
        time.sleep(args.settle)  # the collector's batch and remote-write queue drain
        _get(f"{vm_url}/internal/force_flush")
        rows1 = _vm_metric(vm_url, "vm_rows_inserted_total")
        result = {
            "users": args.users,
            "clients": len(clients),
            "interval_s": args.interval,
            "duration_s": round(t_end - t_start, 1),
            "requests": stats["requests"],
            "failed_requests": stats["failures"],
            "max_send_lag_s": round(stats["max_lag"], 2),
            "mb_sent": round(stats["bytes"] / 1e6, 1),
            "samples_per_s": round((rows1 - rows0) / (t_end - t_start), 1),
            "cpu_percent": {k: _cpu(v) for k, v in sampler.cpu.items()},
            "peak_rss_mb": {k: round(v / 2**20) for k, v in sampler.rss.items()},
            "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
            "cores": psutil.cpu_count(),
            "history_days": args.history_days,
            "history_samples": history,
        }
        series, _ = _query(vm_url, 'count({__name__=~"claude_code_.+|tokenbridge_.+"})')
        result["active_series"] = int(float(series[0]["value"][1])) if series else 0
        result["exact"] = _exactness(vm_url, clients)
        print(json.dumps(result), file=sys.stderr, flush=True)  # the ingest numbers, before the query phase
        result["dashboard"] = _dashboard_latency(vm_url, int(t_end - t_start) + 60 + int(args.history_days * 86400))
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _import_history(vm: str, clients: list[Client], days: float) -> int:
    """``days`` of the bridges' past exports (one sample a minute, like `tokenbridge run`), written straight into
    VictoriaMetrics before the live phase: the dashboard's exact queries read each series' whole history, so their
    latency depends on it. The live totals continue from the imported ones (no reset, nothing counted twice)."""
    step_ms, end_ms = 60_000, int(time.time() * 1000) - 60_000
    start_ms = end_ms - int(days * 86400_000)
    stamps = list(range(start_ms, end_ms, step_ms))
    total = 0
    for c in clients:
        if c.kind != "bridge":
            continue
        lines = []
        for source, (provider, models) in BRIDGE_SOURCES.items():
            for model in models:
                # The labels the team collector writes for the live series (tests/test_team_e2e.py), so the live
                # totals continue these series.
                base = {
                    "job": "tokenbridge",
                    "instance": c.resource["service.instance.id"],
                    "user": c.user,
                    "otel_scope_name": "tokenbridge",
                }
                base.update({"machine": c.resource["machine"], "model": model, "provider": provider, "source": source})
                for t in TYPES:
                    per = c.rnd.randint(0, 40)  # tokens a minute on average, cumulative from zero
                    values = [float(per * i) for i in range(len(stamps))]
                    c.totals[(source, model, t)] = values[-1]
                    labels = {**base, "__name__": "claude_code_token_usage_tokens_total", "type": t}
                    lines.append(json.dumps({"metric": labels, "values": values, "timestamps": stamps}))
                    total += len(stamps)
                cost = [round(i * 0.0004, 6) for i in range(len(stamps))]
                c.totals[(source, model, "cost")] = cost[-1]
                labels = {**base, "__name__": "claude_code_cost_usage_USD_total"}
                lines.append(json.dumps({"metric": labels, "values": cost, "timestamps": stamps}))
                total += len(stamps)
        req = urllib.request.Request(f"{vm}/api/v1/import", data="\n".join(lines).encode(), method="POST")
        urllib.request.urlopen(req, timeout=300).close()
    _get(f"{vm}/internal/force_flush")
    return total


def _cpu(samples: list[float]) -> dict:
    if not samples:
        return {"mean": 0.0, "peak": 0.0}
    return {"mean": round(statistics.fmean(samples), 1), "peak": round(max(samples), 1)}


def _exactness(vm: str, clients: list[Client]) -> dict:
    out = {}
    for kind, source in (("bridge", "claude_transcripts|codex"), ("cc", "claude_code_otel")):
        sent = sum(c.sent_tokens for c in clients if c.kind == kind)
        res, _ = _query(vm, f'sum(last_over_time(claude_code_token_usage_tokens_total{{source=~"{source}"}}[1d]))')
        stored = int(float(res[0]["value"][1])) if res else 0
        out[kind] = {"sent": sent, "stored": stored}
    return out


async def _drive(clients: list[Client], url: str, args: argparse.Namespace, stats: dict) -> None:
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        deadline = time.monotonic() + args.duration
        await asyncio.gather(*(_run_client(c, http, url, args.interval, deadline, stats) for c in clients))


def _wait(url: str, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"loadgen: a server exited while starting (see logs; rerun with --keep): {url}")
        try:
            _get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"loadgen: {url} did not answer within {timeout} s")


def markdown_row(r: dict) -> str:
    cpu, rss, d = r["cpu_percent"], r["peak_rss_mb"], r["dashboard"]
    exact = all(v["sent"] == v["stored"] for v in r["exact"].values())
    return (
        f"| {r['users']:,} | {r['samples_per_s']:,} | {cpu['collector']['mean']} / {cpu['collector']['peak']} | "
        f"{rss['collector']} | {cpu['victoriametrics']['mean']} / {cpu['victoriametrics']['peak']} | "
        f"{rss['victoriametrics']} | {r['active_series']:,} | {d['first_load_s']:.2f} / {d['load_s']:.2f} / "
        f"{d['one_query_max_s']:.2f}"
        f"{' (' + str(d['refused']) + ' refused)' if d['refused'] else ''} | "
        f"{cpu['loadgen']['mean']} | {r['failed_requests']} | {r['max_send_lag_s']} | "
        f"{' '.join(str(x) for x in r['load_average']['after'])} | {'yes' if exact else 'NO'} |"
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, required=True, help="simulated developers (a bridge and a Claude Code each)")
    ap.add_argument("--duration", type=float, default=120, help="seconds of sending (default 120)")
    ap.add_argument("--interval", type=float, default=60, help="export interval of every client (default 60 s)")
    ap.add_argument("--connections", type=int, default=64, help="HTTP connections to the collector")
    ap.add_argument("--settle", type=float, default=8, help="seconds to let the collector drain before measuring")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--history-days", type=float, default=0, help="import this much bridge history first")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = ap.parse_args(argv)
    if args.users < 1 or args.duration <= 0 or args.interval <= 0:
        ap.error("--users, --duration and --interval must be positive")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print(markdown_row(result))
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
