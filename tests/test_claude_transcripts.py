"""Claude Code transcripts: every dedup trap of local-formats.md §1.4–1.9, read incrementally."""

from __future__ import annotations

import json
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import SourceError
from bridge.ledger import Ledger
from bridge.sources.claude_transcripts import ClaudeTranscripts, default_roots
from tests.conftest import (
    ClaudeHome,
    FlatPricer,
    agent_progress_line,
    assistant_line,
    synthetic_line,
    user_tool_result,
)
from tests.conftest import ledger_sums as totals


def scan(home: ClaudeHome, ledger: Ledger, pricer: FlatPricer, *extra_roots: Path) -> int:
    src = ClaudeTranscripts(roots=[home.root, *extra_roots])
    return src.scan(ledger, pricer).new_requests


def test_streamed_lines_of_one_response_count_once_with_final_output(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(
        f,
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.120Z"),
        assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts="2026-03-02T10:15:01.480Z"),
        assistant_line("msg_A", "req_A", output=187, ts="2026-03-02T10:15:04.010Z"),
    )
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200, "requests": 1}


def test_stream_split_across_passes_counts_only_the_increase(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A", output=3, stop_reason=None))
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["output"] == 3
    claude_home.append(f, assistant_line("msg_A", "req_A", output=187))
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200, "requests": 1}
    # A stale shorter line arriving late never lowers the count.
    claude_home.append(f, assistant_line("msg_A", "req_A", output=50, stop_reason=None))
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["output"] == 187


def test_partial_last_line_is_read_only_once_complete(claude_home, ledger, pricer):
    f = claude_home.session_file()
    full = assistant_line("msg_A", "req_A", output=187)
    claude_home.append(f, assistant_line("msg_B", "req_B", output=10))
    with f.open("a") as fh:
        fh.write(full[:100])  # the response is still streaming: no newline yet
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    summary = ledger.source_summary("claude_transcripts")
    assert summary["skipped"] == 0, "a partial line is not malformed, just unfinished"
    with f.open("a") as fh:
        fh.write(full[100:] + "\n")
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 2
    assert totals(ledger)["output"] == 197


def test_resumed_session_copy_counts_once(claude_home, ledger, pricer):
    original = claude_home.session_file("11111111-1111-4111-8111-111111111111")
    resumed = claude_home.session_file("22222222-2222-4222-8222-222222222222")
    line = assistant_line("msg_A", "req_A", session="11111111-1111-4111-8111-111111111111")
    claude_home.append(original, line)
    claude_home.append(
        resumed,
        assistant_line("msg_A", "req_A", session="22222222-2222-4222-8222-222222222222"),
        assistant_line("msg_B", "req_B", output=5, session="22222222-2222-4222-8222-222222222222"),
    )
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 2
    assert totals(ledger)["output"] == 192


def test_dedup_is_global_across_roots(claude_home, ledger, pricer, tmp_path):
    second = ClaudeHome(tmp_path / "config-claude")
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    second.append(second.session_file(), assistant_line("msg_A", "req_A"))
    scan(claude_home, ledger, pricer, second.root)
    assert totals(ledger)["requests"] == 1


@pytest.mark.parametrize("parent_first", [True, False])
def test_sidechain_replay_of_parent_message_counts_once(claude_home, ledger, pricer, parent_first):
    parent = claude_home.session_file()
    replay = claude_home.session_file(sub="a1b2c3")
    parent_line = assistant_line("msg_P", "req_parent")
    replay_line = assistant_line("msg_P", "req_replay", sidechain=True)
    own_line = assistant_line("msg_S", "req_S", sidechain=True, output=9)  # real subagent usage: billed
    if parent_first:
        claude_home.append(parent, parent_line)
        scan(claude_home, ledger, pricer)
        claude_home.append(replay, replay_line, own_line)
    else:
        claude_home.append(replay, replay_line, own_line)
        scan(claude_home, ledger, pricer)
        claude_home.append(parent, parent_line)
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 8, "output": 196, "cacheRead": 96000, "cacheCreation": 2400, "requests": 2}
    rows = {r[0] for r in ledger._db.execute("SELECT dedup_key FROM usage")}
    assert rows == {"cc-req:req_parent", "cc-req:req_S"}, "the non-sidechain line wins"


