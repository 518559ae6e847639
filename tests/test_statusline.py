"""`tokenbridge statusline`: Claude Code's status-line JSON on stdin -> quota gauges in the ledger and one line out;
never an error for Claude Code."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.statusline import QUOTA_RESETS, QUOTA_USED, parse, run

ROOT = Path(__file__).resolve().parents[1]
NOW = time.time()


def status_doc(rate_limits: object = None, **extra: object) -> str:
    """Shaped like the document Claude Code pipes to a statusLine command."""
    doc: dict[str, object] = {
        "hook_event_name": "Status",
        "session_id": "4f1c2d7e-0c2a-4a51-9a55-3b1f0c8e2d11",
        "transcript_path": "/home/me/.claude/projects/-home-me-app/4f1c2d7e-0c2a-4a51-9a55-3b1f0c8e2d11.jsonl",
        "cwd": "/home/me/app",
        "model": {"id": "claude-opus-4-1-20250805", "display_name": "Opus 4.1"},
        "workspace": {"current_dir": "/home/me/app", "project_dir": "/home/me/app"},
        "version": "2.1.96",
        "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 1.2345, "total_duration_ms": 345000, "total_lines_added": 12},
        "exceeds_200k_tokens": False,
        **extra,
    }
    if rate_limits is not None:
        doc["rate_limits"] = rate_limits
    return json.dumps(doc)


LIMITS = {
    "five_hour": {"used_percentage": 42.5, "resets_at": int(NOW) + 2 * 3600},
    "seven_day": {"used_percentage": 17, "resets_at": int(NOW) + 4 * 86400},
}


def _run(text: str, state_dir: Path | None) -> tuple[int, str]:
    out = io.StringIO()
    code = run(io.StringIO(text), out, state_dir, now=NOW)
    return code, out.getvalue()


class _Price:
    """$0.50 per request for known models; unknown models have no price."""

    def cost(self, provider: str, model: str, tokens: Tokens, at: datetime | None = None) -> Decimal | None:
        return None if model == "mystery-1" else Decimal("0.5")


def _usage(key: str, when: datetime, model: str = "claude-opus-4-1") -> UsageRecord:
    return UsageRecord("claude_transcripts", "anthropic", model, when, key, Tokens(input=10, output=5))


def test_records_both_quota_windows_as_gauges_and_prints_them(tmp_path):
    code, line = _run(status_doc(LIMITS), tmp_path)
    assert code == 0
    assert line.count("\n") == 1
    assert line.startswith("Opus 4.1 | session $1.23 | today $0.00 | $0.00/h | 5h 42% ↻")
    assert " | 7d 17% ↻" in line
    with Ledger.open(tmp_path) as led:
        used = {g.labels["window"]: g for g in led.gauges(QUOTA_USED)}
        resets = {g.labels["window"]: g.value for g in led.gauges(QUOTA_RESETS)}
    assert {w: g.value for w, g in used.items()} == {"five_hour": Decimal("42.5"), "seven_day": Decimal(17)}
    assert all(g.labels["provider"] == "anthropic" and g.source == "claude_statusline" for g in used.values())
    assert used["five_hour"].ts_ms == int(NOW * 1000)
    assert resets == {"five_hour": Decimal(int(NOW) + 7200), "seven_day": Decimal(int(NOW) + 4 * 86400)}


def test_a_later_refresh_replaces_the_window_value(tmp_path):
    _run(status_doc(LIMITS), tmp_path)
    later = {"five_hour": {"used_percentage": 61, "resets_at": int(NOW) + 3600}}
    _run(status_doc(later), tmp_path)
    with Ledger.open(tmp_path) as led:
        used = {g.labels["window"]: g.value for g in led.gauges(QUOTA_USED)}
    # One value per window; the seven-day window keeps its last known value.
    assert used == {"five_hour": Decimal(61), "seven_day": Decimal(17)}


def test_without_rate_limits_prints_the_line_and_records_no_quota(tmp_path):
    code, line = _run(status_doc(), tmp_path)
    assert code == 0 and line == "Opus 4.1 | session $1.23 | today $0.00 | $0.00/h\n"
    with Ledger.open(tmp_path) as led:
        assert led.gauges(QUOTA_USED) == []


def test_null_windows_and_bad_values_are_skipped(tmp_path):
    limits = {
        "five_hour": None,
        "seven_day": {"used_percentage": "lots", "resets_at": "soon"},
        "opus_week": {"used_percentage": 99},
    }
    code, line = _run(status_doc(limits), tmp_path)
    assert code == 0 and "5h" not in line and "7d" not in line
    with Ledger.open(tmp_path) as led:
        assert led.gauges(QUOTA_USED) == []


@pytest.mark.parametrize("text", ["", "   \n", "{", "[]", "null", '"text"', "\x00\xff garbage", '{"model": 3}'])
def test_malformed_or_empty_input_still_prints_a_plain_line_and_exits_0(tmp_path, text):
    code, line = _run(text, tmp_path)
    assert code == 0
    assert line == "today $0.00 | $0.00/h\n"


# Today at 12:00 local time: "today" and "the last hour" never straddle midnight in these tests.
NOON = datetime.now().astimezone().replace(hour=12, minute=0, second=0, microsecond=0)


def test_today_and_burn_rate_come_from_the_ledger(tmp_path):
    with Ledger.open(tmp_path) as led:
        led.commit(
            [
                _usage("a", NOON - timedelta(minutes=10)),
                _usage("b", NOON - timedelta(minutes=50)),
                _usage("c", NOON - timedelta(hours=2)),  # today, not in the last hour
                _usage("d", NOON - timedelta(hours=12, minutes=1)),  # yesterday 23:59
                _usage("e", NOON + timedelta(minutes=1)),  # after "now": not counted
            ],
            _Price(),
        )
    out = io.StringIO()
    assert run(io.StringIO(status_doc()), out, tmp_path, now=NOON.timestamp()) == 0
    assert out.getvalue() == "Opus 4.1 | session $1.23 | today $1.50 | $1.00/h\n"


def test_unpriced_requests_mark_today_as_a_lower_bound(tmp_path):
    with Ledger.open(tmp_path) as led:
        led.commit([_usage("a", NOON - timedelta(minutes=5)), _usage("u", NOON, model="mystery-1")], _Price())
    out = io.StringIO()
    run(io.StringIO(status_doc()), out, tmp_path, now=NOON.timestamp())
    assert "today $0.50+? | $0.50/h" in out.getvalue()


def test_an_unpriced_usage_row_without_requests_alone_marks_today_unknown(tmp_path):
    # A provider's usage bucket (no request count) of a model without a price: "+?", never a bare $0.
    bucket = _usage("u", NOON - timedelta(minutes=5), model="mystery-1")
    bucket.requests = 0
    with Ledger.open(tmp_path) as led:
        led.commit([bucket], _Price())
    out = io.StringIO()
    run(io.StringIO(status_doc()), out, tmp_path, now=NOON.timestamp())
    assert "today $0.00+? | $0.00/h" in out.getvalue()


def test_a_busy_ledger_does_not_hold_the_line(tmp_path):
    _run(status_doc(), tmp_path)  # create the ledger
    holder = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        code, line = _run(status_doc(LIMITS), tmp_path)
        elapsed = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    print(f"statusline with a locked ledger: {elapsed * 1000:.0f} ms")
    assert code == 0
    # The ledger part is left out; the quota windows from stdin are still shown.
    assert line.startswith("Opus 4.1 | session $1.23 | 5h 42%")
    assert elapsed < 10  # bounded by the short busy timeout, not the 30 s of other commands


def test_unusable_state_dir_still_prints(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, line = _run(status_doc(LIMITS), blocker / "state")
    assert code == 0 and line.startswith("Opus 4.1 | session $1.23 | 5h 42%")


def test_reset_times_in_the_past_are_not_shown():
    inp = parse(status_doc({"five_hour": {"used_percentage": 100, "resets_at": int(NOW) - 60}}))
    from bridge.statusline import render

    assert render(inp, None, NOW) == "Opus 4.1 | session $1.23 | 5h 100%"


def test_cli_statusline_end_to_end_and_its_latency(tmp_path):
    """Through the installed entry point, as Claude Code runs it. The latency is measured and printed (it
    depends on the machine), not asserted."""
    cmd = [sys.executable, "-m", "bridge.cli", "--state-dir", str(tmp_path), "statusline"]
    env_path = {"PYTHONPATH": str(ROOT)}
    import os

    env = {**os.environ, **env_path}
    timings = []
    for _ in range(3):
        started = time.monotonic()
        proc = subprocess.run(cmd, input=status_doc(LIMITS), capture_output=True, text=True, env=env, timeout=60)
        timings.append(time.monotonic() - started)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Opus 4.1 | session $1.23 | today $0.00 | $0.00/h | 5h 42% ↻")
        assert proc.stderr == ""
    bad = subprocess.run(cmd, input="{not json", capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 0 and bad.stdout == "today $0.00 | $0.00/h\n"
    print(f"tokenbridge statusline wall time: best {min(timings) * 1000:.0f} ms of {len(timings)}")


def test_module_entry_point_without_the_cli_imports(tmp_path):
    """`python -m bridge.statusline` (state dir from the environment) gives the same line with fewer imports."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENBRIDGE_STATE_DIR": str(tmp_path)}
    timings = []
    for _ in range(3):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "bridge.statusline"],
            input=status_doc(LIMITS),
            capture_output=True,
            text=True,
            env=env,
        )
        timings.append(time.monotonic() - started)
        assert proc.returncode == 0 and proc.stderr == ""
        assert proc.stdout.startswith("Opus 4.1 | session $1.23 | today $0.00 | $0.00/h | 5h 42% ↻")
    with Ledger.open(tmp_path) as led:
        assert len(led.gauges(QUOTA_USED)) == 2
    print(f"python -m bridge.statusline wall time: best {min(timings) * 1000:.0f} ms of {len(timings)}")
