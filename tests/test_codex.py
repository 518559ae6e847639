"""Codex CLI rollouts: the traps of local-formats.md §3, read incrementally and exactly once."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import SourceError
from bridge.ledger import Ledger
from bridge.pricing import Pricer
from bridge.sources import _tail
from bridge.sources.codex import Codex, default_homes
from tests._otlp_sink import Daemon, daily_report, wait_for
from tests.conftest import ledger_sums as totals

SID = "0199a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"
CHILD = "0199a1c0-0000-7abc-8def-000000000002"
SUB = "0199a1c0-0000-7abc-8def-000000000003"


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def meta(
    sid: str = SID,
    ts: str = "2026-03-02T10:00:00.000Z",
    *,
    provider: str | None = "openai",
    forked_from: str | None = None,
    source: Any = "cli",
    cwd: str = "/home/dev/app",
) -> str:
    """A ``session_meta`` line in Codex's field order (local-formats.md §3.2 example)."""
    payload: dict[str, Any] = {
        "id": sid,
        "timestamp": ts,
        "cwd": cwd,
        "originator": "codex_cli_rs",
        "cli_version": "0.60.0",
        "instructions": None,
        "source": source,
    }
    if provider is not None:
        payload["model_provider"] = provider
    payload["git"] = {"commit_hash": "0f1e2d3c", "branch": "main"}
    if forked_from is not None:
        payload["forked_from_id"] = forked_from
    return _dump({"timestamp": ts, "type": "session_meta", "payload": payload})


def turn(model: str = "gpt-5-codex", ts: str = "2026-03-02T10:00:05.000Z") -> str:
    return _dump(
        {
            "timestamp": ts,
            "type": "turn_context",
            "payload": {
                "cwd": "/home/dev/app",
                "approval_policy": "on-request",
                "sandbox_policy": {"type": "read-only"},
                "model": model,
                "effort": "medium",
                "summary": "auto",
            },
        }
    )


def _usage(v: tuple[int, int, int, int]) -> dict[str, int]:
    inp, cached, out, reasoning = v
    return {
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inp + out,
    }


def count(
    ts: str, total: tuple[int, int, int, int] | None, last: tuple[int, int, int, int] | None = None, **extra: Any
) -> str:
    """A ``token_count`` event; ``last`` defaults to ``total`` (a session's first call)."""
    info: dict[str, Any] = {}
    if total is not None:
        info["total_token_usage"] = _usage(total)
    last = total if last is None else last
    if last is not None:
        info["last_token_usage"] = _usage(last)
    info["model_context_window"] = 272000
    payload = {"type": "token_count", "info": info, **extra}
    payload.setdefault(
        "rate_limits", {"primary": {"used_percent": 4.0, "window_minutes": 300, "resets_at": 1772463600}}
    )
    return _dump({"timestamp": ts, "type": "event_msg", "payload": payload})


def rate_limits_only(ts: str) -> str:
    return _dump({"timestamp": ts, "type": "event_msg", "payload": {"type": "token_count", "info": None,
                  "rate_limits": {"primary": {"used_percent": 5.0, "window_minutes": 300}}}})  # fmt: skip


def message(ts: str, text: str = "Run the tests.") -> str:
    return _dump({"timestamp": ts, "type": "response_item", "payload": {"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": text}]}})  # fmt: skip


# local-formats.md §3.2 example: meta, turn context, first count, a re-emit, the next turn.
SPEC_LINES = [
    meta(),
    turn(),
    count("2026-03-02T10:00:21.314Z", (12000, 8000, 900, 512)),
    count("2026-03-02T10:00:23.002Z", (12000, 8000, 900, 512)),
    count("2026-03-02T10:01:02.777Z", (26500, 20000, 1400, 700), (14500, 12000, 500, 188)),
]
# Non-cached input 4000 + 2500, cache reads 8000 + 12000, output 900 + 500 (reasoning inside).
SPEC_TOTALS = {"input": 6500, "output": 1400, "cacheRead": 20000, "cacheCreation": 0, "requests": 2}


class CodexHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    def rollout(self, sid: str = SID, day: str = "2026/03/02", stamp: str = "2026-03-02T10-00-00") -> Path:
        path = self.root / "sessions" / day / f"rollout-{stamp}-{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def archived(self, sid: str = SID, stamp: str = "2026-03-02T10-00-00") -> Path:
        path = self.root / "archived_sessions" / f"rollout-{stamp}-{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def append(path: Path, *lines: str, newline: bool = True) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + ("\n" if newline else ""))


