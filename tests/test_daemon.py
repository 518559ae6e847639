"""``tokenbridge run``, end to end: a real daemon process, real file events (watchdog), a real
loopback OTLP receiver, and the ledger read back through ``tokenbridge report daily --json``.

Waiting is polling with a deadline, never a fixed sleep, except where a test must show that
something does *not* happen (the idle window of the busy-loop test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from tests._otlp_sink import CUMULATIVE, Daemon, OtlpSink, daily_report, running_sink, tokenbridge, wait_for
from tests.conftest import assistant_line, user_tool_result

SONNET = "claude-sonnet-4-5-20250929"
OTHER_SESSION = "0a1b2c3d-0000-4000-8000-000000000002"
TOKEN = "claude_code.token.usage"
TYPES = ("input", "output", "cacheRead", "cacheCreation")


def tokens(sink: OtlpSink, source: str = "claude_transcripts", model: str = SONNET) -> dict[str, float]:
    """Newest exported token values of one (source, model), by type."""
    out = {}
    for (metric, attrs), p in sink.latest().items():
        a = dict(attrs)
        if metric == TOKEN and a["source"] == source and a["model"] == model:
            out[a["type"]] = p.value
    return out


def expect(*parts: dict[str, int]) -> dict[str, float]:
    return {t: float(sum(p.get(t, 0) for p in parts)) for t in TYPES}


def request(msg: str, **kw: Any) -> tuple[str, dict[str, int]]:
    """An assistant line and the usage it carries (defaults of ``assistant_line``)."""
    usage = {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200}
    usage.update(
        {k: kw[k2] for k, k2 in (("input", "input"), ("output", "output"), ("cacheRead", "cache_read")) if k2 in kw}
    )
    if "cache_5m" in kw:
        usage["cacheCreation"] = kw["cache_5m"] + kw.get("cache_1h", 0)
    return assistant_line(msg, msg.replace("msg_", "req_"), **kw), usage


def write_raw(path: Path, text: str) -> None:
    """One write() call, as Claude Code appends a burst."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def env_for(cli_env: dict[str, str], sink: OtlpSink, interval: str) -> dict[str, str]:
    return {**cli_env, **sink.env(), "TOKENBRIDGE_EXPORT_INTERVAL": interval}


def report_day(report: dict[str, Any], day: str) -> dict[str, Any] | None:
    return next((d for d in report["daily"] if d["date"] == day), None)


def test_run_ingests_history_then_appended_bursts_exactly_once_and_exports_periodically(claude_home, cli_env):
    f = claude_home.session_file()
    line_a, a = request("msg_A", ts="2026-03-02T10:15:04.010Z")
    claude_home.append(
        f,
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.120Z"),
        line_a,
    )
    with running_sink("grpc") as sink:
        daemon = Daemon(env_for(cli_env, sink, "0.5"))
        try:
            daemon.wait_ready()
            # Periodic export: several requests arrive while nothing changes, each with the totals.
            sink.wait_until(lambda s: s.count() >= 2)
            assert tokens(sink) == expect(a)

            # Burst 1: the first streamed line of response D (partial output).
            d_partial, _ = request("msg_D", output=5, input=2, cache_read=100, cache_5m=10, stop_reason=None)
            write_raw(f, d_partial + "\n")
            sink.wait_until(lambda s: tokens(s)["output"] == 187 + 5)

            # Burst 2: D repeated, D's final line, then half of E's line (still streaming).
            d_final, d = request("msg_D", output=64, input=2, cache_read=100, cache_5m=10)
            line_e, e = request("msg_E", ts="2026-03-02T10:30:00.000Z", input=1000, output=9, cache_read=0, cache_5m=0)
            cut = len(line_e) // 2
            write_raw(f, d_partial + "\n" + d_final + "\n" + user_tool_result("y" * 3000) + "\n" + line_e[:cut])
            sink.wait_until(lambda s: tokens(s)["output"] == 187 + 64)
            assert tokens(sink) == expect(a, d), "the half-written line is not read yet"

            # Burst 3: the rest of E, a resumed session in a new project copying A, and a subagent
            # file in a directory that did not exist when the daemon started.
            write_raw(f, line_e[cut:] + "\n")
            resumed = claude_home.session_file(OTHER_SESSION, project="-home-dev-other")
            write_raw(resumed, assistant_line("msg_A", "req_A", session=OTHER_SESSION) + "\n")
            line_f, fu = request(
                "msg_F", ts="2026-03-02T10:40:00.000Z", sidechain=True, input=30, output=40, cache_read=50, cache_5m=0
            )
            write_raw(claude_home.session_file(sub="a1b2c3"), line_f + "\n")
            want = expect(a, d, e, fu)
            sink.wait_until(lambda s: tokens(s) == want)

            assert daemon.stop() == 0, daemon.stderr()
        finally:
            daemon.close()
        assert tokens(sink) == want
        assert all(p.temporality == CUMULATIVE for p in sink.points())

    report = daily_report(cli_env)
    day = report_day(report, "2026-03-02")
    assert day is not None
    assert day["requests"] == 4  # A, D, E, F: no streamed line or copy counted twice
    assert (day["inputTokens"], day["outputTokens"]) == (want["input"], want["output"])
    assert (day["cacheReadTokens"], day["cacheCreationTokens"]) == (want["cacheRead"], want["cacheCreation"])
    assert "Traceback" not in daemon.stderr()
    assert "malformed" not in daemon.stderr()


