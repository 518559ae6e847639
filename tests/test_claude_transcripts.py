"""Claude Code transcripts: every dedup trap of local-formats.md §1.4–1.9, read incrementally."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.errors import SourceError
from bridge.ledger import Ledger
from bridge.sources.claude_transcripts import ClaudeTranscripts, default_roots
from tests.conftest import ClaudeHome, FlatPricer, assistant_line, synthetic_line, user_tool_result
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
    assert rows == {"cc:msg_P:req_parent", "cc:msg_S:req_S"}, "the non-sidechain line wins"


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
    assert rows == {"cc:msg_A:req_A": 500, "cc:msg_B:req_B": 0}
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
        "cc:msg_F6:req_F6": Decimal("0.36"),
        "cc:msg_F5:req_F5": Decimal("0.12"),
        "cc:msg_S6:req_S6": Decimal("0.06"),
        "cc:msg_W:req_W": Decimal("0.0378"),
        "cc:msg_X:req_X": None,
    }
    stored = ledger._db.execute("SELECT dedup_key, speed, web_search, web_fetch FROM usage ORDER BY 1").fetchall()
    assert stored[0] == ("cc:msg_F5:req_F5", "fast", 0, 0)
    assert ("cc:msg_W:req_W", None, 3, 0) in stored
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
    assert _costs(ledger) == {"cc:msg_A:req_A": Decimal("0.38")}
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