@pytest.fixture
def codex_home(tmp_path: Path) -> CodexHome:
    return CodexHome(tmp_path / "codex")


def scan(home: CodexHome, ledger: Ledger, pricer: Any, *more: Path) -> int:
    return Codex(homes=[home.root, *more]).scan(ledger, pricer).new_requests


def test_spec_example_counts_each_turn_once_and_not_the_re_emit(codex_home, ledger, pricer):
    codex_home.append(codex_home.rollout(), *SPEC_LINES)
    assert scan(codex_home, ledger, pricer) == 2
    assert totals(ledger) == SPEC_TOTALS
    (series,) = ledger.totals()
    assert (series.source, series.provider, series.model, series.session_id) == ("codex", "openai", "gpt-5-codex", SID)


def test_spec_example_cost_prices_cached_input_at_the_cache_rate(codex_home, ledger):
    codex_home.append(codex_home.rollout(), *SPEC_LINES)
    scan(codex_home, ledger, Pricer(None))
    # gpt-5-codex: $1.25 input, $0.125 cached input, $10 output per MTok (reasoning is output):
    # 6500 * 1.25 + 20000 * 0.125 + 1400 * 10 = 24625 µ$.
    assert ledger.totals()[0].cost == Decimal("0.024625")


def test_rescan_and_new_source_instance_add_nothing(codex_home, ledger, pricer):
    codex_home.append(codex_home.rollout(), *SPEC_LINES)
    scan(codex_home, ledger, pricer)
    assert scan(codex_home, ledger, pricer) == 0
    assert Codex(homes=[codex_home.root]).scan(ledger, pricer).records == 0
    assert totals(ledger) == SPEC_TOTALS


def _without_last(line: str) -> str:
    obj = json.loads(line)
    del obj["payload"]["info"]["last_token_usage"]
    return _dump(obj)


def test_restart_between_appends_keeps_the_running_total(codex_home, tmp_path, pricer):
    f = codex_home.rollout()
    codex_home.append(f, *SPEC_LINES)
    with Ledger.open(tmp_path / "state") as led:
        scan(codex_home, led, pricer)
    # A new process reads on from the cursor: a turn written without last_token_usage counts the
    # advance over the running total stored with the cursor, not the whole total.
    codex_home.append(f, _without_last(count("2026-03-02T10:02:00.000Z", (30000, 22000, 1600, 700))))
    with Ledger.open(tmp_path / "state") as led:
        scan(codex_home, led, pricer)
        assert totals(led) == {"input": 6500 + 1500, "output": 1600, "cacheRead": 22000, "cacheCreation": 0,
                               "requests": 3}  # fmt: skip