def _write_stats(root: Path, days: dict[str, int], last: str = "2026-03-02") -> None:
    """Rewrite stats-cache.json whole, atomically (write a temp file, rename it over)."""
    doc = {
        "version": 5,
        "lastComputedDate": last,
        "dailyActivity": [{"date": d, "messageCount": 3, "sessionCount": 1} for d in sorted(days)],
        "dailyModelTokens": [{"date": d, "tokensByModel": {SONNET: n}} for d, n in sorted(days.items())],
        "dailyModelTokensVersion": 5,
        "modelUsage": {
            SONNET: {
                "inputTokens": 1,
                "outputTokens": 1,
                "cacheReadInputTokens": 2,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": 0,
            }
        },
        "totalSessions": 1,
        "totalMessages": 3,
        "firstSessionDate": "2026-02-26T09:00:00.000Z",
        "hourCounts": {"9": 3},
    }
    tmp = root / ".stats-cache.json.tmp"
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, root / "stats-cache.json")


def test_run_fills_only_days_before_the_transcripts_from_stats_cache_rewrites(claude_home, cli_env):
    line_a, a = request("msg_A", ts="2026-03-02T10:15:04.010Z")  # first transcript day: 2026-03-02
    claude_home.append(claude_home.session_file(), line_a)
    stats = "claude_stats_cache"
    with running_sink("http/protobuf") as sink:
        daemon = Daemon(env_for(cli_env, sink, "0.5"))
        try:
            daemon.wait_ready()
            sink.wait_until(lambda s: s.count() >= 1)
            assert tokens(sink, stats) == {}

            # 02-27 is before the transcripts: used, split 1:1:2:0 like modelUsage. 03-02 is covered
            # by the transcripts and 03-03 is after lastComputedDate: both ignored.
            _write_stats(claude_home.root, {"2026-02-27": 1000, "2026-03-02": 999_999, "2026-03-03": 5})
            sink.wait_until(lambda s: tokens(s, stats) == expect({"input": 250, "output": 250, "cacheRead": 500}))

            # A recompute raises 02-27 and adds 02-28: only the increase is added.
            _write_stats(claude_home.root, {"2026-02-27": 1600, "2026-02-28": 400, "2026-03-02": 999_999})
            sink.wait_until(lambda s: sum(tokens(s, stats).values()) == 2000)

            # A lower total for 02-27 is ignored; the new 02-26 is added.
            _write_stats(claude_home.root, {"2026-02-26": 80, "2026-02-27": 100, "2026-02-28": 400})
            sink.wait_until(lambda s: sum(tokens(s, stats).values()) == 2080)
            assert tokens(sink) == expect(a), "the transcripts' series is untouched"
            assert daemon.stop(signal.SIGINT) == 0, daemon.stderr()
        finally:
            daemon.close()

    report = daily_report(cli_env)
    days = {d["date"]: d["totalTokens"] for d in report["daily"]}
    assert days == {"2026-02-26": 80, "2026-02-27": 1600, "2026-02-28": 400, "2026-03-02": sum(a.values())}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_does_a_final_ingest_and_flush_then_exits_zero(sig, claude_home, cli_env):
    f = claude_home.session_file()
    line_a, a = request("msg_A")
    claude_home.append(f, line_a)
    with running_sink("grpc") as sink:
        daemon = Daemon(env_for(cli_env, sink, "3600"))  # no periodic export during the test
        try:
            daemon.wait_ready()
            assert sink.count() == 0
            line_c, c = request(
                "msg_C", ts="2026-03-02T11:00:00.000Z", input=6, output=90, cache_read=50000, cache_5m=0
            )
            write_raw(f, line_c + "\n")
            code = daemon.stop(sig)  # right after the append: the daemon may not have seen it yet
        finally:
            daemon.close()
        assert code == 0, daemon.stderr()
        assert sink.count() == 1, "exactly one final export"
        assert tokens(sink) == expect(a, c)
    err = daemon.stderr()
    assert "Traceback" not in err
    assert f"received {sig.name}" in err
    assert [line for line in err.splitlines() if "warning" in line or "error" in line] == []


