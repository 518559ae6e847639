"""The stats cache fills only days the transcripts lack, and only ever adds the increase."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.ledger import Ledger
from bridge.record import Tokens
from bridge.sources.claude_stats_cache import TRANSCRIPTS_SCANNED, ClaudeStatsCache, split_tokens
from bridge.sources.claude_transcripts import ClaudeTranscripts
from tests.conftest import ClaudeHome, FlatPricer, assistant_line

SONNET = "claude-sonnet-4-5-20250929"


def stats_doc(daily: dict[str, dict[str, int]], last: str, version: int = 5, usage: Any = None) -> dict[str, Any]:
    """A stats-cache.json shaped like local-formats.md §2 (v5-like)."""
    return {
        "version": version,
        "lastComputedDate": last,
        "dailyActivity": [{"date": d, "messageCount": 10, "sessionCount": 1, "toolCallCount": 3} for d in daily],
        "dailyModelTokens": [{"date": d, "tokensByModel": m} for d, m in daily.items()],
        "dailyModelTokensVersion": version,
        "modelUsage": usage
        if usage is not None
        else {
            SONNET: {
                "inputTokens": 1000,
                "outputTokens": 3000,
                "cacheReadInputTokens": 5000,
                "cacheCreationInputTokens": 1000,
                "webSearchRequests": 0,
                "costUSD": 0,
                "contextWindow": 0,
                "maxOutputTokens": 0,
            }
        },
        "totalSessions": 4,
        "totalMessages": 40,
        "longestSession": None,
        "firstSessionDate": "2026-02-20T03:32:40.557Z",
        "hourCounts": {"9": 3},
        "totalSpeculationTimeSavedMs": 0,
    }


def write(home: ClaudeHome, doc: dict[str, Any]) -> Path:
    p = home.root / "stats-cache.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(p)  # Claude Code rewrites the whole file
    return p


def by_day(ledger: Ledger) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in ledger._db.execute(
        "SELECT dedup_key, input + output + cache_read + cache_creation FROM usage WHERE source='claude_stats_cache'"
    ):
        out[row[0]] = row[1]
    return out


def run_both(home: ClaudeHome, ledger: Ledger, pricer: FlatPricer) -> None:
    ClaudeTranscripts(roots=[home.root]).scan(ledger, pricer)
    ledger.set_state(*TRANSCRIPTS_SCANNED, "1")
    ClaudeStatsCache([home.root], tz=UTC).scan(ledger, pricer)


def test_split_is_exact_and_proportional():
    t = split_tokens(
        1001, {"inputTokens": 1, "outputTokens": 1, "cacheReadInputTokens": 1, "cacheCreationInputTokens": 1}
    )
    assert t.total == 1001
    assert sorted([t.input, t.output, t.cache_read, t.cache_creation]) == [250, 250, 250, 251]
    assert split_tokens(10, None) == Tokens(input=10)


def test_only_days_before_the_first_transcript_day_are_used(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", ts="2026-03-02T10:00:00.000Z"))
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}, "2026-03-02": {SONNET: 49391}}, last="2026-03-02"))
    run_both(claude_home, ledger, pricer)
    assert by_day(ledger) == {f"stats:2026-02-27:{SONNET}": 1000}, "2026-03-02 is covered by transcripts"
    rows = {t.source: t.tokens for t in ledger.totals()}
    assert sum(rows["claude_stats_cache"].values()) == 1000
    assert rows["claude_stats_cache"] == {"input": 100, "output": 300, "cacheRead": 500, "cacheCreation": 100}


def test_a_day_whose_first_request_arrived_as_an_event_is_covered_too(claude_home, ledger, pricer):
    """The request of 2026-03-01 was seen first as a Claude Code event: its row keeps the events source even
    once its line is read, and the stats cache must not add that day again."""
    from bridge.sources.claude_code_events import parse_event

    ev = {"request_id": "req_E", "model": SONNET, "input_tokens": 10, "output_tokens": 20,
          "event.timestamp": "2026-03-01T09:00:00Z", "session.id": "s"}  # fmt: skip
    rec = parse_event(ev, 0)
    assert rec is not None
    ledger.commit([rec], pricer)
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", ts="2026-03-02T10:00:00.000Z"))
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}, "2026-03-01": {SONNET: 30}}, last="2026-03-02"))
    run_both(claude_home, ledger, pricer)
    assert by_day(ledger) == {f"stats:2026-02-27:{SONNET}": 1000}


def test_rewrite_adds_only_the_increase_and_never_decreases(claude_home, ledger, pricer):
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}}, last="2026-02-28"))
    run_both(claude_home, ledger, pricer)
    # Rewritten with a higher total and different all-time proportions.
    other = {SONNET: {"inputTokens": 0, "outputTokens": 1, "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0}}
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1200}}, last="2026-02-28", usage=other))
    ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    [t] = [t for t in ledger.totals() if t.source == "claude_stats_cache"]
    assert t.tokens == {"input": 100, "output": 500, "cacheRead": 500, "cacheCreation": 100}
    assert sum(t.tokens.values()) == 1200
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 900}}, last="2026-02-28"))
    ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    assert sum(next(t for t in ledger.totals() if t.source == "claude_stats_cache").tokens.values()) == 1200


def test_incomplete_days_and_unscanned_transcripts_are_not_used(claude_home, ledger, pricer):
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}, "2026-02-28": {SONNET: 5}}, last="2026-02-27"))
    ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    assert by_day(ledger) == {}, "waits for a transcript scan"
    run_both(claude_home, ledger, pricer)
    assert by_day(ledger) == {f"stats:2026-02-27:{SONNET}": 1000}, "2026-02-28 is after lastComputedDate"


def test_half_written_file_is_retried_and_unknown_versions_still_read(claude_home, ledger, pricer, caplog):
    p = claude_home.root / "stats-cache.json"
    p.write_text('{"version": 5, "dailyModelTokens": [')
    run_both(claude_home, ledger, pricer)
    assert by_day(ledger) == {}
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 7}}, last="2026-02-27", version=9))
    ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    assert by_day(ledger) == {f"stats:2026-02-27:{SONNET}": 7}
    assert any("unknown stats-cache version 9" in r.getMessage() for r in caplog.records)


def test_unchanged_file_is_not_reingested(claude_home, ledger, pricer):
    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}}, last="2026-02-27"))
    run_both(claude_home, ledger, pricer)
    again = ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    assert again.files_read == 0


def test_days_bucket_in_the_users_zone(claude_home, ledger, pricer):
    from zoneinfo import ZoneInfo

    from bridge.report import build

    write(claude_home, stats_doc({"2026-02-27": {SONNET: 1000}}, last="2026-02-27"))
    ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, pricer)
    ledger.set_state(*TRANSCRIPTS_SCANNED, "1")
    tz = ZoneInfo("Asia/Kolkata")
    ClaudeStatsCache([claude_home.root], tz=tz).scan(ledger, pricer)
    rep = build(ledger, "daily", tz)
    assert [(b.key, b.line.total) for b in rep.buckets] == [("2026-02-27", 1000)]


def test_default_zone_keeps_dst_rules_so_the_day_before_the_transcripts_is_kept(claude_home, ledger, pricer, tz_env):
    # First transcript event: 00:30 CEST on 2026-07-02 in Berlin. Today's fixed offset in winter
    # (+01:00) made that 23:30 on 07-01, so the stats cache's 07-01 was dropped as "covered".
    tz_env("Europe/Berlin")
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", ts="2026-07-01T22:30:00.000Z"))
    write(claude_home, stats_doc({"2026-07-01": {SONNET: 1000}, "2026-07-02": {SONNET: 49391}}, last="2026-07-02"))
    ClaudeTranscripts(roots=[claude_home.root]).scan(ledger, pricer)
    ledger.set_state(*TRANSCRIPTS_SCANNED, "1")
    source = ClaudeStatsCache([claude_home.root])
    for month, hours in ((1, 1), (7, 2)):
        assert source.tz.utcoffset(datetime(2026, month, 15)) == timedelta(hours=hours)
    source.scan(ledger, pricer)
    assert by_day(ledger) == {f"stats:2026-07-01:{SONNET}": 1000}
