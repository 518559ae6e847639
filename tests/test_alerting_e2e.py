"""End to end on the real binaries: usage and a balance pushed into a real Prometheus (its OTLP receiver, the
repo's prometheus.yml and rules), the rules fire, a real Alertmanager (config from scripts/alertmanager_config.py)
posts Slack-compatible JSON to a webhook on loopback, and the messages carry the right labels and numbers.

Only timing is shortened in the copies the test runs: rule groups evaluate every 5 s instead of every 1-5 min,
`for:` durations are 0, Alertmanager's group_wait is 1 s. Expressions, thresholds and templates are the repo's.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tests._stack import (
    REPO,
    Proc,
    alertmanager_bin,
    free_port,
    http_get,
    prometheus_bin,
    prometheus_flags_from_compose,
    rewrite_prometheus_config,
    spawn,
    wait_until,
)


@contextmanager
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A loopback HTTP server collecting the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/slack", received
    finally:
        server.shutdown()
        server.server_close()


def _attrs(d: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in d.items()]


def otlp_request(now: float) -> bytes:
    """The bridge's shapes: a cumulative cost counter ($0.05 every 15 s for 20 minutes: $12/h) and a balance."""
    ns = 1_000_000_000
    start = int((now - 1300) * ns)
    cost = metrics_pb2.Metric(name="claude_code.cost.usage", unit="USD")
    cost.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    cost.sum.is_monotonic = True
    labels = {"model": "claude-sonnet-4-5", "provider": "anthropic", "source": "claude_transcripts"}
    for i in range(81):
        t = now - 1200 + 15 * i
        cost.sum.data_points.append(
            metrics_pb2.NumberDataPoint(
                attributes=_attrs(labels), start_time_unix_nano=start, time_unix_nano=int(t * ns), as_double=0.05 * i
            )
        )
    balance = metrics_pb2.Metric(name="tokenbridge.balance")
    for i in range(5):
        balance.gauge.data_points.append(
            metrics_pb2.NumberDataPoint(
                attributes=_attrs({"provider": "openrouter", "currency": "USD"}),
                time_unix_nano=int((now - 60 + 15 * i) * ns),
                as_double=2.5,
            )
        )
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(_attrs({"service.name": "tokenbridge", "service.instance.id": "e2e"}))
    rm.scope_metrics.add().metrics.extend([cost, balance])
    return req.SerializeToString()


def _fast_copies(workdir: Path, am_port: int) -> Path:
    """prometheus.yml and the rules with short timing; everything else unchanged."""
    unused = str(free_port())
    cfg = rewrite_prometheus_config(
        workdir / "prometheus-config",
        {
            "alertmanager:9093": f"127.0.0.1:{am_port}",
            "otel-collector:8889": f"127.0.0.1:{unused}",
            "otel-collector:8888": f"127.0.0.1:{unused}",
        },
    )
    cfg.write_text(cfg.read_text().replace("evaluation_interval: 30s", "evaluation_interval: 5s"))
    rules = cfg.parent / "prometheus" / "rules"
    (rules / "thresholds.yml").unlink(missing_ok=True)
    spend = rules / "spend.yml"
    text = re.sub(r"interval: (1|5)m", "interval: 5s", spend.read_text())
    spend.write_text(re.sub(r"for: \d+m", "for: 0s", text))
    env = {"TOKENBRIDGE_BUDGET_DAILY_USD": "0.01"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "prometheus/generate_rules.py"),
            "--thresholds",
            "--out",
            str(rules / "thresholds.yml"),
        ],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return cfg


def _alertmanager(workdir: Path, port: int, hook_url: str) -> Proc:
    amdir = workdir / "alertmanager"
    shutil.copytree(REPO / "alertmanager" / "templates", amdir / "templates")
    env = {"PATH": "/usr/bin:/bin", "TOKENBRIDGE_ALERT_WEBHOOK_URL": hook_url}
    gen = subprocess.run(
        [sys.executable, str(REPO / "scripts/alertmanager_config.py"), "--out", str(amdir / "alertmanager.yml")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert gen.returncode == 0, gen.stderr
    cfg = amdir / "alertmanager.yml"
    assert (cfg.stat().st_mode & 0o777) == 0o600
    cfg.write_text(cfg.read_text().replace("group_wait: 30s", "group_wait: 1s"))
    check = subprocess.run(
        [str(Path(alertmanager_bin()).with_name("amtool")), "check-config", str(cfg)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    argv = [
        alertmanager_bin(),
        f"--config.file={cfg}",
        f"--storage.path={workdir / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    proc = spawn("alertmanager", argv, workdir / "alertmanager.log")
    wait_until(lambda: proc.alive() and http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 60, "Alertmanager")
    return proc


def test_balance_and_budget_alerts_reach_the_webhook_with_their_numbers(tmp_path):
    now = time.time()
    utc = datetime.fromtimestamp(now, UTC)
    if utc.hour == 0 and utc.minute < 8:
        # The first minutes of a UTC day hold no complete 5-minute step of today's spend yet: wait them out
        # (at most 8 minutes, rarely) rather than skip.
        time.sleep((8 - utc.minute) * 60 - utc.second)
        now = time.time()
    am_port, prom_port = free_port(), free_port()
    with webhook() as (hook_url, received):
        am = _alertmanager(tmp_path, am_port, hook_url)
        cfg = _fast_copies(tmp_path, am_port)
        argv = [
            prometheus_bin(),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            *prometheus_flags_from_compose(),
        ]
        prom = spawn("prometheus", argv, tmp_path / "prometheus.log")
        try:
            base = f"http://127.0.0.1:{prom_port}"
            wait_until(lambda: prom.alive() and http_get(f"{base}/-/ready")[0] == 200, 60, "Prometheus ready")
            req = urllib.request.Request(
                f"{base}/api/v1/otlp/v1/metrics",
                data=otlp_request(now),
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200

            def names() -> set[str]:
                return {m["json"]["attachments"][0]["title"].split("] ")[1] for m in received}

            try:
                wait_until(lambda: {"ProviderBalanceLow", "DailyBudgetExceeded"} <= names(), 120, "both alerts")
            except AssertionError:
                raise AssertionError(
                    f"webhook got {received}\n--- prometheus\n{prom.tail()}\n--- alertmanager\n{am.tail()}"
                ) from None
        finally:
            prom.stop()
            am.stop()
    by_name = {m["json"]["attachments"][0]["title"].split("] ")[1]: m for m in received}
    balance = by_name["ProviderBalanceLow"]
    assert balance["path"] == "/slack" and balance["json"]["username"] == "tokenbridge"
    att = balance["json"]["attachments"][0]
    assert att["title"] == "[FIRING:1] ProviderBalanceLow"
    assert "*openrouter prepaid balance is low: 2.50 USD*" in att["text"]
    assert "The openrouter balance is 2.50 USD, below the alert level of 5.00 USD" in att["text"]
    budget = by_name["DailyBudgetExceeded"]["json"]["attachments"][0]
    m = re.search(
        r"All providers together spent \$(\d+\.\d\d) today \(UTC\), above the daily budget of \$0\.01", budget["text"]
    )
    assert m, budget["text"]
    # At most the 20 minutes of data at $12/h, at least one complete 5-minute step. increase() extrapolates past
    # the last sample by up to half the average sample interval (16 s here, $0.027 at $12/h): 4.02 was seen.
    assert 1.0 - 0.01 <= float(m.group(1)) <= 4.0 + 0.03
