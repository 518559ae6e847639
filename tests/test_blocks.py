"""Five-hour blocks: boundaries, gaps, the active block's burn rate and projection (hand-computed)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from bridge import blocks
from bridge.cli import main
from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord

# (key, UTC time, model, input, output). FlatPricer: $1 per million tokens; unknown-* has no price.
ROWS = [
    ("a1", "2026-03-02T09:20:00.000", "claude-sonnet-4-5", 100_000, 20_000),  # block A 09:00-14:00 UTC
    ("a2", "2026-03-02T13:59:59.999", "claude-sonnet-4-5", 25_000, 5_000),  # last millisecond of A
    ("b1", "2026-03-02T14:00:00.000", "claude-opus-4-1", 40_000, 10_000),  # at A's end: block B 14:00-19:00
    ("b2", "2026-03-02T14:40:00.000", "unknown-x", 9_000, 1_000),  # no known price
    # 10 h 50 min idle: a gap 19:00 -> 01:00 (the next request's hour)
    ("c1", "2026-03-03T01:30:00.000", "claude-sonnet-4-5", 50_000, 10_000),  # block C 01:00-06:00
    ("c2", "2026-03-03T02:30:00.000", "claude-sonnet-4-5", 25_000, 5_000),
    ("x1", "2026-03-03T02:45:00.000", "gpt-5", 1_000, 0),  # another source: not in the default blocks
]
NOW = datetime(2026, 3, 3, 3, 30, tzinfo=UTC).timestamp()  # inside block C


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp() * 1000)


@pytest.fixture
def led(tmp_path, pricer):
    with Ledger.open(tmp_path / "state") as ledger:
        records = [
            UsageRecord(
                source="codex" if key.startswith("x") else "claude_transcripts",
                provider="openai" if key.startswith("x") else "anthropic",
                model=model,
                timestamp=datetime.fromisoformat(ts + "+00:00"),
                dedup_key=key,
                tokens=Tokens(input=inp, output=out),
                session_id="s",
            )
            for key, ts, model, inp, out in ROWS
        ]
        ledger.commit(records, pricer)
        yield ledger


def test_blocks_start_on_the_hour_end_five_hours_later_and_gaps_sit_between(led):
    rep = blocks.build(led, UTC, now=NOW)
    got = [(b.gap, b.start_ms, b.end_ms, b.line.requests, b.line.total) for b in rep.blocks]
    assert got == [
        (False, _ms("2026-03-02T09:00:00"), _ms("2026-03-02T14:00:00"), 2, 150_000),
        (False, _ms("2026-03-02T14:00:00"), _ms("2026-03-02T19:00:00"), 2, 60_000),
        (True, _ms("2026-03-02T19:00:00"), _ms("2026-03-03T01:00:00"), 0, 0),
        (False, _ms("2026-03-03T01:00:00"), _ms("2026-03-03T06:00:00"), 2, 90_000),
    ]
    a, b, _gap, c = rep.blocks
    assert (a.line.cost, b.line.cost, c.line.cost) == (Decimal("0.15"), Decimal("0.05"), Decimal("0.09"))
    assert b.line.unpriced == 1 and b.models == {"claude-opus-4-1", "unknown-x"}
    assert (a.first_ms, a.last_ms) == (_ms("2026-03-02T09:20:00"), _ms("2026-03-02T13:59:59.999"))
    assert [x.active for x in rep.blocks] == [False, False, False, True]
    assert (rep.totals.requests, rep.totals.total, rep.totals.unpriced) == (6, 300_000, 1)


def test_the_active_block_burn_rate_and_projection(led):
    c = blocks.build(led, UTC, now=NOW).active()
    assert c is not None
    # 90,000 tokens and $0.09 in the 120 minutes since its first request (01:30 -> 03:30); 150 minutes left.
    assert c.tokens_per_minute == Decimal(750)
    assert c.cost_per_hour == Decimal("0.045")
    assert c.projected_tokens == 90_000 + 750 * 150
    assert c.projected_cost == Decimal("0.09") + Decimal("0.00075") * 150
    assert blocks.active_summary(blocks.build(led, UTC, now=NOW), UTC) == [
        "Active block: 2026-03-03 01:00 to 2026-03-03 06:00, 2h 30m left.",
        "Burn rate (since its first request): 750 tokens/min, $0.04/h.",
        "Projected at block end: 202,500 tokens, $0.20.",
    ]


def test_no_block_is_active_after_its_end_and_an_unpriced_active_block_has_unknown_cost(led, tmp_path, pricer):
    later = blocks.build(led, UTC, now=datetime(2026, 3, 3, 6, 0, tzinfo=UTC).timestamp())
    assert later.active() is None
    assert blocks.active_summary(later, UTC)[0].startswith("No active block")
    with Ledger.open(tmp_path / "other") as other:
        rec = UsageRecord("claude_transcripts", "anthropic", "unknown-y", datetime(2026, 3, 3, 3, 0, tzinfo=UTC),
                          "u", Tokens(input=600))  # fmt: skip
        other.commit([rec], pricer)
        active = blocks.build(other, UTC, now=NOW).active()
        assert active is not None and active.line.cost is None
        assert (active.cost_per_hour, active.projected_cost) == (None, None)
        assert active.tokens_per_minute == Decimal(20)  # 600 tokens in 30 minutes
        data = blocks.build(other, UTC, now=NOW).as_json(UTC)["blocks"][0]
        assert data["totalCost"] is None and data["burnRate"]["costPerHour"] is None
        # Its block runs 03:00-08:00: 270 minutes left at 03:30.
        assert data["projection"] == {"totalTokens": 600 + 20 * 270, "totalCost": None, "remainingMinutes": 270}


def test_since_until_keep_the_blocks_starting_on_those_local_days(led):
    only_c = blocks.build(led, UTC, since=date(2026, 3, 3), now=NOW)
    assert [(b.gap, b.line.requests) for b in only_c.blocks] == [(False, 2)]  # the gap before it is dropped
    first_day = blocks.build(led, UTC, until=date(2026, 3, 2), now=NOW)
    assert [b.line.total for b in first_day.blocks] == [150_000, 60_000]
    # Tokyo (UTC+9): block C starts 10:00 on 03-03, blocks A and B on 03-02 (18:00, 23:00).
    tokyo = blocks.build(led, ZoneInfo("Asia/Tokyo"), since=date(2026, 3, 2), until=date(2026, 3, 2), now=NOW)
    assert [b.line.total for b in tokyo.blocks] == [150_000, 60_000]
    with pytest.raises(ConfigError, match="--since/--until"):
        blocks.build(led, UTC, since=date(2026, 3, 4), until=date(2026, 3, 3))


def test_source_selects_other_sources(led):
    rep = blocks.build(led, UTC, sources=["codex"], now=NOW)
    assert [(b.start_ms, b.line.total, b.active) for b in rep.blocks] == [(_ms("2026-03-03T02:00:00"), 1_000, True)]


def test_json_shows_times_in_the_zone_and_the_active_block(led):
    data = blocks.build(led, ZoneInfo("Asia/Kolkata"), now=NOW).as_json(ZoneInfo("Asia/Kolkata"))
    assert data["timezone"] == "Asia/Kolkata" and data["sources"] == ("claude_transcripts",)
    first, second, gap, active = data["blocks"]
    assert first["start"] == "2026-03-02T14:30:00+05:30" and first["end"] == "2026-03-02T19:30:00+05:30"
    assert first["totalCost"] == "0.15" and first["modelsUsed"] == ["claude-sonnet-4-5"]
    assert second["totalCost"] == "0.05" and second["unpricedRequests"] == 1
    assert gap == {"start": "2026-03-03T00:30:00+05:30", "end": "2026-03-03T06:30:00+05:30", "isGap": True,
                   "isActive": False}  # fmt: skip
    assert active["isActive"] and active["burnRate"] == {"tokensPerMinute": "750.00", "costPerHour": "0.045000"}
    assert active["projection"]["remainingMinutes"] == 150
    assert data["totals"]["totalTokens"] == 300_000


def test_cli_report_blocks_table_and_json(led, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TOKENBRIDGE_CONFIG", raising=False)
    state, cfg = str(tmp_path / "state"), str(tmp_path / "none.toml")
    assert main(["--state-dir", state, "--config", cfg, "report", "blocks", "-z", "UTC"]) == 0
    out = capsys.readouterr().out
    assert "5-hour blocks (UTC) of claude_transcripts" in out and "gap (6h 00m)" in out
    assert "2026-03-02 09:00" in out and "2026-03-02 14:00" in out and "2026-03-03 01:00" in out
    assert "$0.05 + ?" in out  # block B: a request without a known price
    assert "No active block" in out  # the real clock is long past March 2026's blocks
    assert "the last one ended 2026-03-03 06:00" in out
    assert (
        main(["--state-dir", state, "--config", cfg, "report", "blocks", "--json", "--since", "20260303", "-z", "UTC"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [b["totalTokens"] for b in data["blocks"]] == [90_000]
    assert main(["--state-dir", state, "--config", cfg, "report", "blocks", "--by", "model"]) == 2
    assert "report blocks has a row per block only" in capsys.readouterr().err