def test_sidechain_replay_in_the_same_batch_counts_once(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_P", "req_replay", sidechain=True), assistant_line("msg_P", "req_p"))
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert totals(ledger)["output"] == 187


def test_synthetic_and_zero_usage_lines_are_skipped(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, synthetic_line(), assistant_line("msg_A", "req_A"))
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert ledger.source_summary("claude_transcripts")["unknown_models"] == []


def test_malformed_lines_are_counted_reported_once_and_never_stop_the_scan(claude_home, ledger, pricer, caplog):
    f = claude_home.session_file()
    good = assistant_line("msg_A", "req_A")
    claude_home.append(
        f,
        good[:-40],  # truncated mid-file by a crash
        '{"type":"assistant","message":{"usage":{"input_tokens":"many","output_tokens":1}}}',
        assistant_line("msg_B", "req_B", output=1),
        good[:-10],
    )
    with caplog.at_level(logging.WARNING, logger="tokenbridge.sources"):
        scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert ledger.source_summary("claude_transcripts")["skipped"] == 3
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1 and str(f) in warnings[0].getMessage()
    claude_home.append(f, assistant_line("msg_C", "req_C", output=2))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenbridge.sources"):
        scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 2
    assert not [r for r in caplog.records if "malformed" in r.getMessage()], "reported once per file"


def test_tool_results_mentioning_usage_are_not_counted(claude_home, ledger, pricer):
    f = claude_home.session_file()
    fake = '{"type":"assistant","message":{"id":"msg_X","model":"m","usage":{"input_tokens":999}}}'
    claude_home.append(f, user_tool_result("cat log.json\n" + fake + ' "usage": {"output_tokens": 5}'))
    claude_home.append(f, assistant_line("msg_A", "req_A"))
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200, "requests": 1}
    assert ledger.source_summary("claude_transcripts")["skipped"] == 0


