"""OpenClaw's gateway log (local-formats.md §4.2): run results with ``meta.agentMeta.usage`` count
only for sessions without a transcript; a transcript, whenever it arrives, replaces its
session's log rows; rotated copies count once."""

from __future__ import annotations

import json
import os
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.ledger import Ledger
from bridge.series import TOKEN_METRIC, guarded_points
from bridge.sources._openclaw_log import LOG_PREFIX, log_files
from bridge.sources.openclaw import OpenClaw
from tests._otlp_sink import Daemon, daily_report, wait_for
from tests.conftest import ledger_sums as totals
from tests.test_openclaw import LINES, SID, TWO, ClawHome

LOG_ONLY = "5e55a000-0000-4c11-97ae-00000000000a"
DAY_LOG = "openclaw-2026-04-08.log"


def run_result(session: str | None, inp: int, out: int, read: int = 0, write: int = 0, run: str | None = None,
               model: str = "claude-sonnet-4-6", cost: float | None = None) -> dict[str, Any]:  # fmt: skip
    """An early-2026 agent run result (issue #10936 shape): usage under ``meta.agentMeta``."""
    usage: dict[str, Any] = {"input": inp, "output": out, "cacheRead": read, "cacheWrite": write,
                             "total": inp + out + read + write}  # fmt: skip
    if cost is not None:
        usage["cost"] = {"total": cost}
    agent: dict[str, Any] = {"provider": "anthropic", "model": model, "usage": usage}
    if session is not None:
        agent["sessionId"] = session
    if run is not None:
        agent["runId"] = run
    return {"payloads": [{"text": "Done."}], "meta": {"durationMs": 5120, "agentMeta": agent}}


def tslog(message: Any, at: str, as_text: bool = False) -> str:
    """One tslog JSON line: the subsystem under "0", the message under "1" (or a text under "0")."""
    meta = {"runtime": "node", "name": "openclaw", "date": at, "logLevelId": 3, "logLevelName": "INFO"}
    if as_text:
        return json.dumps({"0": "embedded run done: " + json.dumps(message), "_meta": meta, "time": at})
    return json.dumps({"0": '{"subsystem":"agent/embedded"}', "1": message, "_meta": meta, "time": at})


SID_RUN = tslog(run_result(SID, 40, 500, 90000, 1800, run="run-1"), "2026-04-08T01:05:11.000Z")
ONLY_RUN = tslog(run_result(LOG_ONLY, 5, 50, 1000, run="run-2", cost=0.5), "2026-04-08T02:00:00.000Z")
ONLY = {"input": 5, "output": 50, "cacheRead": 1000, "cacheCreation": 0, "requests": 1}


def plus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] + b[k] for k in a}


@pytest.fixture
def claw(tmp_path: Path) -> ClawHome:
    return ClawHome(tmp_path / ".openclaw")


class Logs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dir = tmp / "openclaw"
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, *lines: str) -> Path:
        path = self.dir / name
        with path.open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
        return path


def source(home: ClawHome, logs: Logs) -> OpenClaw:
    return OpenClaw(roots=[home.root], log_tmp=logs.tmp)


def scan(home: ClawHome, logs: Logs, ledger: Ledger, pricer: Any) -> int:
    stats = source(home, logs).scan(ledger, pricer)
    assert not stats.errors
    return stats.new_requests


def log_rows(ledger: Ledger) -> dict[str, int]:
    return {s: t.requests for s, t in ledger.fallback_sums("openclaw", LOG_PREFIX).items()}


def test_log_only_session_counts_with_its_model_and_stored_cost(claw, tmp_path, ledger, pricer):
    claw.sessions()
    logs = Logs(tmp_path / "tmp")
    logs.write(DAY_LOG, '{"0":"gateway ready","_meta":{"date":"2026-04-08T00:00:00.000Z"}}', ONLY_RUN)
    assert scan(claw, logs, ledger, pricer) == 1
    assert totals(ledger) == ONLY
    (series,) = ledger.totals()
    assert (series.provider, series.model, series.session_id, series.cost) == (
        "anthropic", "claude-sonnet-4-6", LOG_ONLY, Decimal("0.5"),
    )  # fmt: skip
    assert scan(claw, logs, ledger, pricer) == 0 and totals(ledger) == ONLY