def test_crash_between_chunks_resumes_with_the_state_of_the_last_commit(codex_home, ledger, pricer, monkeypatch):
    f = codex_home.rollout()
    lines = [meta(), turn()]
    total = [0, 0, 0, 0]
    for i in range(40):
        step = (1000 + i, 600, 50 + i, 10)
        total = [a + b for a, b in zip(total, step, strict=True)]
        # Without last_token_usage: each turn is the advance over the stored running total.
        lines.append(_without_last(count(f"2026-03-02T10:{i // 10 + 1:02d}:{i % 10:02d}.000Z", tuple(total))))
        lines.append(count(f"2026-03-02T10:{i // 10 + 1:02d}:{i % 10:02d}.500Z", tuple(total), step))  # re-emit
    codex_home.append(f, *lines)
    expected = {"input": sum(400 + i for i in range(40)), "output": sum(50 + i for i in range(40)),
                "cacheRead": 600 * 40, "cacheCreation": 0, "requests": 40}  # fmt: skip
    # Small chunks and batches: many commits, each with its cursor and parser state.
    monkeypatch.setattr(_tail, "CHUNK_BYTES", 2048)
    monkeypatch.setattr(_tail.read_chunks, "__defaults__", (2048,))
    monkeypatch.setattr(_tail.Batch, "MAX_RECORDS", 3)
    real_commit = Ledger.commit
    calls = {"n": 0}

    def crashing_commit(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the process dies mid-file, after three committed batches
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "commit", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        scan(codex_home, ledger, pricer)
    partial = totals(ledger)["requests"]
    assert 0 < partial < 40
    monkeypatch.setattr(Ledger, "commit", real_commit)
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == expected


def test_kill_9_mid_file_then_restart_counts_exactly_once(codex_home, tmp_path):
    f = codex_home.rollout()
    lines = [meta(), turn()]
    total = [0, 0, 0, 0]
    n = 3000
    for i in range(n):
        step = (100, 40, 7, 1)
        total = [a + b for a, b in zip(total, step, strict=True)]
        ts = f"2026-03-02T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        turn_line = _without_last(count(ts, tuple(total)))  # each turn is the advance of the total
        lines += [turn_line, rate_limits_only(ts), turn_line]
    codex_home.append(f, *lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "CLAUDE_", "OTEL_", "CODEX_"))}
    env.update({"HOME": str(tmp_path / "home"), "CODEX_HOME": str(codex_home.root), "TZ": "UTC",
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml")})  # fmt: skip
    code = (
        "import sys; from bridge.sources import _tail; _tail.Batch.MAX_RECORDS = 5;"
        "_tail.read_chunks.__defaults__ = (4096,);"
        "from bridge.cli import main; sys.exit(main(['sync', '--no-export', '--source', 'codex']))"
    )
    state = tmp_path / "state" / "ledger.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once some, not all, turns are committed
        try:
            with sqlite3.connect(state, timeout=1) as db:
                done = db.execute("SELECT COALESCE(SUM(requests), 0) FROM usage").fetchone()[0]
        except sqlite3.Error:
            done = 0
        if done >= 50 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "sync", "--no-export", "--source", "codex"], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    with Ledger.open(tmp_path / "state") as led:
        assert totals(led) == {"input": 60 * n, "output": 7 * n, "cacheRead": 40 * n, "cacheCreation": 0, "requests": n}


def test_archived_rollout_is_not_counted_again(codex_home, ledger, pricer):
    live = codex_home.rollout()
    codex_home.append(live, *SPEC_LINES)
    scan(codex_home, ledger, pricer)
    archived = codex_home.archived()
    shutil.move(live, archived)  # `codex` archives by moving to the flat archived_sessions/
    assert scan(codex_home, ledger, pricer) == 0
    assert totals(ledger) == SPEC_TOTALS


def test_copies_in_both_directories_and_a_second_home_count_once(codex_home, ledger, pricer, tmp_path):
    codex_home.append(codex_home.rollout(), *SPEC_LINES)
    codex_home.append(codex_home.archived(), *SPEC_LINES[:3])  # an older, shorter copy
    other = CodexHome(tmp_path / "other")
    codex_home.append(other.rollout(stamp="2026-03-02T10-00-00"), *SPEC_LINES)
    scan(codex_home, ledger, pricer, other.root)
    assert totals(ledger) == SPEC_TOTALS


def test_archive_grows_after_move_counts_only_new_turns(codex_home, ledger, pricer):
    live = codex_home.rollout()
    codex_home.append(live, *SPEC_LINES[:3])
    scan(codex_home, ledger, pricer)
    archived = codex_home.archived()
    shutil.move(live, archived)
    codex_home.append(archived, *SPEC_LINES[3:])
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == SPEC_TOTALS


PARENT_LINES = [
    meta(),
    turn(),
    count("2026-03-02T10:00:21.000Z", (12000, 8000, 900, 512)),
    count("2026-03-02T10:01:02.000Z", (26500, 20000, 1400, 700), (14500, 12000, 500, 188)),
]


def _child(sid: str, parent_meta: str, **kw: Any) -> list[str]:
    """A child rollout: its own meta, the parent's replayed history (written in one burst at
    11:00:00), then one turn of its own."""
    return [
        meta(sid, "2026-03-02T11:00:00.000Z", **kw),
        parent_meta,
        turn(ts="2026-03-02T11:00:00.010Z"),
        message("2026-03-02T11:00:00.011Z"),
        count("2026-03-02T11:00:00.012Z", (12000, 8000, 900, 512)),
        count("2026-03-02T11:00:00.013Z", (26500, 20000, 1400, 700), (14500, 12000, 500, 188)),
        turn("gpt-5", ts="2026-03-02T11:00:04.000Z"),
        message("2026-03-02T11:00:04.001Z", "Now the child's own question."),
        count("2026-03-02T11:00:09.000Z", (56500, 45000, 1700, 760), (30000, 25000, 300, 60)),
    ]


CHILD_OWN = {"input": 5000, "output": 300, "cacheRead": 25000, "cacheCreation": 0, "requests": 1}


def _plus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] + b[k] for k in a}


