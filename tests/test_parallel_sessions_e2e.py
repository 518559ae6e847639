"""Two Claude Code processes resumed from one session (same session.id) export at the same time through the real
collector into the real Prometheus: with telemetry.sh's per-shell service.instance.id their streams stay distinct,
so the totals are exact, for cumulative temporality (what telemetry.sh sets; over HTTP) and for delta (Claude Code's
default, through delta_to_cumulative; over gRPC)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._stack import REPO, running, start_collector, start_prometheus, wait_for_scrapes

# Counts like Claude Code's token counter: four export intervals, each adding the process' amount.
SENDER = r"""
import os, sys, time
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
if os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter()
# Endpoint, protocol, temporality and OTEL_RESOURCE_ATTRIBUTES (service.instance.id) come from telemetry.sh.
# Resource(...), not Resource.create(): the Python SDK would add a random service.instance.id of its own, which
# Claude Code's SDK does not; only what OTEL_RESOURCE_ATTRIBUTES says may tell the two processes apart.
attrs = dict(kv.split("=", 1) for kv in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if kv)
resource = Resource({"service.name": "claude-code", "service.version": "2.1.240", **attrs})
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
mp = MeterProvider(resource=resource, metric_readers=[reader])
tokens = mp.get_meter("com.anthropic.claude_code").create_counter("claude_code.token.usage", unit="tokens")
session, amount = sys.argv[1], int(sys.argv[2])
for _ in range(4):
    tokens.add(amount, {"session.id": session, "type": "output", "model": "claude-sonnet-4-6"})
    if not mp.force_flush(10_000):
        sys.exit(3)
    time.sleep(0.4)
mp.shutdown()
"""


def _start_senders(workdir: Path, proto: str, port: int, session: str, temporality: str) -> list[subprocess.Popen]:
    client = workdir / "sender.py"
    client.write_text(SENDER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTLP_"))}
    procs = []
    for amount in (100, 7):
        script = (
            f"source {REPO / 'telemetry.sh'} --protocol={proto} --port={port} >/dev/null && "
            f"export OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE={temporality} && "
            f"exec {sys.executable} {client} {session} {amount}"
        )
        procs.append(subprocess.Popen(["bash", "-c", script], env=env, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory):
    w = tmp_path_factory.mktemp("parallel")
    col = start_collector(w)
    prom = start_prometheus(
        w, {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"}
    )
    with running(prom.proc, col.proc):
        # Both processes of a round run at once, their exports interleaved.
        procs = _start_senders(w, "http", col.http, "shared-cumulative", "cumulative")
        procs += _start_senders(w, "grpc", col.grpc, "shared-delta", "delta")
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        wait_for_scrapes(prom, 2, after=time.time() + 1)
        yield prom


@pytest.mark.parametrize("session", ["shared-cumulative", "shared-delta"])
def test_two_processes_with_one_session_id_give_exact_totals(parallel, session):
    prom = parallel
    expr = f'claude_code_token_usage_tokens_total{{session_id="{session}"}}'
    assert prom.scalar(f"sum({expr})") == 4 * 100 + 4 * 7
    # One series per process, told apart by the instance telemetry.sh gave each shell.
    instances = {r["metric"].get("instance", "") for r in prom.query(expr)}
    assert len(instances) == 2 and all(i.startswith("tb-") for i in instances), instances