def test_run_result_as_text_after_a_prefix_and_at_the_top_level_both_parse(claw, tmp_path, ledger, pricer):
    logs = Logs(tmp_path / "tmp")
    top = {**run_result("sess-top", 1, 2, run="r-top"), "_meta": {"date": "2026-04-08T03:00:00.000Z"}}
    logs.write(DAY_LOG, tslog(run_result("sess-text", 3, 4, run="r-text"), "2026-04-08T03:01:00Z", as_text=True),
               json.dumps(top))  # fmt: skip
    claw.sessions()
    assert scan(claw, logs, ledger, pricer) == 2
    assert log_rows(ledger) == {"sess-text": 1, "sess-top": 1}
    assert totals(ledger)["output"] == 6


def test_session_in_transcript_and_log_counts_the_transcript_when_the_log_comes_first(claw, tmp_path, pricer):
    logs = Logs(tmp_path / "tmp")
    claw.sessions()
    logs.write(DAY_LOG, SID_RUN, ONLY_RUN)
    with Ledger.open(tmp_path / "state") as ledger:
        scan(claw, logs, ledger, pricer)
        assert log_rows(ledger) == {SID: 1, LOG_ONLY: 1}
    # Restart: a new process finds the transcript of the session the log stood in for.
    claw.append(claw.transcript(), *LINES)
    with Ledger.open(tmp_path / "state") as ledger:
        scan(claw, logs, ledger, pricer)
        assert totals(ledger) == plus(TWO, ONLY)  # the log's 40/500/90000 of SID are gone
        assert log_rows(ledger) == {LOG_ONLY: 1}
        # A rotation re-reads the same log lines from a new file: the retracted run stays out.
        shutil.move(logs.dir / DAY_LOG, logs.dir / "openclaw-2026-04-08.1.log")
        logs.write(DAY_LOG, tslog(run_result(SID, 1, 1, run="run-3"), "2026-04-08T04:00:00Z"))
        scan(claw, logs, ledger, pricer)
        assert totals(ledger) == plus(TWO, ONLY)


def test_session_in_transcript_and_log_counts_the_transcript_when_the_transcript_comes_first(claw, tmp_path, pricer):
    logs = Logs(tmp_path / "tmp")
    claw.append(claw.transcript(), *LINES)
    with Ledger.open(tmp_path / "state") as ledger:
        scan(claw, logs, ledger, pricer)
    logs.write(DAY_LOG, SID_RUN, ONLY_RUN)
    with Ledger.open(tmp_path / "state") as ledger:
        scan(claw, logs, ledger, pricer)
        assert totals(ledger) == plus(TWO, ONLY)
        assert log_rows(ledger) == {LOG_ONLY: 1}


def test_transcript_and_log_found_in_the_same_pass_count_the_transcript(claw, tmp_path, ledger, pricer):
    logs = Logs(tmp_path / "tmp")
    claw.append(claw.transcript(), *LINES)
    logs.write(DAY_LOG, SID_RUN, ONLY_RUN)
    assert scan(claw, logs, ledger, pricer) == 3
    assert totals(ledger) == plus(TWO, ONLY)


def test_rotated_copies_of_a_log_count_each_run_once(claw, tmp_path, ledger, pricer):
    logs = Logs(tmp_path / "tmp")
    claw.sessions()
    logs.write(DAY_LOG, ONLY_RUN)
    scan(claw, logs, ledger, pricer)
    # Rotation at maxFileBytes: the file becomes .1, a new one starts; a copy also lands as .2.
    shutil.move(logs.dir / DAY_LOG, logs.dir / "openclaw-2026-04-08.1.log")
    shutil.copy(logs.dir / "openclaw-2026-04-08.1.log", logs.dir / "openclaw-2026-04-08.2.log")
    later = tslog(run_result(LOG_ONLY, 1, 10, run="run-9"), "2026-04-08T05:00:00.000Z")
    logs.write(DAY_LOG, later)
    assert scan(claw, logs, ledger, pricer) == 1
    assert totals(ledger) == {"input": 6, "output": 60, "cacheRead": 1000, "cacheCreation": 0, "requests": 2}


