"""The usage record: validation, the in-batch collapse rule, the worker codec."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bridge.record import (
    MAX_TOKENS,
    CostOrigin,
    Tokens,
    UsageRecord,
    collapse,
    record_from_tuple,
    record_to_tuple,
)

T0 = datetime(2026, 3, 2, 10, 15, 1, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 10, 15, 4, tzinfo=UTC)


def rec(key: str, out: int, ts: datetime = T0, side: bool = False, group: str | None = "g", **kw) -> UsageRecord:  # type: ignore[no-untyped-def]
    return UsageRecord(
        source="claude_transcripts",
        provider="anthropic",
        model="m",
        timestamp=ts,
        dedup_key=key,
        tokens=Tokens(input=4, output=out, cache_read=48000, cache_creation=1200),
        group_key=group,
        is_sidechain=side,
        **kw,
    )


def test_streamed_lines_collapse_to_max_with_first_identity():
    out = collapse([rec("k", 3, T0), rec("k", 187, T1), rec("k", 50, T1)])
    assert list(out) == ["k"]
    assert out["k"].tokens.output == 187
    assert out["k"].timestamp == T0, "a later line must not move the request in time"


def test_non_sidechain_identity_wins_and_replays_are_dropped_beside_the_parent():
    out = collapse([rec("replay", 187, side=True), rec("parent", 100)])
    assert list(out) == ["parent"]
    assert out["parent"].tokens.output == 100 and not out["parent"].is_sidechain, "the parent keeps its values"
    same_key = collapse([rec("k", 5, T0, side=True), rec("k", 6, T1)])
    assert same_key["k"].timestamp == T1 and not same_key["k"].is_sidechain


def test_reported_cost_keeps_the_maximum():
    a = rec("k", 1, cost=Decimal("0.01"), cost_origin=CostOrigin.REPORTED)
    b = rec("k", 1, cost=Decimal("0.02"), cost_origin=CostOrigin.REPORTED)
    out = collapse([b, a])["k"]
    assert (out.cost, out.cost_origin) == (Decimal("0.02"), CostOrigin.REPORTED)


def test_out_of_range_and_naive_records_are_refused():
    with pytest.raises(ValueError, match="out of range"):
        rec("k", MAX_TOKENS + 1)
    with pytest.raises(ValueError, match="out of range"):
        rec("k", -1)
    with pytest.raises(ValueError, match="timezone"):
        rec("k", 1, ts=datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="unknown"):
        rec("k", 1, cost=None, cost_origin=CostOrigin.ESTIMATED)


def test_worker_codec_round_trips():
    r = rec("k", 7, side=True, cost=Decimal("0.5"), cost_origin=CostOrigin.REPORTED, session_id="s", project="/p")
    assert record_from_tuple(record_to_tuple(r)) == r
    r.speed, r.web_search_requests, r.web_fetch_requests = "fast", 3, 1
    assert record_from_tuple(record_to_tuple(r)) == r


def test_collapse_keeps_the_first_stated_speed_and_the_most_server_tool_requests():
    a, b, c = rec("k", 1), rec("k", 5), rec("k", 3)
    b.speed, b.web_search_requests = "fast", 2
    c.speed, c.web_search_requests, c.web_fetch_requests = "standard", 1, 4
    out = collapse([a, b, c])["k"]
    assert (out.speed, out.web_search_requests, out.web_fetch_requests) == ("fast", 2, 4)
