"""Reports: time-zone buckets, periods, sessions, models, unknown costs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from bridge.cli import _fmt_cost
from bridge.errors import ConfigError
from bridge.record import Tokens, UsageRecord
from bridge.report import build, parse_day, resolve_tz


def add(
    ledger,
    pricer,
    key,
    ts,
    model="claude-sonnet-4-5",
    out=100,
    session="s1",
    project="/p",
    source="claude_transcripts",
    provider="anthropic",
    speed=None,
):
    ledger.commit(
        [
            UsageRecord(
                source=source,
                provider=provider,
                model=model,
                timestamp=datetime.fromisoformat(ts),
                dedup_key=key,
                tokens=Tokens(input=10, output=out),
                session_id=session,
                project=project,
                speed=speed,
            )
        ],
        pricer,
    )


def test_days_bucket_in_the_requested_zone(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T23:30:00+00:00")
    add(ledger, pricer, "b", "2026-03-03T00:30:00+00:00")
    utc = build(ledger, "daily", UTC)
    assert [(b.key, b.line.requests) for b in utc.buckets] == [("2026-03-02", 1), ("2026-03-03", 1)]
    tokyo = build(ledger, "daily", ZoneInfo("Asia/Tokyo"))
    assert [(b.key, b.line.requests) for b in tokyo.buckets] == [("2026-03-03", 2)]
    # Half-hour offsets are exact too (quarter-hour buckets).
    add(ledger, pricer, "c", "2026-03-03T18:29:00+00:00")  # 23:59 in Kolkata
    add(ledger, pricer, "d", "2026-03-03T18:31:00+00:00")  # 00:01 next day
    kolkata = build(ledger, "daily", ZoneInfo("Asia/Kolkata"))
    assert {b.key: b.line.requests for b in kolkata.buckets} == {"2026-03-03": 3, "2026-03-04": 1}


def test_weekly_starts_monday_and_monthly_groups_months(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-01T12:00:00+00:00")  # Sunday
    add(ledger, pricer, "b", "2026-03-02T12:00:00+00:00")  # Monday
    add(ledger, pricer, "c", "2026-04-01T12:00:00+00:00")
    weeks = build(ledger, "weekly", UTC)
    assert [(b.key, b.line.requests) for b in weeks.buckets] == [
        ("2026-02-23", 1),
        ("2026-03-02", 1),
        ("2026-03-30", 1),
    ]
    months = build(ledger, "monthly", UTC)
    assert [(b.key, b.line.requests) for b in months.buckets] == [("2026-03", 2), ("2026-04", 1)]
    assert months.totals.requests == 3


def test_since_and_until_are_inclusive_local_days(ledger, pricer):
    for i, day in enumerate(("2026-03-01", "2026-03-02", "2026-03-03")):
        add(ledger, pricer, str(i), f"{day}T12:00:00+00:00")
    rep = build(ledger, "daily", UTC, since=date(2026, 3, 2), until=date(2026, 3, 2))
    assert [b.key for b in rep.buckets] == ["2026-03-02"]
    assert rep.totals.requests == 1


def test_sessions_and_models(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-01T12:00:00+00:00", session="s1", project="/a")
    add(ledger, pricer, "b", "2026-03-02T12:00:00+00:00", session="s2", project="/b", model="claude-haiku-4-5")
    add(ledger, pricer, "c", "2026-03-03T12:00:00+00:00", session="s1", project="/a", out=1000)
    sessions = build(ledger, "session", UTC)
    assert [(b.key, b.project, b.line.requests) for b in sessions.buckets] == [("s2", "/b", 1), ("s1", "/a", 2)]
    assert sessions.buckets[1].last_activity == datetime(2026, 3, 3, 12, tzinfo=UTC)
    models = build(ledger, "models", UTC)
    assert [(b.key, b.line.output) for b in models.buckets] == [("claude-sonnet-4-5", 1100), ("claude-haiku-4-5", 100)]


def test_fast_mode_requests_are_their_own_model_line(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-01T12:00:00+00:00", model="claude-opus-4-6", speed="fast", out=300)
    add(ledger, pricer, "b", "2026-03-01T13:00:00+00:00", model="claude-opus-4-6", speed="standard")
    add(ledger, pricer, "c", "2026-03-01T14:00:00+00:00", model="claude-opus-4-6")
    models = build(ledger, "models", UTC)
    assert {b.key: (b.line.requests, b.line.output) for b in models.buckets} == {
        "claude-opus-4-6 (fast)": (1, 300),
        "claude-opus-4-6": (2, 200),
    }
    day = build(ledger, "daily", UTC).as_json()["daily"][0]
    assert [m["modelName"] for m in day["modelBreakdowns"]] == ["claude-opus-4-6", "claude-opus-4-6 (fast)"]


def test_unknown_cost_is_null_never_zero(ledger, pricer):
    add(ledger, pricer, "u", "2026-03-01T12:00:00+00:00", model="unknown-model")
    add(ledger, pricer, "k", "2026-03-02T12:00:00+00:00")
    data = build(ledger, "daily", UTC).as_json()
    first, second = data["daily"]
    assert first["totalCost"] is None and first["unpricedRequests"] == 1
    assert second["totalCost"] == "0.00011" and second["unpricedRequests"] == 0
    assert data["totals"]["totalCost"] == "0.00011" and data["totals"]["unpricedRequests"] == 1
    assert build(ledger, "daily", UTC).totals.cost == Decimal("0.00011")


def test_a_usage_row_without_requests_and_without_a_price_is_unknown_beside_a_priced_request(ledger, pricer):
    # A provider's usage bucket carries no request count; with no price its cost is unknown, never $0.
    bucket = UsageRecord(
        source="anthropic_usage_api", provider="anthropic", model="unknown-model",
        timestamp=datetime.fromisoformat("2026-03-01T12:00:00+00:00"), dedup_key="bucket",
        tokens=Tokens(input=500), requests=0, replace=True,
    )  # fmt: skip
    ledger.commit([bucket], pricer)
    alone = build(ledger, "daily", UTC)
    assert alone.buckets[0].line.cost is None and _fmt_cost(alone.buckets[0].line) == "unknown"
    assert alone.as_json()["totals"]["totalCost"] is None and alone.as_json()["totals"]["unpricedRequests"] == 1
    add(ledger, pricer, "k", "2026-03-01T13:00:00+00:00")  # a priced request in the same day
    rep = build(ledger, "daily", UTC)
    [day] = rep.buckets
    assert _fmt_cost(day.line) == "$0.00 + ?" and day.line.cost == Decimal("0.00011")
    data = rep.as_json()["daily"][0]
    assert (data["totalCost"], data["unpricedRequests"], data["requests"]) == ("0.00011", 1, 1)
    by_model = {m["modelName"]: m["totalCost"] for m in data["modelBreakdowns"]}
    assert by_model == {"unknown-model": None, "claude-sonnet-4-5": "0.00011"}


def test_bad_timezone_and_dates_name_the_flag():
    with pytest.raises(ConfigError, match="--timezone"):
        resolve_tz("Mars/Olympus")
    with pytest.raises(ConfigError, match="--since"):
        parse_day("03/02/2026", "--since")
    assert parse_day("20260302", "--until") == date(2026, 3, 2)


# Europe/Berlin: CET (+01:00) until 2026-03-29 01:00 UTC, CEST (+02:00) until 2026-10-25 01:00 UTC.
DST_SIDES = {
    "2026-03-28T22:30:00+00:00": "2026-03-28",  # 23:30 CET
    "2026-03-29T22:30:00+00:00": "2026-03-30",  # 00:30 CEST
    "2026-10-24T22:30:00+00:00": "2026-10-25",  # 00:30 CEST
    "2026-10-25T22:30:00+00:00": "2026-10-25",  # 23:30 CET
}


def test_default_zone_uses_the_system_zones_rules_on_both_sides_of_dst(ledger, pricer, tz_env):
    tz_env("Europe/Berlin")
    for i, ts in enumerate(DST_SIDES):
        add(ledger, pricer, str(i), ts)
    rep = build(ledger, "daily", resolve_tz(None))
    assert rep.timezone == "Europe/Berlin"
    assert {b.key: b.line.requests for b in rep.buckets} == {"2026-03-28": 1, "2026-03-30": 1, "2026-10-25": 2}
    # --since/--until are local days with the rules of that day too.
    spring = build(ledger, "daily", resolve_tz(None), since=date(2026, 3, 30), until=date(2026, 3, 30))
    assert spring.totals.requests == 1


def test_dates_at_the_ends_of_the_calendar_mean_no_bound(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T12:00:00+00:00")
    for tz in (UTC, ZoneInfo("Asia/Tokyo"), ZoneInfo("America/Los_Angeles")):
        rep = build(ledger, "daily", tz, since=date(1, 1, 1), until=date(9999, 12, 31))
        assert rep.totals.requests == 1


def test_since_after_until_is_a_config_error_naming_both(ledger):
    with pytest.raises(ConfigError) as err:
        build(ledger, "daily", UTC, since=date(2026, 3, 5), until=date(2026, 3, 1))
    assert str(err.value) == "--since/--until: --since 2026-03-05 is after --until 2026-03-01"
    assert build(ledger, "daily", UTC, since=date(2026, 3, 5), until=date(2026, 3, 5)).totals.requests == 0


def mixed(ledger, pricer):
    """Two days; day one spans two sources, two providers, two projects and two sessions."""
    add(ledger, pricer, "a", "2026-03-02T09:00:00+00:00", out=100, session="s1", project="/a")
    add(
        ledger,
        pricer,
        "b",
        "2026-03-02T10:00:00+00:00",
        out=300,
        session="s2",
        project="/b",
        model="gpt-5",
        source="codex",
        provider="openai",
    )
    add(ledger, pricer, "c", "2026-03-02T11:00:00+00:00", out=50, session="s1", project="/a", model="claude-haiku-4-5")
    add(ledger, pricer, "d", "2026-03-03T09:00:00+00:00", out=10, session=None, project=None)  # fmt: skip


@pytest.mark.parametrize(
    ("by", "day_one"),
    [
        ("source", {"codex": 310, "claude_transcripts": 170}),
        ("provider", {"openai": 310, "anthropic": 170}),
        ("model", {"gpt-5": 310, "claude-sonnet-4-5": 110, "claude-haiku-4-5": 60}),
        ("project", {"/b": 310, "/a": 170}),
        ("session", {"s2": 310, "s1": 170}),
    ],
)
def test_by_splits_each_period_by_the_dimension_largest_first(ledger, pricer, by, day_one):
    mixed(ledger, pricer)
    rep = build(ledger, "daily", UTC, by=by)
    first, second = rep.buckets
    assert [(g.key, g.line.total) for g in first.ordered_groups()] == list(day_one.items())
    assert sum(g.line.requests for g in first.groups.values()) == first.line.requests == 3
    assert len(second.groups) == 1 and second.line.total == 20
    if by in ("project", "session"):
        assert list(second.groups) == ["(none)"]  # a missing value is a group of its own, not dropped
    assert rep.totals.requests == 4


def test_every_json_row_carries_provider_and_source_lists_when_spanning_several(ledger, pricer):
    mixed(ledger, pricer)
    data = build(ledger, "daily", UTC, by="project").as_json()
    assert data["by"] == "project"
    day_one, day_two = data["daily"]
    assert (day_one["provider"], day_one["source"]) == (["anthropic", "openai"], ["claude_transcripts", "codex"])
    assert (day_two["provider"], day_two["source"]) == ("anthropic", "claude_transcripts")
    assert [(g["project"], g["provider"], g["source"], g["outputTokens"]) for g in day_one["groups"]] == [
        ("/b", "openai", "codex", 300),
        ("/a", "anthropic", "claude_transcripts", 150),
    ]
    for row in [*day_one["groups"], *day_one["modelBreakdowns"], data["totals"]]:
        assert "provider" in row and "source" in row
    assert data["totals"]["source"] == ["claude_transcripts", "codex"]
    models = build(ledger, "models", UTC, by="source").as_json()
    assert {m["model"]: m["source"] for m in models["models"]}["gpt-5"] == "codex"
    assert all("modelBreakdowns" not in g for m in models["models"] for g in m["groups"])
    assert "by" not in build(ledger, "daily", UTC).as_json()


def test_by_works_for_every_report_kind(ledger, pricer):
    mixed(ledger, pricer)
    for kind in ("weekly", "monthly", "session", "models"):
        rep = build(ledger, kind, UTC, by="source" if kind != "models" else "provider")
        assert sum(g.line.requests for b in rep.buckets for g in b.groups.values()) == 4
    sessions = build(ledger, "session", UTC, by="model")
    s1 = next(b for b in sessions.buckets if b.key == "s1")
    assert sorted(s1.groups) == ["claude-haiku-4-5", "claude-sonnet-4-5"] and s1.project == "/a"


@pytest.mark.parametrize(("kind", "by"), [("models", "model"), ("session", "session"), ("daily", "colour")])
def test_by_that_adds_nothing_or_is_unknown_names_the_flag(ledger, kind, by):
    with pytest.raises(ConfigError, match=r"^--by: "):
        build(ledger, kind, UTC, by=by)


def test_session_project_is_where_the_session_started(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00", project="/home/dev/app")
    add(ledger, pricer, "b", "2026-03-02T11:00:00+00:00", project="/home/dev/app/sub")  # it cd'ed later
    [s] = build(ledger, "session", UTC).buckets
    assert s.project == "/home/dev/app"


def test_by_project_puts_a_whole_session_in_the_project_it_started_in(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00", project="/home/dev/app", out=10)
    add(ledger, pricer, "b", "2026-03-02T11:00:00+00:00", project="/home/dev/app/sub", out=5)  # cd'ed
    add(ledger, pricer, "c", "2026-03-02T12:00:00+00:00", project="/other", session="s2", out=1)
    rep = build(ledger, "daily", UTC, by="project")
    assert {k: g.line.output for k, g in rep.buckets[0].groups.items()} == {"/home/dev/app": 15, "/other": 1}
