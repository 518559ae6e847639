"""Gemini CLI chats: one count per message id across re-appends, ``$set``, rewinds, legacy
documents and their migrated JSONL; rewrites and restarts add nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from bridge.sources import _files
from bridge.sources.gemini_cli import GeminiCli, parse_chat, tokens_of
from tests.conftest import ledger_sums
from tests.test_cli import cli

SID = "5c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
MSG_A = "d1e2f3a4-0000-4000-8000-00000000000a"
MSG_B = "d1e2f3a4-0000-4000-8000-00000000000b"
META = {
    "sessionId": SID,
    "projectHash": "9f8e7d6c5b4a",
    "startTime": "2026-05-17T11:07:00.000Z",
    "lastUpdated": "2026-05-17T11:07:00.000Z",
    "kind": "main",
}
# The spec's example tokens: 15000 prompt (11000 of them cached), 200 out, 800 thoughts.
TOKENS_A = {"input": 15000, "output": 200, "cached": 11000, "thoughts": 800, "tool": 0, "total": 16000}


def msg(
    mid: str,
    tokens: dict[str, int] | None,
    *,
    ts: str = "2026-05-17T11:07:31.000Z",
    model: str | None = "gemini-2.5-pro",
) -> str:
    m: dict[str, object] = {
        "id": mid,
        "timestamp": ts,
        "type": "gemini",
        "content": "",
        "thoughts": [],
        "tokens": tokens,
    }
    if model is not None:
        m["model"] = model
    return json.dumps(m, separators=(",", ":"))


def user(mid: str) -> str:
    return json.dumps({"id": mid, "timestamp": "2026-05-17T11:07:30.000Z", "type": "user", "content": "fix it"})


def chat_path(root: Path, name: str = "session-2026-05-17T11-07-5c1e2d3f.jsonl") -> Path:
    p = root / "9f8e7d6c5b4a" / "chats" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write(path: Path, *lines: str) -> None:
    with path.open("a") as fh:
        fh.writelines(line + "\n" for line in lines)


def spec_chat(root: Path) -> Path:
    """The spec's example (local-formats.md §5.1): the message appended twice, then a ``$set``."""
    p = chat_path(root)
    write(
        p,
        json.dumps(META),
        user("u-1"),
        msg(MSG_A, None),
        msg(MSG_A, TOKENS_A),
        json.dumps({"$set": {"lastUpdated": "2026-05-17T11:07:32.000Z"}}),
    )
    return p


def scan(root: Path, ledger: Ledger, pricer) -> dict[str, int]:
    GeminiCli([root], True).scan(ledger, pricer)
    return ledger_sums(ledger)


EXPECT_A = {"input": 4000, "output": 1000, "cacheRead": 11000, "cacheCreation": 0, "requests": 1}


def test_tokens_take_cached_out_of_input_and_price_thoughts_as_output():
    t = tokens_of(TOKENS_A)
    assert (t.input, t.output, t.cache_read) == (4000, 1000, 11000)
    # When total shows input did not include the cache, input is kept as written.
    t = tokens_of({"input": 400, "output": 10, "cached": 100, "thoughts": 0, "tool": 5, "total": 515})
    assert (t.input, t.output, t.cache_read) == (405, 10, 100)


def test_reappended_message_counts_once_with_its_last_tokens(tmp_path, ledger, pricer):
    spec_chat(tmp_path)
    assert scan(tmp_path, ledger, pricer) == EXPECT_A
    row = ledger.aggregate("session")
    assert row[0][0] == SID and str(row[0][3]).endswith("|9f8e7d6c5b4a")


def test_rescan_and_restart_add_nothing(tmp_path, pricer):
    spec_chat(tmp_path)
    with Ledger.open(tmp_path / "state") as led:
        scan(tmp_path, led, pricer)
    with Ledger.open(tmp_path / "state") as led:  # a new process
        assert scan(tmp_path, led, pricer) == EXPECT_A
        assert scan(tmp_path, led, pricer) == EXPECT_A


def test_set_restating_history_and_rewind_add_nothing_and_lose_nothing(tmp_path, ledger, pricer):
    p = spec_chat(tmp_path)
    scan(tmp_path, ledger, pricer)
    b = {"input": 2000, "output": 50, "cached": 0, "thoughts": 0, "tool": 0, "total": 2050}
    write(p, user("u-2"), msg(MSG_B, b, ts="2026-05-17T11:09:00.000Z"))
    write(p, json.dumps({"$set": {"messages": [json.loads(msg(MSG_A, TOKENS_A)), json.loads(msg(MSG_B, b))]}}))
    write(p, json.dumps({"$rewindTo": MSG_A}))  # B is gone from the chat, its tokens were spent
    got = scan(tmp_path, ledger, pricer)
    assert got == {"input": 6000, "output": 1050, "cacheRead": 11000, "cacheCreation": 0, "requests": 2}


