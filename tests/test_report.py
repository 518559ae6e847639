"""Reports: time-zone buckets, periods, sessions, models, unknown costs."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.errors import ConfigError
from bridge.record import Tokens, UsageRecord
from bridge.report import build, parse_day, resolve_tz, system_tz


def add(ledger, pricer, key, ts, model="claude-sonnet-4-5", out=100, session="s1", project="/p"):
    ledger.commit(
        [
            UsageRecord(
                source="claude_transcripts",
                provider="anthropic",
                model=model,
                timestamp=datetime.fromisoformat(ts),
                dedup_key=key,
                tokens=Tokens(input=10, output=out),
                session_id=session,
                project=project,
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


def test_unknown_cost_is_null_never_zero(ledger, pricer):
    add(ledger, pricer, "u", "2026-03-01T12:00:00+00:00", model="unknown-model")
    add(ledger, pricer, "k", "2026-03-02T12:00:00+00:00")
    data = build(ledger, "daily", UTC).as_json()
    first, second = data["daily"]
    assert first["totalCost"] is None and first["unpricedRequests"] == 1
    assert second["totalCost"] == "0.00011" and second["unpricedRequests"] == 0
    assert data["totals"]["totalCost"] == "0.00011" and data["totals"]["unpricedRequests"] == 1
    assert build(ledger, "daily", UTC).totals.cost == Decimal("0.00011")


def test_bad_timezone_and_dates_name_the_flag():
    with pytest.raises(ConfigError, match="--timezone"):
        resolve_tz("Mars/Olympus")
    with pytest.raises(ConfigError, match="--since"):
        parse_day("03/02/2026", "--since")
    assert parse_day("20260302", "--until") == date(2026, 3, 2)


def test_session_project_is_where_the_session_started(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00", project="/home/dev/app")
    add(ledger, pricer, "b", "2026-03-02T11:00:00+00:00", project="/home/dev/app/sub")  # it cd'ed later
    [s] = build(ledger, "session", UTC).buckets
    assert s.project == "/home/dev/app"


def test_by_project_splits_each_day_and_sums_exactly(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00", project="/shop", out=100)
    add(ledger, pricer, "b", "2026-03-02T11:00:00+00:00", project="/blog", out=7, session="s2")
    add(ledger, pricer, "c", "2026-03-03T11:00:00+00:00", project=None, out=1, session="s3")
    rep = build(ledger, "daily", UTC, by="project")
    got = {b.key: {k: v.output for k, v in b.by.items()} for b in rep.buckets}
    assert got == {"2026-03-02": {"/shop": 100, "/blog": 7}, "2026-03-03": {"(none)": 1}}
    item = rep.as_json()["daily"][0]
    assert [(p["project"], p["outputTokens"]) for p in item["projectBreakdowns"]] == [("/blog", 7), ("/shop", 100)]
    assert rep.totals.output == 108


def test_by_source_and_unknown_dimension(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00")
    rep = build(ledger, "monthly", UTC, by="source")
    assert list(rep.buckets[0].by) == ["claude_transcripts"]
    with pytest.raises(ConfigError, match="--by"):
        build(ledger, "daily", UTC, by="colour")


# Europe/Berlin: CET (+01:00) until 2026-03-29 01:00 UTC, CEST (+02:00) until 2026-10-25 01:00 UTC.
DST_SIDES = {
    "2026-03-28T22:30:00+00:00": "2026-03-28",  # 23:30 CET
    "2026-03-29T22:30:00+00:00": "2026-03-30",  # 00:30 CEST
    "2026-10-24T22:30:00+00:00": "2026-10-25",  # 00:30 CEST
    "2026-10-25T22:30:00+00:00": "2026-10-25",  # 23:30 CET
}


@pytest.fixture
def tz_env(monkeypatch):
    """Set TZ for this process (and the C library) and restore both afterwards."""

    def set_tz(value: str) -> None:
        monkeypatch.setenv("TZ", value)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


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


@pytest.mark.parametrize(
    ("tz", "key"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        (":Asia/Tokyo", "Asia/Tokyo"),
        ("/usr/share/zoneinfo/Asia/Kolkata", "Asia/Kolkata"),
    ],
)
def test_tz_variable_names_the_zone(tz, key):
    assert system_tz({"TZ": tz}) == ZoneInfo(key)


def test_empty_tz_is_utc_as_for_the_c_library():
    assert system_tz({"TZ": ""}) is UTC


def test_tz_that_is_no_zone_name_falls_back_to_an_offset_with_a_warning(caplog, tz_env):
    tz_env("UTC")
    with caplog.at_level("WARNING", logger="tokenbridge"):
        zone = system_tz({"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"})
    assert zone.utcoffset(datetime(2026, 7, 1)) is not None and not isinstance(zone, ZoneInfo)
    assert "TZ='CET-1CEST,M3.5.0,M10.5.0/3' is not an IANA time zone name" in caplog.text


def test_localtime_symlink_names_the_zone(tmp_path):
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo"
    for key in ("America/New_York", "posix/Europe/Berlin"):
        (zoneinfo / key).parent.mkdir(parents=True, exist_ok=True)
        (zoneinfo / key).write_bytes(b"")  # only the link's name matters
    absolute, relative, posix = tmp_path / "lt1", tmp_path / "etc" / "lt2", tmp_path / "lt3"
    relative.parent.mkdir()
    absolute.symlink_to(zoneinfo / "America/New_York")
    relative.symlink_to("../usr/share/zoneinfo/America/New_York")
    posix.symlink_to(zoneinfo / "posix/Europe/Berlin")
    absent = tmp_path / "no-timezone"
    assert system_tz({}, absolute, absent) == ZoneInfo("America/New_York")
    assert system_tz({}, relative, absent) == ZoneInfo("America/New_York")
    assert system_tz({}, posix, absent) == ZoneInfo("Europe/Berlin")


def test_etc_timezone_then_the_rules_in_localtime_then_an_offset(tmp_path):
    named = tmp_path / "timezone"
    named.write_text("Asia/Kolkata\n")
    assert system_tz({}, tmp_path / "absent", named) == ZoneInfo("Asia/Kolkata")
    copied = tmp_path / "localtime"  # a copy, not a link: the rules without a name
    copied.write_bytes(Path("/usr/share/zoneinfo/Europe/Berlin").read_bytes())
    zone = system_tz({}, copied, tmp_path / "absent")
    assert zone.utcoffset(datetime(2026, 1, 15)) == timedelta(hours=1)
    assert zone.utcoffset(datetime(2026, 7, 15)) == timedelta(hours=2)
    last = system_tz({}, tmp_path / "absent", tmp_path / "absent")
    assert last.utcoffset(None) is not None


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


def test_by_project_puts_a_whole_session_in_the_project_it_started_in(ledger, pricer):
    add(ledger, pricer, "a", "2026-03-02T10:00:00+00:00", project="/home/dev/app", out=10)
    add(ledger, pricer, "b", "2026-03-02T11:00:00+00:00", project="/home/dev/app/sub", out=5)  # cd'ed
    add(ledger, pricer, "c", "2026-03-02T12:00:00+00:00", project="/other", session="s2", out=1)
    rep = build(ledger, "daily", UTC, by="project")
    assert {k: v.output for k, v in rep.buckets[0].by.items()} == {"/home/dev/app": 15, "/other": 1}