class _Opens(FileSystemEventHandler):
    """The order of open() calls on files of one directory, seen through inotify (in order)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_opened(self, event: FileSystemEvent) -> None:
        self.names.append(Path(str(event.src_path)).name)


def test_idle_daemon_does_not_keep_rereading_the_stats_cache(claude_home, cli_env):
    """Its own reads must not wake it: that was a busy loop re-reading stats-cache.json 5x/s."""
    line_a, _ = request("msg_A")
    claude_home.append(claude_home.session_file(), line_a)
    _write_stats(claude_home.root, {"2026-02-27": 1000})
    marker = claude_home.root / "marker"
    marker.write_text("")
    opens = _Opens()
    watcher = Observer()
    watcher.schedule(opens, str(claude_home.root), recursive=False)
    watcher.start()
    daemon = Daemon({**cli_env, "TOKENBRIDGE_EXPORT_INTERVAL": "3600"}, "--no-otlp")
    try:
        daemon.wait_ready()
        marker.read_text()  # events after this one in the (ordered) inotify queue come after "ready"
        wait_for(lambda: "marker" in opens.names, what="the marker's open event")
        time.sleep(1.5)  # an idle window: nothing changes, so nothing may be read
        names = list(opens.names)
        after = names[names.index("marker") + 1 :]
        assert "stats-cache.json" in names[: names.index("marker")], "the first scan read it (the watcher works)"
        assert after.count("stats-cache.json") == 0, f"stats-cache.json re-read {after.count('stats-cache.json')}x idle"
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()
        watcher.stop()
        watcher.join(5)
    assert report_day(daily_report(cli_env), "2026-02-27") is not None


def test_safety_rescan_finds_files_no_watch_could_see(claude_home, cli_env, tmp_path):
    # A second root without projects/ at start has no watch; only the periodic rescan finds it.
    late = tmp_path / "late-root"
    late.mkdir()
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    env = {
        **cli_env,
        "CLAUDE_CONFIG_DIR": f"{claude_home.root},{late}",
        "TOKENBRIDGE_RESCAN_INTERVAL": "0.5",
    }
    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        f = late / "projects" / "-srv" / "22222222-2222-4222-8222-222222222222.jsonl"
        f.parent.mkdir(parents=True)
        write_raw(f, assistant_line("msg_B", "req_B", output=5) + "\n")

        def requests() -> int:
            return int(daily_report(env)["totals"]["requests"])

        wait_for(lambda: requests() == 2, timeout=15, what="the rescan to ingest the unwatched file")
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_bad_rescan_interval_is_a_config_error(cli_env):
    daemon = Daemon({**cli_env, "TOKENBRIDGE_RESCAN_INTERVAL": "soon"}, "--no-otlp")
    try:
        assert daemon.proc.wait(20) == 2
        assert "TOKENBRIDGE_RESCAN_INTERVAL: not a number of seconds: 'soon'" in daemon.stderr()
    finally:
        daemon.close()


def test_events_received_by_run_are_exported_at_once_under_their_own_source(cli_env):
    """The receiver commits through its own connection: the daemon's loop must be woken to export the new
    series (nothing else changes in the ledger here, and the safety rescan is ten minutes away)."""
    from tests._events import api_request, logs_request, send_http
    from tests._stack import free_port

    port = free_port()
    with running_sink("http/protobuf") as sink:
        daemon = Daemon({**env_for(cli_env, sink, "0.5"), "TOKENBRIDGE_EVENTS_PORT": str(port)})
        try:
            daemon.wait_ready()
            events = [
                api_request("s-1", "req_1", SONNET, duration_ms=400, input_tokens=3, output_tokens=70, cost_usd=0.01),
                api_request("s-1", "req_2", SONNET, duration_ms=400, input_tokens=5, output_tokens=30, cost_usd=0.02),
            ]
            assert send_http(f"http://127.0.0.1:{port}/v1/logs", logs_request(events)) == 200
            want = {"input": 8.0, "output": 100.0, "cacheRead": 0.0, "cacheCreation": 0.0}
            sink.wait_until(lambda s: tokens(s, source="claude_code_events") == want)
            assert daemon.stop() == 0, daemon.stderr()
        finally:
            daemon.close()


def test_run_refuses_to_start_a_receiver_beyond_loopback_without_a_token(cli_env):
    token = "not-a-token"  # too short: refused too, and never shown
    for extra, why in (
        ({"TOKENBRIDGE_EVENTS_HOST": "0.0.0.0"}, "required when the events receiver listens on 0.0.0.0"),
        ({"TOKENBRIDGE_EVENTS_TOKEN": token}, "must be at least 16"),
    ):
        proc = tokenbridge({**cli_env, **extra}, "run", "--no-otlp", "--no-progress")
        assert proc.returncode == 2, proc.stderr
        assert f"tokenbridge: config error: TOKENBRIDGE_EVENTS_TOKEN: {why}" in proc.stderr
        assert token not in proc.stderr and "Traceback" not in proc.stderr


def test_run_with_a_token_serves_beyond_loopback_and_requires_it(cli_env):
    from tests._events import api_request, logs_request, send_http
    from tests._stack import free_port

    port, token = free_port(), "events-token-for-this-test-0123"
    env = {**cli_env, "TOKENBRIDGE_EVENTS_HOST": "0.0.0.0", "TOKENBRIDGE_EVENTS_PORT": str(port)}
    daemon = Daemon({**env, "TOKENBRIDGE_EVENTS_TOKEN": token}, "--no-otlp")
    try:
        daemon.wait_ready()
        body = logs_request([api_request("s-1", "req_1", SONNET, duration_ms=1, input_tokens=3, output_tokens=7)])
        with pytest.raises(urllib.error.HTTPError) as refused:
            send_http(f"http://127.0.0.1:{port}/v1/logs", body)
        assert refused.value.code == 401
        assert send_http(f"http://127.0.0.1:{port}/v1/logs", body, {"Authorization": f"Bearer {token}"}) == 200
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()
    assert token not in daemon.stderr()
    assert daily_report(env)["totals"]["requests"] == 1


def test_a_disabled_events_source_opens_no_receiver(cli_env, tmp_path):
    from tests._stack import free_port

    port = free_port()
    (tmp_path / "no-config.toml").write_text('[sources]\nenabled = ["claude_transcripts"]\n')
    daemon = Daemon({**cli_env, "TOKENBRIDGE_EVENTS_PORT": str(port)}, "--no-otlp")
    try:
        daemon.wait_ready()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "nothing listens for events"
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()