def test_legacy_json_and_its_migrated_jsonl_count_once(tmp_path, ledger, pricer):
    legacy = chat_path(tmp_path, "session-2026-05-17T11-07-5c1e2d3f.json")
    doc = {**META, "messages": [json.loads(user("u-1")), json.loads(msg(MSG_A, TOKENS_A))]}
    legacy.write_text(json.dumps(doc, indent=2))
    assert scan(tmp_path, ledger, pricer) == EXPECT_A
    spec_chat(tmp_path)  # the resume appends the same messages to the new .jsonl
    assert scan(tmp_path, ledger, pricer) == EXPECT_A


def test_partial_last_line_waits_and_malformed_line_is_skipped(tmp_path, ledger, pricer):
    p = spec_chat(tmp_path)
    b = {"input": 100, "output": 10, "cached": 0, "thoughts": 0, "tool": 0, "total": 110}
    with p.open("a") as fh:
        fh.write("{not json\n")
        fh.write(msg(MSG_B, b)[:40])  # the writer is mid-line
    assert scan(tmp_path, ledger, pricer) == EXPECT_A
    assert ledger.source_summary("gemini_cli")["skipped"] == 1
    with p.open("a") as fh:
        fh.write(msg(MSG_B, b)[40:] + "\n")
    assert scan(tmp_path, ledger, pricer)["input"] == 4100


def test_half_written_legacy_document_is_skipped_then_read(tmp_path, ledger, pricer):
    legacy = chat_path(tmp_path, "session-2026-05-17T11-07-5c1e2d3f.json")
    full = json.dumps({**META, "messages": [json.loads(msg(MSG_A, TOKENS_A))]})
    legacy.write_text(full[:60])
    assert scan(tmp_path, ledger, pricer)["requests"] == 0
    legacy.write_text(full)
    os.utime(legacy, ns=(1, 2))  # a different mtime, as a real rewrite has
    assert scan(tmp_path, ledger, pricer) == EXPECT_A


def test_message_without_model_is_unknown_not_free(tmp_path, ledger, pricer):
    p = chat_path(tmp_path)
    write(p, json.dumps(META), msg(MSG_A, TOKENS_A, model=None))
    recs = parse_chat(p, p.read_bytes()).records
    assert [(r.model, r.provider) for r in recs] == [("unknown", "google")]


def test_bad_token_count_names_the_field_and_the_rest_is_kept(tmp_path):
    p = chat_path(tmp_path)
    bad = {**TOKENS_A, "output": "many"}
    write(p, json.dumps(META), msg("m-bad", bad), msg(MSG_A, TOKENS_A))
    parsed = parse_chat(p, p.read_bytes())
    assert parsed.malformed == 1 and "tokens.output" in parsed.notes[0]
    assert [r.dedup_key for r in parsed.records] == [f"gemini:{MSG_A}"]


def test_explicit_missing_root_is_a_named_error(tmp_path, ledger, pricer):
    from bridge.errors import SourceError

    with pytest.raises(SourceError, match="GEMINI_DATA_DIR"):
        GeminiCli([tmp_path / "nope"], True).scan(ledger, pricer)


def test_cli_sync_gemini_then_report_daily_exact_totals(cli_env, tmp_path):
    root = tmp_path / "gemini"
    spec_chat(root)
    env = {**cli_env, "GEMINI_DATA_DIR": str(root)}
    out = cli(env, "sync", "--no-export", "--source", "gemini_cli")
    assert out.returncode == 0, out.stderr
    cli(env, "sync", "--no-export", "--source", "gemini_cli")  # again: nothing more
    data = json.loads(cli(env, "report", "daily", "--json", "--source", "gemini_cli").stdout)
    day = data["daily"][0]
    assert day["date"] == "2026-05-17"
    assert (day["inputTokens"], day["outputTokens"], day["cacheReadTokens"], day["requests"]) == (4000, 1000, 11000, 1)
    assert day["modelsUsed"] == ["gemini-2.5-pro"]
    assert day["totalCost"] is not None  # a known Gemini model has a price


