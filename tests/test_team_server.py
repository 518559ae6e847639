"""`./start.sh --team-server` / `scripts/stop.sh --team-server` in native mode (scripts/team-server.sh) with the
real team collector and VictoriaMetrics on free ports: a bridge on another "machine" sends over plain HTTP and over
TLS with the shipped overlay, and its total arrives exactly; bad setups fail with one line naming the thing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from tests._stack import (
    IN_CI,
    REPO,
    free_port,
    gone,
    http_get,
    team_otelcol_bin,
    victoriametrics_bin,
    wait_until,
    write_claude_home,
)
from tests._vm import vmalert_bin

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TOKEN = "ann-5b7d9f1e3c2a4b6d8e0f"
# The team server runs VictoriaMetrics with its production defaults, where a sample becomes visible to queries
# about 30 s after it arrived (-search.latencyOffset): the test's queries ask for latency_offset=1ms.
VISIBLE_S = 60


def _openssl() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        if IN_CI:
            pytest.fail("openssl not installed (apt-get install -y openssl)")
        pytest.skip("openssl not installed (never skipped in CI)")
    return exe


@pytest.fixture
def server(tmp_path: Path):
    ports = {
        k: str(free_port())
        for k in (
            "TEAM_OTLP_GRPC_PORT",
            "TEAM_OTLP_HTTP_PORT",
            "TEAM_OTELCOL_HEALTH_PORT",
            "TEAM_OTELCOL_METRICS_PORT",
            "VICTORIAMETRICS_PORT",
            "TEAM_GRAFANA_PORT",
            "TEAM_VMALERT_PORT",
        )
    }
    tokens = tmp_path / "team-tokens"
    tokens.write_text(f"ann:{TOKEN}\n")
    tokens.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "GRAFANA_", "TEAM_"))}
    env.update(ports)
    env.update(
        {
            "TOKENBRIDGE_MODE": "native",
            "TEAM_BIND": "127.0.0.1",
            "TOKENBRIDGE_TEAM_DIR": str(tmp_path / "team"),
            "TOKENBRIDGE_TEAM_TOKENS_FILE": str(tokens),
            "TOKENBRIDGE_TEAM_OTELCOL_BIN": team_otelcol_bin(),
            "TOKENBRIDGE_VICTORIAMETRICS_BIN": victoriametrics_bin(),
            "TOKENBRIDGE_VMALERT_BIN": vmalert_bin(),
        }
    )

    def run(*argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, timeout=120, env={**env, **(extra or {})}
        )

    run.env = env  # type: ignore[attr-defined]
    run.ports = ports  # type: ignore[attr-defined]
    yield run
    run(REPO / "scripts/stop.sh", "--team-server")


def _vm_total(port: str, user: str) -> float | None:
    q = urllib.parse.urlencode(
        {
            "query": f'sum(last_over_time(claude_code_token_usage_tokens_total{{user="{user}"}}[1h]))',
            "latency_offset": "1ms",  # the smallest VictoriaMetrics accepts
            "nocache": "1",
        }
    )
    code, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?{q}")
    res = json.loads(body)["data"]["result"] if code == 200 else []
    return float(res[0]["value"][1]) if res else None


def _vm_query(port: str, expr: str) -> dict[str, float]:
    """Per user, the value of an instant query (samples visible at once: latency_offset=1ms)."""
    q = urllib.parse.urlencode({"query": expr, "latency_offset": "1ms", "nocache": "1"})
    code, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?{q}")
    res = json.loads(body)["data"]["result"] if code == 200 else []
    return {r["metric"].get("user", ""): float(r["value"][1]) for r in res}


def _sync(tmp_path: Path, endpoint: str, protocol: str, extra: dict[str, str] | None = None) -> int:
    home = write_claude_home(
        tmp_path / "claude",
        {"5e5e5e5e-0000-4000-8000-00000000000a": {"model": "claude-sonnet-4-5-20250929", "requests": [
            {"input": 7, "output": 300, "cacheRead": 9000, "cacheCreation": 120},
            {"input": 3, "output": 80, "cacheRead": 9500, "cacheCreation": 0},
        ]}},
        time.time() - 600,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "CLAUDE_"))}
    env.update(
        {
            "CLAUDE_CONFIG_DIR": str(home),
            "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
            "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml"),
            "TOKENBRIDGE_TEAM": "1",
            "TOKENBRIDGE_MACHINE": "laptop-1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{TOKEN}",
            **(extra or {}),
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "sync", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    with Ledger.open(tmp_path / "state") as led:
        return sum(sum(t.tokens.values()) for t in led.totals())


def test_team_server_native_lifecycle(server, tmp_path):
    p = server.ports
    start = server(REPO / "start.sh", "--team-server")
    assert start.returncode == 0, start.stdout + start.stderr
    out = start.stdout
    for name in ("victoriametrics", "team-collector", "team-vmalert"):
        assert f"  {name} started (pid " in out, name
    assert f"grpc 127.0.0.1:{p['TEAM_OTLP_GRPC_PORT']}, http 127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}" in out
    assert "no TLS" in out and "Grafana: not started" in out
    assert "(alerts to nowhere: TEAM_ALERTMANAGER_URL unset, -notifier.blackhole)" in out
    again = server(REPO / "start.sh", "--team-server")
    assert again.returncode == 0 and "already running" in again.stdout and " started (pid" not in again.stdout

    total = _sync(tmp_path, f"http://127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}", "http/protobuf")
    wait_until(
        lambda: _vm_total(p["VICTORIAMETRICS_PORT"], "ann") == total, VISIBLE_S, "ann's total in VictoriaMetrics"
    )

    pids = [int(f.read_text().split()[0]) for f in (tmp_path / "team" / "run").glob("*.pid")]
    assert len(pids) == 3
    stop = server(REPO / "scripts/stop.sh", "--team-server")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    for name in ("team-collector", "team-vmalert", "victoriametrics"):
        assert f"stopped {name}" in stop.stdout, name
    for pid in pids:
        wait_until(lambda pid=pid: gone(pid), 40, f"pid {pid} gone")
    assert "nothing running" in server(REPO / "scripts/stop.sh", "--team-server").stdout


def test_team_server_vmalert_records_spend_per_user_and_fires_the_budget_alert(server, tmp_path):
    p = server.ports
    am = _FakeAlertmanager()
    secret = "am-pass-7f3e9a1c"
    # $0.001 a day for everyone: ann's two requests cost about a cent. No monthly budget: that alert must stay quiet.
    # Every group every 2 s (shipped: 5 min, budgets 1 min) so that the test does not wait minutes.
    extra = {"TOKENBRIDGE_TEAM_BUDGET_DAILY_USD": "0.001", "TEAM_VMALERT_INTERVAL": "2s",
             "TEAM_ALERTMANAGER_URL": f"http://tb:{secret}@127.0.0.1:{am.port}"}  # fmt: skip
    try:
        start = server(REPO / "start.sh", "--team-server", extra=extra)
        assert start.returncode == 0, start.stdout + start.stderr
        assert "  team-vmalert started (pid " in start.stdout
        assert f"vmalert                             http://127.0.0.1:{p['TEAM_VMALERT_PORT']}" in start.stdout
        assert f"(alerts to http://***@127.0.0.1:{am.port})" in start.stdout and secret not in start.stdout
        _vmalert_records_and_fires(server, tmp_path, am)
        assert secret not in (tmp_path / "team/logs/team-vmalert.log").read_text()
    finally:
        am.close()


class _FakeAlertmanager:
    """A loopback HTTP server answering Alertmanager's POST /api/v2/alerts: records each alert and the auth header."""

    def __init__(self) -> None:
        import http.server
        import threading

        received: list[tuple[str, dict[str, object]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/api/v2/alerts":
                    received.extend((self.headers.get("Authorization", ""), a) for a in json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def _vmalert_records_and_fires(server, tmp_path: Path, am: _FakeAlertmanager) -> None:
    p = server.ports
    assert "vector(0.001)" in (tmp_path / "team/vmalert/thresholds.yml").read_text()

    _sync(tmp_path, f"http://127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}", "http/protobuf")
    vm = p["VICTORIAMETRICS_PORT"]
    raw = 'sum by (user) (last_over_time(claude_code_cost_usage_USD_total{user="ann"}[1h]))'
    stored = wait_until(lambda: _vm_query(vm, raw).get("ann"), VISIBLE_S, "ann's cost in VictoriaMetrics")
    assert stored > 0.001

    # vmalert's record (the Team usage "spend today per user" series) equals what the collector stored for ann today.
    record = 'last_over_time(user:tokenbridge_cost_usd:today{user="ann"}[10m])'
    got = wait_until(lambda: _vm_query(vm, record).get("ann"), 180, "vmalert's recorded spend in VictoriaMetrics")
    assert abs(got - stored) < 1e-6, (got, stored)

    def firing() -> list[dict[str, object]] | None:
        code, body = http_get(f"http://127.0.0.1:{p['TEAM_VMALERT_PORT']}/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"] if code == 200 else []
        on = [a for a in alerts if a["state"] == "firing"]
        return on or None

    alerts = wait_until(firing, 120, "UserDailyBudgetExceeded firing in vmalert")
    assert [(a["name"], a["labels"]["user"]) for a in alerts] == [("UserDailyBudgetExceeded", "ann")]
    st = server(REPO / "scripts/status.sh", "--team-server")
    assert "budget alerts firing: UserDailyBudgetExceeded (ann)" in st.stdout, st.stdout
    # Sent to TEAM_ALERTMANAGER_URL, with the URL's credentials as basic auth.
    sent = wait_until(lambda: am.received or None, 60, "the alert at the Alertmanager")
    auth = "Basic " + base64.b64encode(b"tb:am-pass-7f3e9a1c").decode()
    assert {(h, a["labels"]["alertname"], a["labels"]["user"]) for h, a in sent} == {  # type: ignore[index]
        (auth, "UserDailyBudgetExceeded", "ann")
    }

    pids = [int(f.read_text().split()[0]) for f in (tmp_path / "team" / "run").glob("*.pid")]
    assert len(pids) == 3
    stop = server(REPO / "scripts/stop.sh", "--team-server")
    assert stop.returncode == 0 and "stopped team-vmalert" in stop.stdout
    for pid in pids:
        wait_until(lambda pid=pid: gone(pid), 40, f"pid {pid} gone")


def test_team_server_over_tls_with_the_shipped_overlay(server, tmp_path):
    p = server.ports
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    gen = subprocess.run(
        [_openssl(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    tls = {"TOKENBRIDGE_TEAM_TLS_CERT_FILE": str(cert), "TOKENBRIDGE_TEAM_TLS_KEY_FILE": str(key)}
    start = server(REPO / "start.sh", "--team-server", extra=tls)
    assert start.returncode == 0, start.stdout + start.stderr
    assert "(bearer token per user, TLS)" in start.stdout and "no TLS" not in start.stdout
    total = _sync(
        tmp_path,
        f"https://127.0.0.1:{p['TEAM_OTLP_GRPC_PORT']}",
        "grpc",
        {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert)},
    )
    wait_until(lambda: _vm_total(p["VICTORIAMETRICS_PORT"], "ann") == total, VISIBLE_S, "ann's total over TLS")
    # Plain text to the TLS port is not accepted.
    code = http_get(f"http://127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}/v1/metrics")[0]
    assert code == 400


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"TOKENBRIDGE_TEAM_TOKENS_FILE": ""}, "TOKENBRIDGE_TEAM_TOKENS_FILE is not set"),
        ({"TOKENBRIDGE_TEAM_TOKENS_FILE": "/nonexistent/tokens"}, "is not a readable file"),
        ({"TOKENBRIDGE_TEAM_TLS_CERT_FILE": "/nonexistent/cert.pem"}, "TOKENBRIDGE_TEAM_TLS_CERT_FILE"),
        ({"TOKENBRIDGE_TEAM_BUDGET_DAILY_USD": "ten"}, "TOKENBRIDGE_TEAM_BUDGET_DAILY_USD: not a number"),
        ({"TOKENBRIDGE_VMALERT_BIN": "/nonexistent/vmalert"}, "TOKENBRIDGE_VMALERT_BIN=/nonexistent/vmalert is not"),
    ],
)
def test_team_server_setup_errors_name_the_setting(server, extra, message):
    r = server(REPO / "start.sh", "--team-server", extra=extra)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "started (pid" not in r.stdout


def test_team_server_starts_a_local_grafana_on_victoriametrics(server, tmp_path):
    """GRAFANA_HOME=<unpacked Grafana>: the team server runs `bin/grafana server` with the VictoriaMetrics datasource
    and both dashboard folders. A stand-in binary records what it was given (no Grafana server can be installed)."""
    import yaml

    gh = tmp_path / "grafana-home"
    (gh / "bin").mkdir(parents=True)
    record = tmp_path / "grafana-invocation.txt"
    fake = gh / "bin" / "grafana"
    fake.write_text(
        f'#!/usr/bin/env bash\n{{ echo "ARGS $*"; env | grep -E "^(GF_|TOKENBRIDGE_GRAFANA)"; }} > {record}\n'
        'exec -a "$0" sleep 300\n'
    )
    fake.chmod(0o755)
    secret = "s3cret-team-grafana-pw"
    start = server(
        REPO / "start.sh", "--team-server", extra={"GRAFANA_HOME": str(gh), "GRAFANA_ADMIN_PASSWORD": secret}
    )
    assert start.returncode == 0, start.stdout + start.stderr
    assert "  team-grafana started (pid " in start.stdout and secret not in start.stdout + start.stderr
    wait_until(lambda: record.exists() and "GF_PATHS_PROVISIONING" in record.read_text(), 10, "the stand-in's env")
    got = dict(line.split("=", 1) for line in record.read_text().splitlines()[1:])
    assert got["TOKENBRIDGE_GRAFANA_VICTORIAMETRICS_URL"] == f"http://127.0.0.1:{server.ports['VICTORIAMETRICS_PORT']}"
    assert got["GF_SERVER_HTTP_PORT"] == server.ports["TEAM_GRAFANA_PORT"]
    prov = Path(got["GF_PATHS_PROVISIONING"])
    ds = yaml.safe_load((prov / "datasources/victoriametrics.yml").read_text())["datasources"][0]
    assert ds["uid"] == "tokenbridge-prometheus"
    # Only grafana/dashboards-team (Team usage, the personal dashboards' team variants): VictoriaMetrics rejects the
    # personal dashboards' `anchored` ranges.
    assert sorted(p.name for p in (prov / "dashboards").iterdir()) == ["team.yml"]
    team = yaml.safe_load((prov / "dashboards/team.yml").read_text())["providers"][0]["options"]["path"]
    assert team == str(REPO / "grafana/dashboards-team")
    stop = server(REPO / "scripts/stop.sh", "--team-server")
    assert "stopped team-grafana (pid" in stop.stdout


def test_status_metrics_and_logs_show_the_team_server_without_a_token(server, tmp_path):
    p = server.ports
    scripts = REPO / "scripts"
    down = server(scripts / "status.sh", "--team-server")
    assert down.returncode == 1 and "FAIL  team-collector is not running" in down.stdout, down.stdout + down.stderr
    start = server(REPO / "start.sh", "--team-server")
    assert start.returncode == 0, start.stdout + start.stderr
    total = _sync(tmp_path, f"http://127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}", "http/protobuf")
    wrong = "nobody-0000-not-a-known-token"
    refused = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", f"Authorization: Bearer {wrong}",
         "-H", "Content-Type: application/x-protobuf", f"http://127.0.0.1:{p['TEAM_OTLP_HTTP_PORT']}/v1/metrics"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.stdout == "401"
    wait_until(lambda: _vm_total(p["VICTORIAMETRICS_PORT"], "ann") == total, VISIBLE_S, "ann's total")

    # VictoriaMetrics refreshes its count of the hour's active series every few seconds.
    def status() -> subprocess.CompletedProcess[str] | None:
        r = server(scripts / "status.sh", "--team-server")
        return None if ", 0 active series" in r.stdout else r

    st = wait_until(status, 60, "VictoriaMetrics' active series in status.sh", interval=2)
    out = st.stdout
    assert st.returncode == 0, out + st.stderr
    pids = {f.stem: f.read_text().split()[0] for f in (tmp_path / "team" / "run").glob("*.pid")}
    assert f"ok    team-collector (pid {pids['team-collector']}, " in out
    assert f"ok    victoriametrics (pid {pids['victoriametrics']}, " in out
    assert f"ok    team-vmalert (pid {pids['team-vmalert']}, " in out
    assert "ok    no budget alerts firing (vmalert " in out  # no budget configured
    assert "warn  team-grafana not running" in out
    assert f"tokens file {server.env['TOKENBRIDGE_TEAM_TOKENS_FILE']} (users: 1;" in out
    assert "warn  no TLS" in out
    refusal = "refused requests (missing or unknown token): 1; last: reason teamauth: token not accepted, peer 127."
    assert refusal in out
    # Counters from the processes' own /metrics: the sync's points in, out, and stored.
    received = int(out.split("received: ")[1].split()[0])
    written = int(out.split("written to VictoriaMetrics: ")[1].split()[0])
    ingested = int(out.split("VictoriaMetrics: ")[-1].split()[0])
    active = int(out.split("rows ingested, ")[1].split()[0])
    assert received > 0 and written == received and ingested >= written and active > 0, out
    assert f"team-collector   {tmp_path / 'team/logs/team-collector.log'}" in out
    assert TOKEN not in out + st.stderr and wrong not in out + st.stderr

    m = server(scripts / "metrics.sh", "--team-server")
    assert m.returncode == 0, m.stdout + m.stderr
    rows = [line.split() for line in m.stdout.splitlines() if line.startswith("claude_code_token_usage_tokens_total")]
    assert [(r[1], float(r[3]), r[-2:]) for r in rows] == [("ann", float(total), ["s", "ago"])], m.stdout
    assert "received: " in m.stdout and "rows ingested" in m.stdout
    assert TOKEN not in m.stdout + m.stderr

    logs = server(scripts / "logs.sh", "--team-server", "team-collector")
    assert logs.returncode == 0 and "team OTLP request refused" in logs.stdout
    assert TOKEN not in logs.stdout and wrong not in logs.stdout
    assert "victoriametrics.log" in server(scripts / "logs.sh", "--team-server").stdout
    bad = server(scripts / "logs.sh", "--team-server", "prometheus")
    assert bad.returncode != 0 and "not a team server service" in bad.stderr