def test_truncated_file_is_reread_without_double_counting(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A"), assistant_line("msg_B", "req_B", output=1))
    scan(claude_home, ledger, pricer)
    # Claude Code rewrote the file on resume: one assistant message gone, one new line.
    f.write_text(assistant_line("msg_A", "req_A") + "\n" + assistant_line("msg_C", "req_C", output=2) + "\n")
    scan(claude_home, ledger, pricer)
    t = totals(ledger)
    assert t["requests"] == 3, "the vanished line stays counted; nothing is lost"
    assert t["output"] == 190


def test_replaced_file_with_new_inode_is_reread_without_double_counting(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A"))
    scan(claude_home, ledger, pricer)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(
        user_tool_result("x" * 500) + "\n" + assistant_line("msg_A", "req_A") + "\n"
        + assistant_line("msg_D", "req_D", output=7) + "\n"
    )  # fmt: skip
    os.replace(tmp, f)
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 2
    assert totals(ledger)["output"] == 194


def test_cache_writes_split_by_ttl_and_1h_part_kept(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A", cache_5m=1000, cache_1h=500))
    claude_home.append(f, assistant_line("msg_B", "req_B", cache_5m=300, split=False))
    scan(claude_home, ledger, pricer)
    rows = dict(ledger._db.execute("SELECT dedup_key, cache_creation_1h FROM usage").fetchall())
    assert rows == {"cc-req:req_A": 500, "cc-req:req_B": 0}
    assert totals(ledger)["cacheCreation"] == 1800


def test_old_lines_keep_their_reported_cost(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_old", "req_old", model="claude-opus-4-20250514", cost_usd=0.01785))
    scan(claude_home, ledger, pricer)
    [t] = ledger.totals()
    assert t.cost == Decimal("0.01785")
    origin = ledger._db.execute("SELECT cost_origin FROM usage").fetchone()[0]
    assert origin == "reported"


def test_lines_without_message_id_are_keyed_by_content(claude_home, ledger, pricer):
    f = claude_home.session_file()
    line = assistant_line("", None, output=11)
    claude_home.append(f, line)
    scan(claude_home, ledger, pricer)
    f.write_text(line + "\n")  # rewrite: re-read from the start
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1


def test_subagent_files_are_found_recursively_with_parent_session(claude_home, ledger, pricer):
    sub = claude_home.session_file(sub="x9")
    claude_home.append(sub, assistant_line("msg_S", "req_S", sidechain=True, session=""))
    scan(claude_home, ledger, pricer)
    session = ledger._db.execute("SELECT session_id FROM usage").fetchone()[0]
    assert session == "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f"


def test_unknown_model_is_counted_with_unknown_cost(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_U", "req_U", model="unknown-model-9"))
    scan(claude_home, ledger, pricer)
    [t] = ledger.totals()
    assert t.unpriced == 1 and t.cost == 0 and t.tokens["output"] == 187
    assert ledger.source_summary("claude_transcripts")["unknown_models"] == ["unknown-model-9"]


def test_rescan_without_changes_reads_nothing(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    src = ClaudeTranscripts(roots=[claude_home.root])
    assert src.scan(ledger, pricer).bytes_read > 0
    again = src.scan(ledger, pricer)
    assert again.bytes_read == 0 and again.files_read == 0


def test_roots_from_claude_config_dir_comma_list(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    roots, explicit = default_roots({"CLAUDE_CONFIG_DIR": f"{a}, {b}/projects"})
    assert explicit and roots == [a, b]


def test_default_roots_are_xdg_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    roots, explicit = default_roots({"HOME": str(tmp_path)})
    assert not explicit
    assert roots == [tmp_path / ".config" / "claude", tmp_path / ".claude"]


def test_claude_config_dir_without_projects_is_a_clear_error(tmp_path):
    src = ClaudeTranscripts(env={"CLAUDE_CONFIG_DIR": str(tmp_path / "nope")})
    with pytest.raises(SourceError, match="CLAUDE_CONFIG_DIR"):
        src.files()
    assert "CLAUDE_CONFIG_DIR" in src.status().notes[0]


# --- fast mode, server tools, thinking tokens (priced with the real price table) ---------------------


def _costs(ledger: Ledger) -> dict[str, Decimal | None]:
    rows = ledger._db.execute("SELECT dedup_key, cost_pusd FROM usage").fetchall()
    return {k: None if c is None else Decimal(c) / Decimal(10**12) for k, c in rows}


def test_fast_mode_and_web_search_lines_are_priced_to_the_cent(claude_home, ledger):
    from bridge.pricing import Pricer

    f = claude_home.session_file()
    opus = {"input": 1000, "output": 2000, "cache_read": 10_000, "cache_5m": 0}  # $0.06 at standard speed
    claude_home.append(
        f,
        assistant_line("msg_F6", "req_F6", model="claude-opus-4-6", speed="fast", **opus),  # x6 = $0.36
        assistant_line("msg_F5", "req_F5", model="claude-opus-5", speed="fast", **opus),  # x2 = $0.12
        assistant_line("msg_S6", "req_S6", model="claude-opus-4-6", speed="standard", **opus),  # $0.06
        # Sonnet 4.6: 100 in $0.0003 + 500 out $0.0075 + 3 searches $0.03 = $0.0378.
        assistant_line(
            "msg_W", "req_W", model="claude-sonnet-4-6", input=100, output=500, cache_read=0, cache_5m=0,
            server_tool_use={"web_search_requests": 3, "web_fetch_requests": 0},
        ),
        # A web fetch has no known price: unknown, never $0 and never only the tokens.
        assistant_line(
            "msg_X", "req_X", model="claude-sonnet-4-6", input=100, output=500, cache_read=0, cache_5m=0,
            server_tool_use={"web_search_requests": 0, "web_fetch_requests": 1},
        ),
    )  # fmt: skip
    ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, Pricer())
    assert _costs(ledger) == {
        "cc-req:req_F6": Decimal("0.36"),
        "cc-req:req_F5": Decimal("0.12"),
        "cc-req:req_S6": Decimal("0.06"),
        "cc-req:req_W": Decimal("0.0378"),
        "cc-req:req_X": None,
    }
    stored = ledger._db.execute("SELECT dedup_key, speed, web_search, web_fetch FROM usage ORDER BY 1").fetchall()
    assert stored[0] == ("cc-req:req_F5", "fast", 0, 0)
    assert ("cc-req:req_W", None, 3, 0) in stored
    assert sum(t.cost for t in ledger.totals()) == Decimal("0.5778")
    assert sum(t.unpriced for t in ledger.totals()) == 1


def test_streamed_lines_keep_the_first_speed_and_the_most_searches(claude_home, ledger):
    from bridge.pricing import Pricer

    f = claude_home.session_file()
    kw = {"model": "claude-opus-4-6", "input": 1000, "cache_read": 10_000, "cache_5m": 0}
    claude_home.append(f, assistant_line("msg_A", "req_A", output=5, stop_reason=None, speed="fast", **kw))
    ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, Pricer())
    claude_home.append(
        f,
        assistant_line("msg_A", "req_A", output=2000, server_tool_use={"web_search_requests": 2}, **kw),
        assistant_line("msg_A", "req_A", output=2000, server_tool_use={"web_search_requests": 1}, **kw),
    )
    ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, Pricer())
    # One request: ($0.005 + $0.05 + $0.005) x 6 + 2 x $0.01 = $0.38, the totals moved by the difference only.
    assert _costs(ledger) == {"cc-req:req_A": Decimal("0.38")}
    assert ledger.totals()[0].cost == Decimal("0.38") and ledger.totals()[0].requests == 1
    assert ledger.totals() == ledger.recomputed_totals()


def test_thinking_tokens_are_part_of_output_never_added_twice(claude_home, ledger, pricer):
    claude_home.append(
        claude_home.session_file(),
        assistant_line("msg_T", "req_T", output=900, usage_extra={"output_tokens_details": {"thinking_tokens": 600}}),
    )
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["output"] == 900


def test_bad_server_tool_count_is_a_malformed_line_and_the_rest_counts(claude_home, ledger, pricer):
    claude_home.append(
        claude_home.session_file(),
        assistant_line("msg_B", "req_B", server_tool_use={"web_search_requests": "many"}),
        assistant_line("msg_C", "req_C"),
    )
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert ledger.source_summary("claude_transcripts")["skipped"] == 1


# -- partial passes and bad filesystem entries (issue 6) ---------------------------------------


def _scan_pass(home: ClaudeHome, ledger: Ledger, pricer: FlatPricer):  # type: ignore[no-untyped-def]
    """One full pass through the application core, which marks "scanned" only after a complete one."""
    from bridge.app import scan_one

    return scan_one(ledger, ClaudeTranscripts(roots=[home.root]), pricer)


def test_symlink_loop_is_skipped_reported_and_the_rest_is_counted(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    loop = claude_home.root / "projects" / "-home-dev-app" / "loop.jsonl"
    loop.symlink_to(loop)
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert stats.failure is None and not stats.complete
    assert any(str(loop) in e for e in stats.errors)
    assert ledger.state("claude_transcripts", "scanned") is None
    assert any(str(loop) in n for n in ClaudeTranscripts(roots=[claude_home.root]).status().notes)


def test_projects_dir_that_is_a_symlink_loop_is_reported_not_ignored(claude_home, ledger, pricer, tmp_path):
    looped = ClaudeHome(tmp_path / "second")
    looped.root.mkdir()
    (looped.root / "projects").symlink_to(looped.root / "projects")
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    src = ClaudeTranscripts(roots=[claude_home.root, looped.root])
    stats = src.scan(ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert not stats.complete and any(str(looped.root / "projects") in e for e in stats.errors)
    assert any(str(looped.root / "projects") in n for n in src.status().notes)


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """What the kernel answers a non-root user for a mode-000 directory (tests may run as root,
    who can read anything): listing it fails with EACCES."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(denied):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_directory_is_reported_and_the_pass_is_not_complete(claude_home, ledger, pricer, monkeypatch):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    other = claude_home.session_file(project="-home-dev-secret")
    claude_home.append(other, assistant_line("msg_B", "req_B"))
    _deny(monkeypatch, other.parent)
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert not stats.complete and any(str(other.parent) in e and "Permission denied" in e for e in stats.errors)
    assert ledger.state("claude_transcripts", "scanned") is None
    assert any(str(other.parent) in n for n in ClaudeTranscripts(roots=[claude_home.root]).status().notes)
    monkeypatch.undo()  # readable again: the next pass reads it and is complete
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 2 and stats.complete and not stats.errors
    assert ledger.state("claude_transcripts", "scanned") == "1"


def test_file_that_cannot_be_stat_ed_does_not_abort_the_scan(claude_home, ledger, pricer, monkeypatch):
    """A directory with read but no search permission lists its names, but stat() of each
    fails with EACCES: that file is reported, every other file still counts."""
    good = claude_home.session_file()
    claude_home.append(good, assistant_line("msg_A", "req_A"))
    bad = claude_home.session_file(project="-home-dev-other")
    claude_home.append(bad, assistant_line("msg_B", "req_B"))
    real = os.stat

    def stat(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        if os.fspath(path) == str(bad):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "stat", stat)  # what the walk uses (and Path.stat too)
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert stats.failure is None and not stats.complete and any(str(bad) in e for e in stats.errors)


def _rerun_without_dac_capabilities(request: pytest.FixtureRequest) -> None:
    """Root reads mode-000 entries (CAP_DAC_OVERRIDE): run this very test again in a pytest that
    has dropped every capability, so the real permission check happens (never a skip)."""
    import shutil
    import subprocess
    import sys

    if os.environ.get("TOKENBRIDGE_NO_CAPS") == "1":
        pytest.fail("mode-000 entries are still readable without capabilities")
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities for this test"
    out = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "pytest", "-q",
         "-p", "no:cacheprovider", request.node.nodeid],
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TOKENBRIDGE_NO_CAPS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


def test_mode_000_directory_is_reported_not_skipped_silently(claude_home, ledger, pricer, request):
    """The real thing (not emulated). Root ignores permissions: as root the test re-runs itself
    without the DAC capabilities (``setpriv --inh-caps=-all --bounding-set=-all``)."""
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    other = claude_home.session_file(project="-home-dev-secret")
    claude_home.append(other, assistant_line("msg_B", "req_B"))
    other.parent.chmod(0)
    if os.access(other.parent, os.R_OK):
        other.parent.chmod(0o755)
        _rerun_without_dac_capabilities(request)
        return
    try:
        stats = _scan_pass(claude_home, ledger, pricer)
    finally:
        other.parent.chmod(0o755)
    assert totals(ledger)["requests"] == 1
    assert not stats.complete and any(str(other.parent) in e for e in stats.errors)


def test_mode_000_file_is_reported_and_the_rest_counts(claude_home, ledger, pricer, request):
    """Real permissions, like the directory test above (re-run without capabilities as root)."""
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    locked = claude_home.session_file(project="-home-dev-locked")
    claude_home.append(locked, assistant_line("msg_B", "req_B"))
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        locked.chmod(0o644)
        _rerun_without_dac_capabilities(request)
        return
    try:
        stats = _scan_pass(claude_home, ledger, pricer)
    finally:
        locked.chmod(0o644)
    assert totals(ledger)["requests"] == 1
    assert not stats.complete and any(str(locked) in e and "Permission denied" in e for e in stats.errors)
    stats = _scan_pass(claude_home, ledger, pricer)  # readable again: read, and the pass complete
    assert totals(ledger)["requests"] == 2 and stats.complete


def test_fifo_named_jsonl_is_skipped_not_opened(claude_home, ledger, pricer):
    """Opening a FIFO blocks until a writer comes: the scan would hang forever."""
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    fifo = claude_home.root / "projects" / "-home-dev-app" / "pipe.jsonl"
    os.mkfifo(fifo)
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert any(str(fifo) in e for e in stats.errors)


def test_file_vanishing_during_the_pass_leaves_it_incomplete(claude_home, ledger, pricer, monkeypatch):
    import bridge.sources.claude_transcripts as ct

    keep, gone = claude_home.session_file(), claude_home.session_file(project="-home-dev-gone")
    claude_home.append(keep, assistant_line("msg_A", "req_A"))
    claude_home.append(gone, assistant_line("msg_B", "req_B"))
    real = ct.plan_read

    def plan_read(source: str, path: Path, cursor: Any) -> Any:
        if path == gone:
            path.unlink()  # e.g. the 30-day cleanup runs while we scan
        return real(source, path, cursor)

    monkeypatch.setattr(ct, "plan_read", plan_read)
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1
    assert not stats.complete and ledger.state("claude_transcripts", "scanned") is None


def _dead_worker(items: list[object]) -> list[object]:
    os._exit(1)  # e.g. the OOM killer


def test_pass_whose_parse_worker_died_is_not_complete(claude_home, ledger, pricer, monkeypatch):
    import bridge.sources.claude_transcripts as ct

    monkeypatch.setenv("TOKENBRIDGE_PARALLEL_MIN_BYTES", "0")
    monkeypatch.setattr(ct, "_read_files", _dead_worker)
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    stats = _scan_pass(claude_home, ledger, pricer)
    assert totals(ledger)["requests"] == 1, "the files are read in this process instead"
    assert not stats.complete and ledger.state("claude_transcripts", "scanned") is None


# -- poison lines (issue 6) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        ({"ts": "0001-01-01T00:00:00.000Z"}, "timestamp"),
        ({"ts": "9999-12-31T23:59:59.999Z"}, "timestamp"),
        ({"ts": "1999-12-31T23:59:59.999Z"}, "timestamp"),
        ({"ts": "2100-01-01T00:00:00.000Z"}, "timestamp"),
        ({"cost_usd": -5.0}, "costUSD"),
        ({"cost_usd": 1e300}, "costUSD"),
        ({"cost_usd": 10_000.01}, "costUSD"),
    ],
)
def test_poison_line_is_dropped_counted_and_noted_while_the_rest_counts(cli_env, claude_home, poison, reason):
    from zoneinfo import ZoneInfo

    from bridge import app, config
    from bridge.report import build

    f = claude_home.session_file()
    claude_home.append(
        f,
        assistant_line("msg_A", "req_A"),
        assistant_line("msg_bad", "req_bad", **poison),
        assistant_line("msg_B", "req_B", output=5, cost_usd=0.25),
    )
    settings = config.load(env=cli_env)
    [stats, *_] = app.sync(settings, only=["claude_transcripts"], export=False).stats
    assert stats.malformed == 1 and stats.complete and not stats.errors
    with Ledger.open(settings.state_dir) as ledger:
        assert totals(ledger) == {"input": 8, "output": 192, "cacheRead": 96000, "cacheCreation": 2400, "requests": 2}
        assert not ledger.tokens_for(["cc-req:req_bad"])
        assert ledger.state("claude_transcripts", "scanned") == "1", "a dropped line is not a failed pass"
        # A report over everything (any zone) still works: nothing out of range was stored.
        build(ledger, "daily", ZoneInfo("Pacific/Kiritimati"))
        build(ledger, "daily", ZoneInfo("Pacific/Pago_Pago"))
    [row] = [r for r in app.source_rows(settings) if r["name"] == "claude_transcripts"]
    assert row["skippedLines"] == 1
    assert any(str(f) in n and reason in n for n in row["errors"]), row["errors"]
    # Later passes neither re-read nor re-report the line; new lines still count.
    claude_home.append(f, assistant_line("msg_C", "req_C", output=1))
    [again] = app.sync(settings, only=["claude_transcripts"], export=False).stats
    assert again.malformed == 0 and again.new_requests == 1


# -- sidechain replays, missing models, agent_progress mirrors, project (issue 6) -----------


@pytest.mark.parametrize("order", ["parent_first", "replay_first", "same_batch", "replays_before_and_after"])
def test_sidechain_replay_keeps_the_parents_values(claude_home, ledger, pricer, order):
    """A replay is another API call re-sending the parent's conversation: its usage is not the
    parent's, so the parent row keeps the parent's own values, not a field-wise max."""
    parent, replay = claude_home.session_file(), claude_home.session_file(sub="a1b2c3")
    p = assistant_line("msg_P", "req_parent", input=4, output=187, cache_read=48000)
    r1 = assistant_line("msg_P", "req_replay1", sidechain=True, input=900, output=999, cache_read=70000, cost_usd=9.0)
    r2 = assistant_line("msg_P", "req_replay2", sidechain=True, input=901, output=1999, cache_5m=5000)
    if order == "parent_first":
        claude_home.append(parent, p)
        scan(claude_home, ledger, pricer)
        claude_home.append(replay, r1)
    elif order == "replay_first":
        claude_home.append(replay, r1)
        scan(claude_home, ledger, pricer)
        claude_home.append(parent, p)
    elif order == "same_batch":
        claude_home.append(parent, r1, p)
    else:
        claude_home.append(replay, r1)
        scan(claude_home, ledger, pricer)
        claude_home.append(parent, p)
        scan(claude_home, ledger, pricer)
        claude_home.append(replay, r2)
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200, "requests": 1}
    [t] = ledger.totals()
    assert t.cost == Decimal("0.049391"), "priced from the parent's tokens, not the replay's costUSD"


def test_streamed_parent_lines_still_merge_to_the_final_count_beside_a_replay(claude_home, ledger, pricer):
    parent, replay = claude_home.session_file(), claude_home.session_file(sub="a1b2c3")
    claude_home.append(parent, assistant_line("msg_P", "req_parent", output=3, stop_reason=None))
    claude_home.append(replay, assistant_line("msg_P", "req_replay", sidechain=True, output=500))
    scan(claude_home, ledger, pricer)
    claude_home.append(parent, assistant_line("msg_P", "req_parent", output=187))
    scan(claude_home, ledger, pricer)
    assert totals(ledger)["output"] == 187 and totals(ledger)["requests"] == 1


def _without_model(msg_id: str, req_id: str, model: Any) -> str:
    obj = json.loads(assistant_line(msg_id, req_id))
    if model is _ABSENT:
        del obj["message"]["model"]
    else:
        obj["message"]["model"] = model
    return json.dumps(obj, separators=(",", ":"))


_ABSENT = object()


@pytest.mark.parametrize("model", [_ABSENT, None, ""], ids=["absent", "null", "empty"])
def test_line_without_a_model_keeps_its_tokens_under_model_unknown(cli_env, claude_home, model):
    """Real price table: "unknown" has no price, so the cost is unknown (never $0)."""
    from bridge import app, config

    claude_home.append(claude_home.session_file(), _without_model("msg_N", "req_N", model))
    settings = config.load(env=cli_env)
    [stats, *_] = app.sync(settings, only=["claude_transcripts"], export=False).stats
    assert stats.malformed == 0
    with Ledger.open(settings.state_dir) as ledger:
        [t] = ledger.totals()
        assert t.model == "unknown" and t.tokens["output"] == 187 and t.tokens["cacheRead"] == 48000
        assert t.unpriced == 1 and t.cost == 0
        assert ledger.source_summary("claude_transcripts")["unknown_models"] == ["unknown"]


def test_agent_progress_mirror_counts_when_the_subagent_file_is_gone(claude_home, ledger, pricer):
    sub = assistant_line("msg_S", "req_S", sidechain=True, output=42, ts="2026-03-02T10:15:05.500Z")
    claude_home.append(claude_home.session_file(), assistant_line("msg_P", "req_P"), agent_progress_line(sub))
    stats = ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, pricer)
    assert stats.malformed == 0
    assert totals(ledger) == {"input": 8, "output": 229, "cacheRead": 96000, "cacheCreation": 2400, "requests": 2}
    [(side, ts_ms)] = ledger._db.execute("SELECT sidechain, ts_ms FROM usage WHERE dedup_key='cc-req:req_S'")
    assert side == 1, "a subagent's request"
    assert ts_ms == 1772446505500, "the mirrored line's own time"


@pytest.mark.parametrize("order", ["mirror_first", "subagent_first", "same_pass"])
def test_agent_progress_mirror_and_the_subagent_line_count_once(claude_home, ledger, pricer, order):
    partial = assistant_line("msg_S", "req_S", sidechain=True, output=5, stop_reason=None)
    final = assistant_line("msg_S", "req_S", sidechain=True, output=42)
    parent, subagent = claude_home.session_file(), claude_home.session_file(sub="a1b2c3")
    if order == "mirror_first":
        claude_home.append(parent, agent_progress_line(partial), agent_progress_line(final))
        scan(claude_home, ledger, pricer)
        claude_home.append(subagent, partial, final)
    elif order == "subagent_first":
        claude_home.append(subagent, partial, final)
        scan(claude_home, ledger, pricer)
        claude_home.append(parent, agent_progress_line(partial))
    else:
        claude_home.append(subagent, partial, final)
        claude_home.append(parent, agent_progress_line(final))
    scan(claude_home, ledger, pricer)
    assert totals(ledger) == {"input": 4, "output": 42, "cacheRead": 48000, "cacheCreation": 1200, "requests": 1}


def test_progress_lines_without_a_mirrored_api_call_are_ignored(claude_home, ledger, pricer):
    user = json.loads(agent_progress_line(assistant_line("msg_S", "req_S", sidechain=True)))
    user["data"]["message"] = {"type": "user", "message": {"role": "user", "content": "output_tokens"}}
    other = json.loads(agent_progress_line(assistant_line("msg_T", "req_T", sidechain=True)))
    other["data"]["type"] = "bash_progress"
    # Without message.id a mirror cannot be matched with the subagent's own line (keyed by its
    # bytes): counting it would count that call twice whenever the subagent file exists.
    no_id = json.loads(agent_progress_line(assistant_line("msg_U", "req_U", sidechain=True)))
    del no_id["data"]["message"]["message"]["id"]
    claude_home.append(claude_home.session_file(), json.dumps(user), json.dumps(other), json.dumps(no_id))
    stats = ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, pricer)
    assert stats.malformed == 0 and totals(ledger)["requests"] == 0


def _projects(ledger: Ledger) -> dict[str, str]:
    return {str(k): str(p) for k, p in ledger._db.execute("SELECT dedup_key, project FROM usage")}


@pytest.mark.parametrize("parallel", [False, True])
def test_project_is_the_sessions_starting_cwd_even_after_cd(claude_home, ledger, pricer, monkeypatch, parallel):
    if parallel:
        monkeypatch.setenv("TOKENBRIDGE_PARALLEL_MIN_BYTES", "0")
    main = claude_home.session_file(project="-home-dev-app")
    claude_home.append(
        main,
        '{"type":"summary","summary":"Fix the failing test","leafUuid":"2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"}',
        user_tool_result("ok", cwd="/home/dev/app"),
        assistant_line("msg_A", "req_A", cwd="/home/dev/app"),
        assistant_line("msg_B", "req_B", cwd="/home/dev/app/packages/web"),  # the user cd'd
    )
    sub = claude_home.session_file(project="-home-dev-app", sub="a1b2c3")
    claude_home.append(sub, assistant_line("msg_S", "req_S", sidechain=True, cwd="/home/dev/app/packages/web"))
    scan(claude_home, ledger, pricer)
    claude_home.append(main, assistant_line("msg_C", "req_C", cwd="/tmp/elsewhere"))  # read from the cursor on
    scan(claude_home, ledger, pricer)
    assert _projects(ledger) == dict.fromkeys(
        ["cc-req:req_A", "cc-req:req_B", "cc-req:req_S", "cc-req:req_C"], "/home/dev/app"
    )


def test_project_of_a_subagent_whose_session_file_is_gone_is_its_own_first_cwd(claude_home, ledger, pricer):
    sub = claude_home.session_file(project="-home-dev-app", sub="a1b2c3")
    claude_home.append(
        sub,
        assistant_line("msg_S", "req_S", sidechain=True, cwd="/home/dev/app/lib"),
        assistant_line("msg_T", "req_T", sidechain=True, cwd="/home/dev/app/lib/x"),
    )
    scan(claude_home, ledger, pricer)
    assert set(_projects(ledger).values()) == {"/home/dev/app/lib"}


def test_claude_config_dir_whose_projects_cannot_be_looked_at_names_why(tmp_path):
    root = tmp_path / "claude"
    root.mkdir()
    (root / "projects").symlink_to(root / "projects")
    src = ClaudeTranscripts(env={"CLAUDE_CONFIG_DIR": str(root)})
    with pytest.raises(SourceError, match="Too many levels of symbolic links"):
        src.files()
    assert str(root / "projects") in src.status().notes[0]