def test_file_event_path_is_read_and_an_unrelated_path_ignored(tmp_path, ledger, pricer):
    p = spec_chat(tmp_path)
    src = GeminiCli([tmp_path], True)
    src.scan(ledger, pricer, paths=[tmp_path.parent / "elsewhere.jsonl"])
    assert ledger_sums(ledger)["requests"] == 0
    src.scan(ledger, pricer, paths=[p])
    assert ledger_sums(ledger) == EXPECT_A
    assert [w.path for w in src.watches()] == [tmp_path]


def test_crash_between_files_then_restart_gives_exact_totals(tmp_path, pricer, monkeypatch):
    """A pass killed after its first file's commit: the next pass reads the rest, once."""
    spec_chat(tmp_path)
    other = chat_path(tmp_path, "session-2026-05-18T09-00-aaaaaaaa.jsonl")
    b = {"input": 300, "output": 30, "cached": 0, "thoughts": 0, "tool": 0, "total": 330}
    write(other, json.dumps({**META, "sessionId": "aaaaaaaa-0000"}), msg(MSG_B, b, ts="2026-05-18T09:00:01.000Z"))
    real = Ledger.commit
    calls = {"n": 0}
    monkeypatch.setattr(_files._Batch, "MAX_RECORDS", 1)  # a transaction per file: die between them

    def dying(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies before the second file's transaction
        return real(self, *a, **kw)

    with Ledger.open(tmp_path / "state") as led:
        monkeypatch.setattr(Ledger, "commit", dying)
        with pytest.raises(KeyboardInterrupt):
            GeminiCli([tmp_path], True).scan(led, pricer)
        monkeypatch.setattr(Ledger, "commit", real)
        assert ledger_sums(led)["requests"] == 1
    with Ledger.open(tmp_path / "state") as led:
        got = scan(tmp_path, led, pricer)
        assert got == {"input": 4300, "output": 1030, "cacheRead": 11000, "cacheCreation": 0, "requests": 2}
        assert scan(tmp_path, led, pricer) == got


def test_run_daemon_picks_up_appended_gemini_messages_from_file_events(cli_env, tmp_path):
    """``tokenbridge run`` with only a Gemini chat: file events, no double count."""
    from tests._otlp_sink import Daemon, running_sink

    root = tmp_path / "gemini"
    p = spec_chat(root)
    with running_sink("grpc") as sink:
        env = {**cli_env, **sink.env(), "TOKENBRIDGE_EXPORT_INTERVAL": "0.5", "GEMINI_DATA_DIR": str(root)}
        daemon = Daemon(env)
        try:
            daemon.wait_ready()

            def output(s) -> float:
                return sum(
                    pt.value
                    for (metric, attrs), pt in s.latest().items()
                    if metric == "claude_code.token.usage" and dict(attrs)["source"] == "gemini_cli"
                    and dict(attrs)["type"] == "output"
                )  # fmt: skip

            sink.wait_until(lambda s: output(s) == 1000)
            b = {"input": 100, "output": 10, "cached": 0, "thoughts": 0, "tool": 0, "total": 110}
            write(p, msg(MSG_B, None), msg(MSG_B, b), msg(MSG_A, TOKENS_A))  # a re-append of A too
            sink.wait_until(lambda s: output(s) == 1010)
            assert daemon.stop() == 0, daemon.stderr()
        finally:
            daemon.close()
    assert "Traceback" not in daemon.stderr()


def test_files_are_committed_together_each_cursor_with_its_records(tmp_path, pricer, monkeypatch):
    spec_chat(tmp_path)
    other = chat_path(tmp_path, "session-2026-05-18T09-00-aaaaaaaa.jsonl")
    b = {"input": 300, "output": 30, "cached": 0, "thoughts": 0, "tool": 0, "total": 330}
    write(other, json.dumps({**META, "sessionId": "aaaaaaaa-0000"}), msg(MSG_B, b, ts="2026-05-18T09:00:01.000Z"))
    real = Ledger.commit
    commits: list[int] = []

    def counting(self, records, pricer, cursor=None, state=None):
        commits.append(len(cursor))
        return real(self, records, pricer, cursor, state)

    monkeypatch.setattr(Ledger, "commit", counting)
    with Ledger.open(tmp_path / "state") as led:
        got = scan(tmp_path, led, pricer)
        assert commits == [2]  # one transaction for both files
        assert got["requests"] == 2
        assert scan(tmp_path, led, pricer) == got and commits == [2]  # unchanged files: nothing to commit