@pytest.mark.parametrize("parent_first", [True, False])
def test_fork_does_not_recount_the_replayed_parent_prefix(codex_home, ledger, pricer, parent_first):
    parent = codex_home.rollout()
    child = codex_home.rollout(CHILD, stamp="2026-03-02T11-00-00")
    codex_home.append(parent, *PARENT_LINES)
    codex_home.append(child, *_child(CHILD, PARENT_LINES[0], forked_from=SID))
    if parent_first:
        Codex(homes=[codex_home.root]).scan(ledger, pricer)
    else:
        src = Codex(homes=[codex_home.root])
        src.scan(ledger, pricer, paths=[child])
        src.scan(ledger, pricer, paths=[parent])
    assert totals(ledger) == _plus(SPEC_TOTALS, CHILD_OWN)
    by_session = {t.session_id: (t.model, t.tokens["output"]) for t in ledger.totals()}
    assert by_session == {SID: ("gpt-5-codex", 1400), CHILD: ("gpt-5", 300)}


def test_subagent_replay_is_skipped_even_without_the_parent_file(codex_home, ledger, pricer):
    spawn = {"subagent": {"thread_spawn": {"parent_thread_id": SID, "depth": 1}}}
    codex_home.append(codex_home.rollout(SUB, stamp="2026-03-02T11-00-00"),
                      *_child(SUB, PARENT_LINES[0], source=spawn))  # fmt: skip
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == CHILD_OWN


def test_replay_burst_across_a_second_boundary_is_still_skipped(codex_home, ledger, pricer):
    lines = _child(CHILD, PARENT_LINES[0], forked_from=SID)
    lines = [ln.replace("2026-03-02T11:00:00.0", "2026-03-02T11:00:00.9") for ln in lines]
    lines = [ln.replace("11:00:00.913Z", "11:00:01.004Z") for ln in lines]  # the burst straddles 11:00:01
    codex_home.append(codex_home.rollout(CHILD), *lines)
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == CHILD_OWN


def test_child_read_across_restarts_keeps_skipping_the_replay(codex_home, tmp_path, pricer):
    child = codex_home.rollout(CHILD)
    lines = _child(CHILD, PARENT_LINES[0], forked_from=SID)
    codex_home.append(child, *lines[:5])  # mid-replay
    with Ledger.open(tmp_path / "s") as led:
        scan(codex_home, led, pricer)
        assert totals(led)["requests"] == 0
    codex_home.append(child, *lines[5:])
    with Ledger.open(tmp_path / "s") as led:
        scan(codex_home, led, pricer)
        assert totals(led) == CHILD_OWN


def test_a_dropping_total_is_a_reset_not_negative_usage(codex_home, ledger, pricer):
    codex_home.append(
        codex_home.rollout(),
        *SPEC_LINES,
        # After compaction the running total restarts lower; the event's own call counts.
        count("2026-03-02T10:05:00.000Z", (3000, 1000, 200, 50)),
        count("2026-03-02T10:05:01.000Z", (3000, 1000, 200, 50)),  # re-emit after the reset
        count("2026-03-02T10:06:00.000Z", (7000, 4000, 260, 50), (4000, 3000, 60, 0)),
    )
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == _plus(SPEC_TOTALS, {"input": 2000 + 1000, "output": 260, "cacheRead": 4000,
                                                 "cacheCreation": 0, "requests": 2})  # fmt: skip


def test_reset_to_an_earlier_total_is_a_new_turn_not_a_copy(codex_home, ledger, pricer):
    first = (12000, 8000, 900, 512)
    codex_home.append(
        codex_home.rollout(),
        meta(),
        turn(),
        count("2026-03-02T10:00:21.000Z", first),
        count("2026-03-02T10:01:00.000Z", (20000, 8000, 1000, 512), (8000, 0, 100, 0)),
        count("2026-03-02T10:02:00.000Z", first),  # reset; by chance the same total as turn 1
    )
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == {"input": 4000 + 8000 + 4000, "output": 1900, "cacheRead": 16000, "cacheCreation": 0,
                              "requests": 3}  # fmt: skip