def test_run_result_without_a_session_id_is_skipped_and_named(claw, tmp_path, ledger, pricer):
    logs = Logs(tmp_path / "tmp")
    claw.sessions()
    path = logs.write(DAY_LOG, tslog(run_result(None, 7, 7), "2026-04-08T01:00:00Z"), ONLY_RUN)
    stats = source(claw, logs).scan(ledger, pricer)
    assert stats.new_requests == 1 and stats.malformed == 1
    assert totals(ledger) == ONLY
    (cur,) = [c for c in ledger.cursors("openclaw") if c.path == str(path)]
    assert cur.malformed == 1


def test_log_places_rotations_and_the_logging_file_override(claw, tmp_path):
    claw.sessions()
    (claw.root / "logs").mkdir()
    for name in ("gateway.log", "openclaw.log", "openclaw.1.log", "other.txt"):
        (claw.root / "logs" / name).write_text("")
    custom = tmp_path / "custom" / "claw.log"
    custom.parent.mkdir()
    custom.write_text("")
    (custom.parent / "claw.3.log").write_text("")
    (claw.root / "openclaw.json").write_text(json.dumps({"logging": {"file": str(custom)}}))
    logs = Logs(tmp_path / "tmp")
    logs.write(DAY_LOG)
    logs.write("openclaw-2026-04-08.4.log")
    logs.write("unrelated.log")
    found, notes = log_files([claw.root], logs.tmp)
    assert sorted(p.name for p in found) == [
        "claw.3.log", "claw.log", "gateway.log", "openclaw-2026-04-08.4.log", DAY_LOG, "openclaw.1.log", "openclaw.log",
    ]  # fmt: skip
    assert notes == []
    src = source(claw, logs)
    assert src.accepts(custom) and src.accepts(logs.dir / DAY_LOG) and not src.accepts(logs.dir / "unrelated.log")
    (claw.root / "openclaw.json").write_text("{ logging: { file: 'x.log' }, // JSON5\n}")
    found, notes = log_files([claw.root], logs.tmp)
    assert custom not in found and len(notes) == 1 and "openclaw.json" in notes[0]


def test_exported_counter_holds_when_a_transcript_replaces_a_larger_log_count(claw, tmp_path, ledger, pricer):
    """The retraction lowers the ledger's total; the exported counter keeps its high-water mark
    (never goes down) until new usage passes it, while reports show the exact total."""
    logs = Logs(tmp_path / "tmp")
    claw.sessions()
    logs.write(DAY_LOG, SID_RUN)
    scan(claw, logs, ledger, pricer)

    def exported_output() -> Decimal:
        points = guarded_points(ledger, include_session_id=False, now_ns=1)
        return sum((p.value for p in points if p.metric == TOKEN_METRIC and ("type", "output") in p.attrs),
                   Decimal(0))  # fmt: skip

    assert exported_output() == 500
    claw.append(claw.transcript(), *LINES)
    scan(claw, logs, ledger, pricer)
    assert totals(ledger)["output"] == 440  # exact: the transcript's two messages
    assert exported_output() == 500  # held, not lowered
    claw.append(claw.transcript(), LINES[-1].replace("d4e5f6a7", "e5f6a7b8").replace("01:05:10", "01:06:10"))
    scan(claw, logs, ledger, pricer)
    assert totals(ledger)["output"] == 540 and exported_output() == 540


def test_run_follows_a_log_and_the_transcript_that_replaces_it(claw, tmp_path):
    """``tokenbridge run`` watches the gateway log directory: a run is counted when it is logged,
    then replaced by its session's transcript when that appears (exact totals in the report)."""
    logs = Logs(tmp_path / "tmp")
    claw.sessions()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "CLAUDE_", "OTEL_", "OPENCLAW_"))}
    env.update({"HOME": str(tmp_path / "home"), "OPENCLAW_DIR": str(claw.root), "TZ": "UTC", "TMPDIR": str(logs.tmp),
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml")})  # fmt: skip

    def report() -> dict[str, Any]:
        return dict(daily_report(env)["totals"])

    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        logs.write(DAY_LOG, SID_RUN, ONLY_RUN)
        wait_for(lambda: report()["requests"] == 2, what="logged runs ingested")
        assert report()["outputTokens"] == 500 + 50
        claw.append(claw.transcript(), *LINES)
        wait_for(lambda: report()["requests"] == 3, what="transcript replaced the logged run of its session")
    finally:
        assert daemon.stop() == 0
    assert report()["outputTokens"] == 440 + 50
