"""Claude Code's events through the real collector into the ledger of a real ``tokenbridge run``.

The collector (the repo's own configuration) forwards OTLP logs it receives over HTTP and gRPC to the bridge's
receiver (its ``otlphttp/tokenbridge`` exporter, gzip-compressed protobuf). The same requests are also written to
a transcript, before and after their events; the bridge is restarted between; events are re-sent. The ledger must
hold each request once, and ``tokenbridge report`` must equal the union of both views.

Events sent while the bridge is down wait in the collector's persistent queue (``file_storage/events``) and survive
a restart of the collector; the bridge's token travels from the collector's environment as a bearer header, and a
wrong one is refused without being logged.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from tests._events import api_request, logs_request, send_grpc, send_http
from tests._otlp_sink import Daemon, daily_report, tokenbridge, wait_for
from tests._stack import Collector, free_port, http_get, running, start_collector, wait_until
from tests.conftest import assistant_line

SONNET = "claude-sonnet-4-5-20250929"
SESSION = "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f"
# conftest's assistant_line: input 4, output 187, cache read 48000, cache writes 1200.
LINE = {"input_tokens": 4, "output_tokens": 187, "cache_read_tokens": 48000, "cache_creation_tokens": 1200}


def _event(req: str, cost: float, **tokens: int) -> dict:
    return api_request(SESSION, req, SONNET, duration_ms=700, cost_usd=cost, **{**LINE, **tokens})


def _requests(state) -> int:
    with Ledger.open(state) as led:
        return led.request_count()


def _rows(state) -> dict[str, tuple]:
    with Ledger.open(state) as led:
        q = "SELECT dedup_key, source, output, cost_origin FROM usage ORDER BY dedup_key"
        return {r[0]: r[1:] for r in led._db.execute(q)}


@pytest.fixture
def collector(tmp_path):
    port = free_port()
    col = start_collector(tmp_path, {"TOKENBRIDGE_EVENTS_ENDPOINT": f"http://127.0.0.1:{port}"})
    with running(col.proc):
        yield col, port


def test_events_and_transcripts_count_each_request_once_across_restarts(collector, cli_env, claude_home, tmp_path):
    col, port = collector
    env = {**cli_env, "TOKENBRIDGE_EVENTS_PORT": str(port)}
    state = tmp_path / "state"
    http = f"http://127.0.0.1:{col.http}/v1/logs"
    f = claude_home.session_file()

    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        # 1. Events first (HTTP): req_A (its transcript line comes later) and req_E (never in a transcript).
        assert send_http(http, logs_request([_event("req_A", 0.0931), _event("req_E", 0.5, output_tokens=900)])) == 200
        wait_for(lambda: _requests(state) == 2, 30, "the events in the ledger")
        # 2. The transcript: req_A (already seen as an event) and req_B (its event comes later).
        claude_home.append(f, assistant_line("msg_A", "req_A"), assistant_line("msg_B", "req_B", output=50))
        wait_for(lambda: _requests(state) == 3, 30, "the transcript lines in the ledger")
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()

    # 3. Restart; the events are sent again (gRPC), with req_B's event (after its line) and a new req_G.
    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        again = [
            _event("req_A", 0.0931),
            _event("req_E", 0.5, output_tokens=900),
            _event("req_B", 0.02, output_tokens=50),
        ]
        send_grpc(f"127.0.0.1:{col.grpc}", logs_request([*again, _event("req_G", 0.01, output_tokens=5)]))
        wait_for(lambda: _requests(state) == 4, 30, "req_G in the ledger")
        time.sleep(1)  # anything else in flight would show now
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()

    rows = _rows(state)
    assert rows == {
        "cc-req:req_A": ("claude_code_events", 187, "reported"),  # event first: its series stays
        "cc-req:req_B": ("claude_transcripts", 50, "reported"),  # line first: the event brings its cost
        "cc-req:req_E": ("claude_code_events", 900, "reported"),
        "cc-req:req_G": ("claude_code_events", 5, "reported"),
    }
    with Ledger.open(state) as led:
        assert led.totals() == led.recomputed_totals()
    totals = daily_report(env)["totals"]
    assert totals["requests"] == 4
    assert totals["outputTokens"] == 187 + 50 + 900 + 5
    assert totals["inputTokens"] == 4 * 4 and totals["cacheReadTokens"] == 4 * 48000
    assert totals["cacheCreationTokens"] == 4 * 1200
    assert totals["totalCost"] == "0.6231"  # the tool-reported costs: 0.0931 + 0.02 + 0.5 + 0.01
    assert "Traceback" not in daemon.stderr()

    # `sources` shows the native telemetry beside the transcripts.
    src = {s["name"]: s for s in json.loads(tokenbridge(env, "sources", "--json").stdout)["sources"]}
    assert src["claude_code_events"]["requests"] == 3
    assert src["claude_transcripts"]["requests"] == 1
    assert src["claude_code_events"]["roots"] == [f"http://127.0.0.1:{port}/v1/logs (tokenbridge run)"]


def _collector_log(col: Collector) -> str:
    return col.proc.log.read_text(errors="replace")


def _exporter_metric(col: Collector, name: str) -> float:
    """One of the collector's own metrics for the exporter to the bridge."""
    _, body = http_get(f"http://127.0.0.1:{col.telemetry}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and 'exporter="otlphttp/tokenbridge"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _delivered(col: Collector) -> float:
    """Log records the exporter to the bridge delivered (answered 200)."""
    return _exporter_metric(col, "otelcol_exporter_sent_log_records")


def _tried_and_failed(col: Collector) -> bool:
    """The exporter to the bridge failed once and keeps the batch for a retry."""
    return any("otlphttp/tokenbridge" in line and "Will retry" in line for line in _collector_log(col).splitlines())


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_events_queued_while_the_bridge_is_down_survive_a_collector_restart(cli_env, tmp_path, stop):
    port = free_port()
    token = secrets.token_hex(24)
    queue = tmp_path / "events-queue"
    col_env = {
        "TOKENBRIDGE_EVENTS_ENDPOINT": f"http://127.0.0.1:{port}",
        "TOKENBRIDGE_EVENTS_TOKEN": token,
        "TOKENBRIDGE_EVENTS_QUEUE_DIR": str(queue),
    }
    env = {**cli_env, "TOKENBRIDGE_EVENTS_PORT": str(port), "TOKENBRIDGE_EVENTS_TOKEN": token}
    state = tmp_path / "state"
    sent = [_event("req_Q1", 0.1), _event("req_Q2", 0.2, output_tokens=300), _event("req_Q3", 0.3, output_tokens=7)]

    # 1. The bridge is down: Claude Code's events reach the collector (HTTP and gRPC), which cannot deliver them.
    col = start_collector(tmp_path, col_env, name="otelcol-1")
    with running(col.proc):
        send_grpc(f"127.0.0.1:{col.grpc}", logs_request(sent[2:]))
        wait_until(lambda: _tried_and_failed(col), 60, "the collector's first failed delivery to the bridge")
        # The one consumer retries that batch; the next one waits behind it in the queue, on disk once counted (the
        # size counts the batch being retried too).
        assert send_http(f"http://127.0.0.1:{col.http}/v1/logs", logs_request(sent[:2])) == 200
        wait_until(lambda: _exporter_metric(col, "otelcol_exporter_queue_size") == 2, 30, "the second batch queued")
        if stop == "sigkill":  # no shutdown at all: what the queue wrote (fsync) is what survives
            col.proc.popen.kill()
            col.proc.popen.wait(10)
    # 2. The collector stopped with the events undelivered: they are on disk, not in the ledger.
    assert col.proc.popen.returncode is not None
    assert any(p.is_file() and p.stat().st_size > 0 for p in queue.iterdir()), list(queue.iterdir())
    assert not state.exists() or _requests(state) == 0

    # 3. The collector comes back (same queue), then the bridge: every queued event arrives, once.
    col = start_collector(tmp_path, col_env, name="otelcol-2")
    with running(col.proc):
        daemon = Daemon(env, "--no-otlp")
        try:
            daemon.wait_ready()
            wait_for(lambda: _requests(state) == 3, 90, "the queued events in the ledger")
            # The same events again (a client's retry): nothing changes.
            wait_until(lambda: _delivered(col) == 3, 30, "the collector's count of delivered events")
            assert send_http(f"http://127.0.0.1:{col.http}/v1/logs", logs_request(sent)) == 200
            wait_until(lambda: _delivered(col) == 6, 30, "the re-sent events delivered")
            assert daemon.stop() == 0, daemon.stderr()
        finally:
            daemon.close()
        log = _collector_log(col)
    rows = _rows(state)
    assert rows == {
        "cc-req:req_Q1": ("claude_code_events", 187, "reported"),
        "cc-req:req_Q2": ("claude_code_events", 300, "reported"),
        "cc-req:req_Q3": ("claude_code_events", 7, "reported"),
    }
    with Ledger.open(state) as led:
        assert led.totals() == led.recomputed_totals()
    totals = daily_report(env)["totals"]
    assert totals["requests"] == 3 and totals["outputTokens"] == 187 + 300 + 7
    assert totals["totalCost"] == "0.6"
    assert "Dropping data" not in log and "dropped" not in log.lower(), log
    assert token not in log and token not in daemon.stderr()


def test_a_wrong_token_is_refused_and_never_logged(cli_env, tmp_path):
    port = free_port()
    right, wrong = secrets.token_hex(24), secrets.token_hex(24)
    col = start_collector(
        tmp_path, {"TOKENBRIDGE_EVENTS_ENDPOINT": f"http://127.0.0.1:{port}", "TOKENBRIDGE_EVENTS_TOKEN": wrong}
    )
    env = {**cli_env, "TOKENBRIDGE_EVENTS_PORT": str(port), "TOKENBRIDGE_EVENTS_TOKEN": right}
    state: Path = tmp_path / "state"
    with running(col.proc):
        daemon = Daemon(env, "--no-otlp")
        try:
            daemon.wait_ready()
            assert send_http(f"http://127.0.0.1:{col.http}/v1/logs", logs_request([_event("req_X", 0.1)])) == 200
            wait_for(lambda: "(401)" in daemon.stderr(), 30, "the bridge's refusal")
            # 401 is final for the exporter: it says so and does not retry.
            wait_until(lambda: "401" in _collector_log(col), 30, "the collector's report of the refusal")
            assert daemon.stop() == 0, daemon.stderr()
        finally:
            daemon.close()
    assert "TOKENBRIDGE_EVENTS_TOKEN" in daemon.stderr()
    assert _requests(state) == 0
    for text in (daemon.stderr(), _collector_log(col)):
        assert right not in text and wrong not in text