def test_synthetic_context_window_fill_and_rate_limit_events_count_nothing(codex_home, ledger, pricer):
    fill = _dump({"timestamp": "2026-03-02T10:00:30.000Z", "type": "event_msg", "payload": {"type": "token_count",
                  "info": {"total_token_usage": {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
                  "reasoning_output_tokens": 0, "total_tokens": 272000}, "last_token_usage": {"input_tokens": 0,
                  "cached_input_tokens": 0, "output_tokens": 0, "reasoning_output_tokens": 0, "total_tokens": 272000},
                  "model_context_window": 272000}, "rate_limits": None}})  # fmt: skip
    lines = [*SPEC_LINES[:3], fill, rate_limits_only("2026-03-02T10:00:40.000Z"), *SPEC_LINES[3:]]
    codex_home.append(codex_home.rollout(), *lines)
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == SPEC_TOTALS


def test_cached_input_above_input_is_clamped(codex_home, ledger, pricer):
    codex_home.append(codex_home.rollout(), meta(), turn(), count("2026-03-02T10:00:21.000Z", (100, 150, 10, 0)))
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == {"input": 0, "output": 10, "cacheRead": 100, "cacheCreation": 0, "requests": 1}


def test_partial_last_line_waits_and_malformed_lines_are_skipped_not_fatal(codex_home, ledger, pricer):
    f = codex_home.rollout()
    codex_home.append(f, *SPEC_LINES[:3])
    codex_home.append(f, '{"timestamp":"2026-03-02T10:00:22.000Z","type":"event_msg","payload":{"type":"token_co')
    codex_home.append(
        f,
        count("2026-03-02T10:00:22.500Z", (12000, 8000, 900, 512)).replace('"output_tokens":900', '"output_tokens":-4'),
    )
    last = SPEC_LINES[4]
    codex_home.append(f, last[:80], newline=False)  # still being written
    scan(codex_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert ledger.source_summary("codex")["skipped"] == 2
    codex_home.append(f, last[80:])
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == SPEC_TOTALS
    assert ledger.source_summary("codex")["skipped"] == 2


def test_missing_model_and_unpriced_model_are_unknown_cost_not_zero(codex_home, ledger):
    codex_home.append(codex_home.rollout(), meta(), count("2026-03-02T10:00:21.000Z", (1000, 0, 10, 0)))
    other = codex_home.rollout(CHILD, stamp="2026-03-02T10-30-00")
    codex_home.append(other, meta(CHILD), turn("gpt-9-experimental"), count("2026-03-02T10:30:21.000Z", (500, 0, 5, 0)))
    scan(codex_home, ledger, Pricer(None))
    by_model = {t.model: t for t in ledger.totals()}
    assert set(by_model) == {"unknown", "gpt-9-experimental"}
    assert all(t.unpriced == 1 and t.cost == 0 for t in by_model.values())
    assert ledger.source_summary("codex")["unknown_models"] == ["gpt-9-experimental", "unknown"]


def test_rollout_model_provider_is_kept(codex_home, ledger, pricer):
    codex_home.append(codex_home.rollout(), meta(provider="ollama"), turn("qwen3-coder"),
                      count("2026-03-02T10:00:21.000Z", (1000, 0, 10, 0)))  # fmt: skip
    codex_home.append(codex_home.rollout(CHILD), meta(CHILD, provider=None), turn(),
                      count("2026-03-02T10:00:21.000Z", (1000, 0, 10, 0)))  # fmt: skip
    scan(codex_home, ledger, pricer)
    assert {(t.provider, t.model) for t in ledger.totals()} == {("ollama", "qwen3-coder"), ("openai", "gpt-5-codex")}


def test_model_changes_between_turns_follow_turn_context(codex_home, ledger, pricer):
    codex_home.append(codex_home.rollout(), *SPEC_LINES[:3], turn("gpt-5", "2026-03-02T10:00:50.000Z"),
                      *SPEC_LINES[3:])  # fmt: skip
    scan(codex_home, ledger, pricer)
    assert {t.model: t.tokens["output"] for t in ledger.totals()} == {"gpt-5-codex": 900, "gpt-5": 500}


def test_codex_home_is_a_comma_list_and_a_missing_explicit_home_is_an_error(tmp_path):
    homes, explicit = default_homes({"CODEX_HOME": f"{tmp_path}/a, {tmp_path}/b", "HOME": str(tmp_path)})
    assert homes == [tmp_path / "a", tmp_path / "b"] and explicit
    assert default_homes({"HOME": str(tmp_path)}) == ([tmp_path / ".codex"], False)
    src = Codex(env={"CODEX_HOME": str(tmp_path / "nope")})
    with pytest.raises(SourceError, match="CODEX_HOME names no existing directory"):
        src.files()
    st = src.status()
    assert not st.detected and "nope" in st.notes[0]
    assert Codex(env={"HOME": str(tmp_path)}).status().detected is False


def test_file_events_only_accept_rollouts_under_the_homes(codex_home, tmp_path):
    src = Codex(homes=[codex_home.root])
    assert src.accepts(codex_home.rollout())
    assert src.accepts(codex_home.archived())
    assert not src.accepts(codex_home.root / "sessions" / "2026" / "notes.jsonl")
    assert not src.accepts(tmp_path / "elsewhere" / f"rollout-2026-03-02T10-00-00-{SID}.jsonl")
    codex_home.rollout()
    codex_home.archived()
    assert {(w.path.name, w.recursive) for w in src.watches()} == {("sessions", True), ("archived_sessions", False)}


def test_cli_sync_codex_only_then_report_daily_json_has_exact_totals(codex_home, tmp_path):
    """A user with only Codex (no Claude Code at all): sync, report and sources work."""
    codex_home.append(codex_home.rollout(), *SPEC_LINES)
    codex_home.append(codex_home.rollout(CHILD, stamp="2026-03-02T11-00-00"), *_child(CHILD, PARENT_LINES[0],
                      forked_from=SID))  # fmt: skip
    codex_home.append(codex_home.archived(SUB, stamp="2026-03-03T09-00-00"), meta(SUB, "2026-03-03T09:00:00.000Z"),
                      turn("gpt-9-experimental", "2026-03-03T09:00:01.000Z"),
                      count("2026-03-03T09:00:30.000Z", (700, 200, 30, 0)))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "CLAUDE_", "OTEL_", "CODEX_"))}
    env.update({"HOME": str(tmp_path / "home"), "CODEX_HOME": str(codex_home.root), "TZ": "UTC",
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml")})  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, capture_output=True, text=True)

    out = cli("sync", "--no-export", "--source", "codex")
    assert out.returncode == 0, out.stderr
    assert cli("sync", "--no-export").returncode == 0  # every source: Claude Code absent is not an error
    report = json.loads(cli("report", "daily", "--json", "--timezone", "UTC").stdout)
    days = {
        d["date"]: {
            m["modelName"]: (m["inputTokens"], m["outputTokens"], m["cacheReadTokens"], m["totalCost"], m["requests"])
            for m in d["modelBreakdowns"]
        }
        for d in report["daily"]
    }
    # gpt-5 (child's own turn): 5000 * 1.25 + 25000 * 0.125 + 300 * 10 = 12375 µ$.
    assert days == {
        "2026-03-02": {"gpt-5-codex": (6500, 1400, 20000, "0.024625", 2), "gpt-5": (5000, 300, 25000, "0.012375", 1)},
        "2026-03-03": {"gpt-9-experimental": (500, 30, 200, None, 1)},
    }
    assert report["totals"]["requests"] == 4 and report["totals"]["unpricedRequests"] == 1
    only = json.loads(cli("report", "daily", "--json", "--source", "codex").stdout)
    assert only["totals"] == report["totals"]
    sources = {s["name"]: s for s in json.loads(cli("sources", "--json").stdout)["sources"]}
    assert sources["codex"]["detected"] and sources["codex"]["files"] == 3
    assert sources["codex"]["unknownModels"] == ["gpt-9-experimental"]


def test_run_with_only_codex_follows_appends_archiving_and_new_forks_exactly_once(codex_home, tmp_path):
    live = codex_home.rollout()
    codex_home.append(live, *SPEC_LINES[:3])
    (codex_home.root / "archived_sessions").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "CLAUDE_", "OTEL_", "CODEX_"))}
    env.update({"HOME": str(tmp_path / "home"), "CODEX_HOME": str(codex_home.root), "TZ": "UTC",
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "none.toml")})  # fmt: skip

    def totals_now() -> dict[str, int]:
        t = daily_report(env)["totals"]
        return {"input": t["inputTokens"], "output": t["outputTokens"], "cacheRead": t["cacheReadTokens"],
                "cacheCreation": t["cacheCreationTokens"], "requests": t["requests"]}  # fmt: skip

    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        wait_for(lambda: totals_now()["requests"] == 1, what="first turn ingested")
        codex_home.append(live, *SPEC_LINES[3:])  # a re-emit, then the next turn
        wait_for(lambda: totals_now() == SPEC_TOTALS, what="second turn ingested")
        shutil.move(live, codex_home.archived())
        # A fork in a day directory that did not exist when the daemon started.
        child = codex_home.rollout(CHILD, day="2026/03/03", stamp="2026-03-03T11-00-00")
        codex_home.append(child, *_child(CHILD, PARENT_LINES[0], forked_from=SID))
        wait_for(lambda: totals_now() == _plus(SPEC_TOTALS, CHILD_OWN), what="fork's own turn ingested")
    finally:
        code = daemon.stop()
    assert code == 0
    assert totals_now() == _plus(SPEC_TOTALS, CHILD_OWN)


