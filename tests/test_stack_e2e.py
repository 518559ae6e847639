"""End to end, on loopback with free ports, with the real parts: the collector built by ocb from
otelcol-builder.yaml running the repo's otel-collector-config.yml, Prometheus 3.14 running the repo's prometheus.yml
with the compose file's flags, Claude-Code-shaped DELTA OTLP over gRPC and HTTP/protobuf, the bridge (`tokenbridge
sync`) reading a fixture Claude Code home, every dashboard query, telemetry.sh in real shells, history writes at old
timestamps, and delivery to a remote-write backend through an authenticating proxy.

Test-only deviations from the shipped files (documented, nothing else is changed):
- ports come from env vars (collector) and rewritten scrape targets (prometheus.yml);
- the collector runs with TOKENBRIDGE_METRICS_EXPORTERS=[prometheus, prometheus_remote_write] so one run shows the
  pull path and the remote-write path, and with a 200 ms batch timeout;
- Prometheus gets --query.lookback-delta=20s, which compresses "5 minutes after a session ended" into 20 seconds.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests._stack import (
    NATIVE_SERIES,
    REPO,
    ClaudeCodeSim,
    dashboards,
    expand,
    iter_panels,
    start_collector,
    start_prometheus,
    wait_for_scrapes,
    write_claude_home,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

LOOKBACK_S = 20
RW_TOKEN = "Bearer e2e-remote-write-secret"

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
HAIKU = "claude-haiku-4-5-20251001"
S1 = "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f"  # sonnet, native over gRPC and in the transcripts
S2 = "0a1b2c3d-0000-4000-8000-000000000002"  # opus, native over HTTP (one export only) and in the transcripts
S3 = "7c7c7c7c-0000-4000-8000-000000000003"  # haiku, native only (Claude Code Desktop, another machine)

R1 = {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200}
R2 = {"input": 10, "output": 420, "cacheRead": 50000, "cacheCreation": 0}
R3 = {"input": 2000, "output": 900, "cacheRead": 0, "cacheCreation": 3000}
R4 = {"input": 500, "output": 100, "cacheRead": 0, "cacheCreation": 0}
# Claude Code's own cost estimates (deliberately not list prices: shows which source a panel used).
NATIVE_COST = {"R1": 0.03, "R2": 0.02, "R3": 0.16, "R4": 0.0015}

# Anthropic list prices, USD per million tokens: input, output, cache read, cache write (5 min).
PRICES = {SONNET: (3.0, 15.0, 0.30, 3.75), OPUS: (15.0, 75.0, 1.50, 18.75)}
TYPES = ("input", "output", "cacheRead", "cacheCreation")


def _sum(*reqs: dict) -> dict[str, int]:
    return {t: sum(r[t] for r in reqs) for t in TYPES}


def _list_cost(model: str, tok: dict[str, int]) -> float:
    p = PRICES[model]
    return (tok["input"] * p[0] + tok["output"] * p[1] + tok["cacheRead"] * p[2] + tok["cacheCreation"] * p[3]) / 1e6


BRIDGE_TOK = {SONNET: _sum(R1, R2), OPUS: _sum(R3)}
BRIDGE_COST = {m: _list_cost(m, t) for m, t in BRIDGE_TOK.items()}
NATIVE_TOK = {SONNET: _sum(R1, R2), OPUS: _sum(R3), HAIKU: _sum(R4)}
NATIVE_COST_BY_MODEL = {
    SONNET: NATIVE_COST["R1"] + NATIVE_COST["R2"],
    OPUS: NATIVE_COST["R3"],
    HAIKU: NATIVE_COST["R4"],
}
# The dashboards' rule: per model, the bridge's transcripts when present, else native telemetry.
EXPECT_TOK = {SONNET: BRIDGE_TOK[SONNET], OPUS: BRIDGE_TOK[OPUS], HAIKU: NATIVE_TOK[HAIKU]}
EXPECT_COST = {SONNET: BRIDGE_COST[SONNET], OPUS: BRIDGE_COST[OPUS], HAIKU: NATIVE_COST_BY_MODEL[HAIKU]}


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ remote-write backend behind an auth proxy


class _AuthProxy:
    """Loopback reverse proxy in front of the backend's /api/v1/write that demands one Authorization header."""

    def __init__(self, backend_url: str, expected_auth: str) -> None:
        self.seen: list[tuple[str, int]] = []  # (path, status) - never the header value
        self.bad_auth = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Authorization") != expected_auth:
                    outer.bad_auth += 1
                    outer.seen.append((self.path, 401))
                    self.send_response(401)
                    self.end_headers()
                    return
                req = urllib.request.Request(
                    f"{backend_url}/api/v1/write",
                    data=body,
                    method="POST",
                    headers={
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("content-type", "content-encoding", "x-prometheus-remote-write-version")
                    },
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status = r.status
                except urllib.error.HTTPError as e:
                    status = e.code
                outer.seen.append((self.path, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the stack, filled with known data


class Stack:
    pass


def _bridge_sync(env_extra: dict[str, str], home: Path, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "TOKENBRIDGE_STATE_DIR": str(state), **env_extra}
    for k in (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ):
        env.pop(k, None)
    exe = shutil.which("tokenbridge")
    argv = [exe] if exe else [sys.executable, "-m", "bridge.cli"]
    proc = subprocess.run(
        [*argv, "sync", "--no-progress"], env=env, capture_output=True, text=True, timeout=120, cwd=str(REPO)
    )
    assert proc.returncode == 0, f"tokenbridge sync failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


TELEMETRY_CLIENT = r"""
import os, sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
proto = os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"]
if proto == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(insecure=True)
elif proto == "http/protobuf":
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter()
else:
    sys.exit(f"unexpected protocol {proto}")
# Everything else (endpoint, temporality preference, interval) comes from the variables telemetry.sh exported.
reader = PeriodicExportingMetricReader(exporter)
mp = MeterProvider(resource=Resource.create({"service.name": "claude-code"}), metric_readers=[reader])
c = mp.get_meter("com.anthropic.claude_code").create_counter("tokenbridge_e2e.telemetry_check", unit="")
c.add(1, {"shell": sys.argv[1], "protocol": proto})
ok = mp.force_flush(10_000)
mp.shutdown()
sys.exit(0 if ok else 3)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    w = tmp_path_factory.mktemp("stack")
    st = Stack()
    procs = []
    st.proxy = None
    try:
        # Remote-write backend: a second Prometheus with only its remote-write receiver, behind an auth proxy.
        backend = start_prometheus(
            w,
            {"otel-collector:8889": "127.0.0.1:9", "otel-collector:8888": "127.0.0.1:9"},
            [f"--query.lookback-delta={LOOKBACK_S}s"],
            name="backend",
        )
        procs.append(backend.proc)
        st.backend = backend
        st.proxy = _AuthProxy(backend.url, RW_TOKEN)

        col = start_collector(
            w,
            {
                "TOKENBRIDGE_METRICS_EXPORTERS": "[prometheus, prometheus_remote_write]",
                "TOKENBRIDGE_REMOTE_WRITE_URL": f"http://127.0.0.1:{st.proxy.port}/api/v1/push",
                "TOKENBRIDGE_REMOTE_WRITE_AUTHORIZATION": RW_TOKEN,
            },
        )
        procs.append(col.proc)
        st.col = col
        prom = start_prometheus(
            w,
            {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"},
            [f"--query.lookback-delta={LOOKBACK_S}s"],
        )
        procs.append(prom.proc)
        st.prom = prom

        # --- Claude Code native telemetry, DELTA, several export intervals, both protocols.
        s1 = ClaudeCodeSim(f"http://127.0.0.1:{col.grpc}", "grpc", S1)
        s1.start_session("fresh")
        s1.request(SONNET, NATIVE_COST["R1"], R1["input"], R1["output"], R1["cacheRead"], R1["cacheCreation"])
        s1.lines.add(40, {**s1.std, "type": "added", "model": SONNET})
        s1.lines.add(7, {**s1.std, "type": "removed", "model": SONNET})
        s1.edit.add(
            2, {**s1.std, "tool_name": "Edit", "decision": "accept", "source": "user_temporary", "language": "Python"}
        )
        s1.active.add(12.5, {**s1.std, "type": "user"})
        s1.export()  # interval 1
        s1.request(SONNET, NATIVE_COST["R2"], R2["input"], R2["output"], R2["cacheRead"], R2["cacheCreation"])
        s1.commits.add(2, s1.std)
        s1.prs.add(1, s1.std)
        s1.edit.add(
            1, {**s1.std, "tool_name": "Write", "decision": "accept", "source": "config", "language": "TypeScript"}
        )
        s1.edit.add(
            1, {**s1.std, "tool_name": "Edit", "decision": "reject", "source": "user_reject", "language": "Python"}
        )
        s1.active.add(30, {**s1.std, "type": "cli"})
        s1.export()  # interval 2
        s1.export()  # interval 3: nothing new (an idle interval)
        s1.shutdown()

        s2 = ClaudeCodeSim(f"http://127.0.0.1:{col.http}", "http/protobuf", S2)
        s2.start_session("resume")
        s2.request(OPUS, NATIVE_COST["R3"], R3["input"], R3["output"], R3["cacheRead"], R3["cacheCreation"])
        s2.export()  # its only export: a series born with its full value that never moves again
        s2.shutdown()

        s3 = ClaudeCodeSim(f"http://127.0.0.1:{col.http}", "http/protobuf", S3, service_name="claude-code-desktop")
        s3.start_session("fresh")
        s3.request(HAIKU, NATIVE_COST["R4"], R4["input"], R4["output"], R4["cacheRead"], R4["cacheCreation"])
        s3.export()
        s3.shutdown()
        st.native_done = time.time()

        # --- The bridge, reading transcripts of the same sessions S1 and S2.
        st.home = write_claude_home(
            w / "claude-home",
            {
                S1: {"model": SONNET, "requests": [R1, R2]},
                S2: {"model": OPUS, "requests": [R3]},
            },
            time.time() - 900,
        )
        st.state = w / "bridge-state"
        st.sync1 = _bridge_sync(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            st.home,
            st.state,
        )

        # --- telemetry.sh in real shells: a client configured only by its variables reaches the collector.
        st.telemetry = {}
        client = w / "telemetry_client.py"
        client.write_text(TELEMETRY_CLIENT)
        for shell, proto_flag, port in (("bash", "--protocol=http", col.http), ("zsh", "--protocol=grpc", col.grpc)):
            exe = shutil.which(shell)
            if exe is None:
                pytest.fail(f"{shell} is not installed (apt-get install -y {shell}); telemetry.sh must work in it")
            script = (
                f"source {REPO / 'telemetry.sh'} {proto_flag} --port={port} && exec {sys.executable} {client} {shell}"
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            st.telemetry[shell] = subprocess.run(
                [exe, "-c", script], capture_output=True, text=True, timeout=60, env=env
            )

        # --- History at its true timestamp: 3 days old, through Prometheus' OTLP receiver.
        st.history_t = time.time() - 3 * 86400
        st.history_status = _post_history(prom.url, st.history_t)

        # Everything sent; wait for two scrapes after it, and until the native sessions have been idle longer
        # than the lookback delta.
        st.t = wait_for_scrapes(prom, 2, after=time.time())
        while time.time() < st.native_done + LOOKBACK_S + 3:
            time.sleep(0.5)
        st.t = wait_for_scrapes(prom, 1, after=time.time())
        yield st
    finally:
        for p in reversed(procs):
            p.stop()
        if st.proxy:
            st.proxy.close()


def _post_history(prom_url: str, t_old: float) -> int:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
    from opentelemetry.proto.common.v1 import common_pb2 as cp

    req = ms.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value=cp.AnyValue(string_value="tokenbridge"))
    sm = rm.scope_metrics.add()
    sm.scope.name = "tokenbridge"
    m = sm.metrics.add()
    m.name, m.unit = "claude_code.token.usage", "tokens"
    m.sum.aggregation_temporality = 2  # cumulative
    m.sum.is_monotonic = True
    for dt, v in ((-60, 0.0), (0, 1000.0), (60, 1500.0)):
        dp = m.sum.data_points.add()
        dp.start_time_unix_nano = int((t_old - 60) * 1e9)
        dp.time_unix_nano = int((t_old + dt) * 1e9)
        dp.as_double = v
        for k, val in (
            ("model", SONNET),
            ("type", "output"),
            ("provider", "anthropic"),
            ("source", "claude_transcripts"),
        ):
            dp.attributes.add(key=k, value=cp.AnyValue(string_value=val))
    r = urllib.request.Request(
        f"{prom_url}/api/v1/otlp/v1/metrics",
        data=req.SerializeToString(),
        method="POST",
        headers={"Content-Type": "application/x-protobuf"},
    )
    with urllib.request.urlopen(r, timeout=10) as resp:
        return resp.status


# ------------------------------------------------------------------ names, labels, delivery


def test_series_names_are_claude_codes_collector_names(stack):
    names = set(stack.prom.api("/api/v1/label/__name__/values", {"match[]": ['{__name__=~"claude_code_.+"}']}))
    assert names == set(NATIVE_SERIES)


def test_native_token_and_cost_series_get_provider_and_source(stack):
    p, t = stack.prom, stack.t
    for metric in ("claude_code_token_usage_tokens_total", "claude_code_cost_usage_USD_total"):
        by_job = {
            (r["metric"].get("job"), r["metric"].get("provider"), r["metric"].get("source"))
            for r in p.query(f"{metric}", t)
        }
        assert by_job == {
            ("claude-code", "anthropic", "claude_code_otel"),
            ("claude-code-desktop", "anthropic", "claude_code_otel"),
            ("tokenbridge", "anthropic", "claude_transcripts"),
        }, metric
    # Only token/cost are touched: the edit-tool decision keeps Claude Code's own `source` attribute.
    assert p.by("sum by (source) (claude_code_code_edit_tool_decision_total)", "source", t) == {
        "user_temporary": 2,
        "config": 1,
        "user_reject": 1,
    }
    assert p.query('claude_code_session_count_total{provider!=""}', t) == []
    # Resource attributes stay in target_info, not on every series.
    labels = p.query(f'claude_code_token_usage_tokens_total{{session_id="{S1}",type="input"}}', t)[0]["metric"]
    assert "os_type" not in labels and "host_arch" not in labels and "service_version" not in labels
    assert p.query('target_info{job="claude-code",os_type="linux",host_arch="amd64"}', t)


def test_delta_exports_accumulate_to_exact_totals(stack):
    """Three delta export intervals of S1 (the last one empty) add up; nothing is replaced or double counted."""
    got = stack.prom.by(f'sum by (type) (claude_code_token_usage_tokens_total{{session_id="{S1}"}})', "type", stack.t)
    assert got == NATIVE_TOK[SONNET]
    assert stack.prom.scalar(f'sum(claude_code_cost_usage_USD_total{{session_id="{S1}"}})', stack.t) == approx(0.05)


def test_first_increment_is_kept_by_increase(stack):
    """S2 exported once: its series was born with the full value and never moved. increase() still shows all of
    it, because the collector exposes the start time and Prometheus writes a zero sample there."""
    p, t = stack.prom, stack.t
    sel = f'claude_code_cost_usage_USD_total{{session_id="{S2}"}}'
    samples = p.query(f"{sel}[1h]", t)[0]["values"]
    assert float(samples[0][1]) == 0.0, f"no zero sample at the series start: {samples[:3]}"
    assert all(float(v) == NATIVE_COST["R3"] for _, v in samples[1:])
    assert p.scalar(f"sum(increase({sel}[1h]))", t) == approx(NATIVE_COST["R3"])
    assert p.scalar(f'sum(increase(claude_code_session_count_total{{session_id="{S2}"}}[1h]))', t) == 1
    # The bridge's series (cumulative, one export by `sync`) too.
    assert p.scalar('sum(increase(claude_code_cost_usage_USD_total{source="claude_transcripts"}[1h]))', t) == approx(
        sum(BRIDGE_COST.values())
    )


def test_idle_counters_keep_answering(stack):
    """The native sessions ended more than the lookback delta ago (20 s here, 5 min by default) and still answer
    instant queries, because the collector keeps exposing them (TOKENBRIDGE_SERIES_TTL) and Prometheus keeps
    scraping them. The remote-write backend, fed only when data arrives, shows why the local stack pulls."""
    p = stack.prom
    now = time.time()
    assert now - stack.native_done > LOOKBACK_S
    instant = p.by("sum by (session_id) (claude_code_cost_usage_USD_total)", "session_id")
    assert set(instant) >= {S1, S2, S3}
    newest = p.scalar(f'max(timestamp(claude_code_cost_usage_USD_total{{session_id="{S2}"}}))')
    assert newest > stack.native_done + LOOKBACK_S
    # Push-only backend: same data, but the instant query is empty once the lookback has passed ...
    b = stack.backend
    assert b.query('claude_code_cost_usage_USD_total{source="claude_code_otel"}') == []
    # ... while range queries still see it.
    assert b.query('max_over_time(claude_code_cost_usage_USD_total{source="claude_code_otel"}[5m])')


def test_remote_write_backend_receives_same_names_with_credentials(stack):
    b = stack.backend
    names = set(b.api("/api/v1/label/__name__/values", {"match[]": ['{__name__=~"claude_code_.+"}']}))
    assert {
        "claude_code_token_usage_tokens_total",
        "claude_code_cost_usage_USD_total",
        "claude_code_session_count_total",
        "claude_code_active_time_seconds_total",
    } <= names
    assert stack.proxy.bad_auth == 0
    assert stack.proxy.seen and all(status == 204 or status == 200 for _, status in stack.proxy.seen), stack.proxy.seen
    assert {path for path, _ in stack.proxy.seen} == {"/api/v1/push"}
    # Same labels as the local path, so the same dashboards work against the backend.
    t = time.time()
    got = b.by("sum by (source) (max_over_time(claude_code_token_usage_tokens_total[10m]))", "source", t)
    assert got["claude_transcripts"] == sum(sum(v.values()) for v in BRIDGE_TOK.values())
    assert got["claude_code_otel"] == sum(sum(v.values()) for v in NATIVE_TOK.values())
    # The collector never logs the credential.
    assert RW_TOKEN.split()[1] not in stack.col.proc.log.read_text()


def test_history_is_written_at_true_timestamps(stack):
    assert stack.history_status in (200, 204)
    p, t_old = stack.prom, stack.history_t
    res = p.query('claude_code_token_usage_tokens_total{job="tokenbridge",type="output"}[5m]', t_old + 60)
    hist = [r for r in res if "instance" not in r["metric"]]
    assert len(hist) == 1
    assert [(round(float(ts) - t_old), float(v)) for ts, v in hist[0]["values"]] == [
        (-60, 0.0),
        (0, 1000.0),
        (60, 1500.0),
    ]
    assert hist[0]["metric"]["source"] == "claude_transcripts"


def test_telemetry_sh_configures_a_working_client(stack):
    for shell, proc in stack.telemetry.items():
        assert proc.returncode == 0, f"{shell}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:" in proc.stdout
    text = stack.col.scrape_text()
    seen = {
        (line.split('shell="')[1].split('"')[0], line.split('protocol="')[1].split('"')[0])
        for line in text.splitlines()
        if line.startswith("tokenbridge_e2e_telemetry_check_total{")
    }
    assert seen == {("bash", "http/protobuf"), ("zsh", "grpc")}


# ------------------------------------------------------------------ every dashboard query


RANGE_S, INTERVAL_S, RATE_INTERVAL_S = 3600, 60, 60


def _variables(provider: str = ".*", model: str = ".*", source: str = ".*") -> dict[str, str]:
    return {"provider": provider, "model": model, "source": source}


def _targets():
    for name, dash in dashboards().items():
        if name == "claude-code-activity.json":
            continue  # event metrics: run against known events in tests/test_events_e2e.py
        for panel in iter_panels(dash["panels"]):
            for target in panel.get("targets", []):
                yield name, panel, target


def _run_panel(prom, panel, target, t, variables):
    expr = expand(target["expr"], variables, RANGE_S, INTERVAL_S, RATE_INTERVAL_S)
    if target.get("instant") or panel["type"] in ("stat", "bargauge", "table"):
        return prom.query(expr, t)
    return prom.query_range(expr, t - 600, t, INTERVAL_S)


def test_every_panel_query_runs(stack):
    ran = 0
    empty = []
    for vars_ in (_variables(), _variables(provider="anthropic", source="claude_code_otel"), _variables(model=SONNET)):
        for name, panel, target in _targets():
            res = _run_panel(stack.prom, panel, target, stack.t, vars_)  # raises on any PromQL error
            ran += 1
            # The spend dashboard reads recording rules and gauges this stack does not produce (tests/test_rules.py
            # and tests/test_alerting_e2e.py cover them); its queries must still run.
            if vars_ == _variables() and not res and name != "spend-control.json":
                empty.append(f"{name}: {panel['title']}")
    n_targets = len(list(_targets()))
    assert n_targets >= 30 and ran == 3 * n_targets
    # With data from every metric, only the unpriced-requests time series may be empty (nothing unpriced here).
    assert empty == ["ai-usage-overview.json: Unpriced requests"], empty


def _panel(dash: str, title: str, ref: str = "A") -> dict:
    for panel in iter_panels(dashboards()[dash]["panels"]):
        if panel.get("title") == title and panel["type"] != "timeseries":
            return next(t for t in panel["targets"] if t["refId"] == ref) | {"_panel": panel}
    raise KeyError(f"{dash}: {title}")


def _value(stack, dash, title, ref="A", label=None, **vars_):
    target = _panel(dash, title, ref)
    res = _run_panel(stack.prom, target["_panel"], target, stack.t, _variables(**vars_))
    if label is None:
        assert len(res) == 1, res
        return float(res[0]["value"][1])
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in res}


@pytest.mark.parametrize("dash", ["claude-code.json", "ai-usage-overview.json"])
def test_key_panels_count_each_token_once(stack, dash):
    total_tok = sum(sum(v.values()) for v in EXPECT_TOK.values())
    assert _value(stack, dash, "Total cost") == approx(sum(EXPECT_COST.values()))
    assert _value(stack, dash, "Total tokens") == total_tok
    naive = sum(sum(v.values()) for v in BRIDGE_TOK.values()) + sum(sum(v.values()) for v in NATIVE_TOK.values())
    assert total_tok < naive  # i.e. the dashboards do not simply add both paths
    assert _value(stack, dash, "Tokens by type", label="type") == {
        t: sum(v[t] for v in EXPECT_TOK.values()) for t in TYPES
    }
    per_source_tok = _value(stack, dash, "Tokens and cost per source", "A", label="source")
    per_source_cost = _value(stack, dash, "Tokens and cost per source", "B", label="source")
    assert per_source_tok == {
        "claude_transcripts": sum(sum(v.values()) for v in BRIDGE_TOK.values()),
        "claude_code_otel": sum(sum(v.values()) for v in NATIVE_TOK.values()),
    }
    assert per_source_cost == {
        "claude_transcripts": approx(sum(BRIDGE_COST.values())),
        "claude_code_otel": approx(sum(NATIVE_COST.values())),
    }


def test_claude_code_dashboard_panels(stack):
    d = "claude-code.json"
    assert _value(stack, d, "Cost by model", label="model") == {m: approx(v) for m, v in EXPECT_COST.items()}
    assert _value(stack, d, "Tokens by model", label="model") == {m: sum(v.values()) for m, v in EXPECT_TOK.items()}
    cache = {t: sum(v[t] for v in EXPECT_TOK.values()) for t in TYPES}
    assert _value(stack, d, "Cache hit ratio") == approx(
        cache["cacheRead"] / (cache["input"] + cache["cacheRead"] + cache["cacheCreation"])
    )
    assert _value(stack, d, "Sessions") == 3
    assert _value(stack, d, "Active time") == 42.5
    assert _value(stack, d, "Commits") == 2
    assert _value(stack, d, "Pull requests") == 1
    assert _value(stack, d, "Lines of code", label="type") == {"added": 40, "removed": 7}
    assert _value(stack, d, "Edit tool decisions", label="decision") == {"accept": 3, "reject": 1}
    assert _value(stack, d, "Edit decisions by source", label="source") == {
        "user_temporary": 2,
        "config": 1,
        "user_reject": 1,
    }
    # Choosing one source shows that source alone.
    assert _value(stack, d, "Total cost", source="claude_code_otel") == approx(sum(NATIVE_COST.values()))
    assert _value(stack, d, "Total cost", source="claude_transcripts") == approx(sum(BRIDGE_COST.values()))
    assert _value(stack, d, "Total tokens", model=SONNET) == sum(BRIDGE_TOK[SONNET].values())


def test_overview_dashboard_panels(stack):
    d = "ai-usage-overview.json"
    assert _value(stack, d, "Cost by provider", label="provider") == {"anthropic": approx(sum(EXPECT_COST.values()))}
    top_cost = _value(stack, d, "Top models", "A", label="model")
    assert top_cost == {m: approx(v) for m, v in EXPECT_COST.items()}
    # Cache savings, Anthropic ratios: p = cost / (in + 5 out + 0.1 cr + 1.25 cc), saving 0.9 * cr * p per model.
    expect = 0.0
    for m, tok in EXPECT_TOK.items():
        w = tok["input"] + 5 * tok["output"] + 0.1 * tok["cacheRead"] + 1.25 * tok["cacheCreation"]
        expect += 0.9 * tok["cacheRead"] * EXPECT_COST[m] / w
    assert _value(stack, d, "Estimated cache savings (Anthropic)") == approx(expect)
    assert math.isclose(expect, 0.9 * 98000 * 3e-6, rel_tol=1e-9)  # sonnet's input price is $3/M
    assert _value(stack, d, "Unpriced requests") == 0


def test_range_panels_show_the_usage(stack):
    """Time-series panels over the last 10 minutes: the per-interval increases add up to about the totals
    (increase() extrapolates at window edges, so within a few percent, never double)."""
    panel, target = next(
        (p, t)
        for n, p, t in _targets()
        if n == "claude-code.json" and p["title"] == "Cost by model" and p["type"] == "timeseries"
    )
    res = _run_panel(stack.prom, panel, target, stack.t, _variables())
    by_model = {r["metric"]["model"]: sum(float(v) for _, v in r["values"]) for r in res}
    assert set(by_model) == set(EXPECT_COST)
    for m, v in by_model.items():
        assert EXPECT_COST[m] * 0.9 <= v <= EXPECT_COST[m] * 1.5, (m, v)


def test_variable_queries(stack):
    for name, dash in dashboards().items():
        if name == "claude-code-activity.json":
            continue  # its variables read event metrics: tests/test_events_e2e.py
        for var in dash["templating"]["list"]:
            metric, label = var["definition"][len("label_values(") : -1].split(", ")
            values = set(stack.prom.api(f"/api/v1/label/{label}/values", {"match[]": [metric]}))
            expected = {
                "provider": {"anthropic"},
                "model": {SONNET, OPUS, HAIKU},
                "source": {"claude_code_otel", "claude_transcripts"},
            }[label]
            assert values == expected, (label, values)


# ------------------------------------------------------------------ last: mutates the stack


def test_bridge_restart_continues_its_series(stack):
    """A second `tokenbridge sync` (a restart, this time over HTTP/protobuf) re-exports the same totals. The
    dashboards must not count them twice."""
    col, p = stack.col, stack.prom
    _bridge_sync(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.http}", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        stack.home,
        stack.state,
    )
    t = wait_for_scrapes(p, 2, after=time.time())
    series = p.query('claude_code_cost_usage_USD_total{source="claude_transcripts"}', t)
    assert len(series) == len(BRIDGE_COST), (
        "the restarted bridge created new series instead of continuing its own (its OTLP resource needs a stable "
        f"service.instance.id; got instance labels {sorted({s['metric'].get('instance') for s in series})})"
    )
    assert p.scalar('sum(increase(claude_code_cost_usage_USD_total{source="claude_transcripts"}[1h]))', t) == approx(
        sum(BRIDGE_COST.values())
    )
    target = _panel("claude-code.json", "Total cost")
    res = _run_panel(p, target["_panel"], target, t, _variables())
    assert float(res[0]["value"][1]) == approx(sum(EXPECT_COST.values()))