def test_rollout_rewritten_in_place_is_reread_from_a_fresh_state_without_double_counting(codex_home, ledger, pricer):
    f = codex_home.rollout()
    codex_home.append(f, *SPEC_LINES[:3])
    scan(codex_home, ledger, pricer)
    # Rewritten (new inode, same history plus the next turn): read from byte 0 with a fresh
    # running total, the old turn yields the same key and the new one adds only itself.
    tmp = f.with_suffix(".tmp")
    tmp.write_text("\n".join(SPEC_LINES) + "\n")
    os.replace(tmp, f)
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == SPEC_TOTALS


def test_crlf_line_endings_parse(codex_home, ledger, pricer):
    codex_home.rollout().write_bytes(("\r\n".join(SPEC_LINES) + "\r\n").encode())
    scan(codex_home, ledger, pricer)
    assert totals(ledger) == SPEC_TOTALS
    assert ledger.source_summary("codex")["skipped"] == 0


def _exec_run(thread: str, *turns: tuple[int, int, int]) -> list[str]:
    """``codex exec --json`` stdout (local-formats.md §3.3 item 8): one thread, its turns."""
    lines = [_dump({"type": "thread.started", "thread_id": thread})]
    for inp, cached, out in turns:
        lines += [
            _dump({"type": "turn.started"}),
            _dump({"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "Done."}}),
            _dump({"type": "turn.completed", "usage": {"input_tokens": inp, "cached_input_tokens": cached,
                                                        "output_tokens": out}}),
        ]  # fmt: skip
    return lines


def test_saved_codex_exec_output_counts_each_turn_once_dated_by_the_file(tmp_path, ledger):
    runs = tmp_path / "exec-logs"
    runs.mkdir()
    log = runs / "nightly.jsonl"
    CodexHome.append(log, *_exec_run(SID, (5000, 3000, 200)), *_exec_run(CHILD, (800, 0, 40), (900, 500, 60)))
    (runs / "history.jsonl").write_text('{"session_id":"x","ts":1772445600,"text":"hi"}\n')
    os.utime(log, (1772445600, 1772445600))  # 2026-03-02T10:00:00Z
    shutil.copy2(log, runs / "nightly-copy.jsonl")
    src = Codex(env={"CODEX_HOME": str(runs)})
    assert sorted(src.files()) == [runs / "nightly-copy.jsonl", log]
    src.scan(ledger, Pricer(None))
    assert totals(ledger) == {"input": 2000 + 800 + 400, "output": 300, "cacheRead": 3500, "cacheCreation": 0,
                              "requests": 3}  # fmt: skip
    assert {t.session_id for t in ledger.totals()} == {SID, CHILD}
    assert all(t.model == "unknown" and t.unpriced for t in ledger.totals())
    assert ledger.source_summary("codex")["last_event"] == "2026-03-02T10:00:00+00:00"
    # A resumed thread appends a run with the same thread id: its turn is new.
    CodexHome.append(log, *_exec_run(CHILD, (950, 500, 70)))
    src.scan(ledger, Pricer(None))
    assert totals(ledger)["requests"] == 4 and totals(ledger)["output"] == 370
