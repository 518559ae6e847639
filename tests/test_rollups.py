"""The rollup tables (bridge/_rollups.py) always equal the rows they sum up.

Random ledgers are built through the ledger's own entry points (commits with streamed
duplicates, sidechain replays before and after their parent, Claude Code's events of the same
requests before and after their lines, replaced buckets, retractions,
repricing, restarts) and after every step the rollups are compared with a rebuild from the rows
and the reports answered from them with the reports answered from the rows.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge import _rollups
from bridge.ledger import SCHEMA_VERSION, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.report import build

T0 = datetime(2026, 3, 7, tzinfo=UTC)  # the data spans the US switch to summer time (March 8)


class Pricer:
    """$1 per million tokens; no price for ``unknown-*`` models until ``known`` is set."""

    known = False

    def cost(self, provider: str, model: str, tokens: Tokens, at: Any = None, extras: Any = None) -> Decimal | None:
        if model.startswith("unknown-") and not self.known:
            return None
        return Decimal(tokens.total) / Decimal(1_000_000)


def _record(rng: random.Random, i: int) -> UsageRecord:
    n = rng.randrange(40)
    group = f"msg_{n}"
    rid = rng.choice(["r1", "r2"])
    # One time per request (first-seen wins anyway); distinct, so "earliest" never ties (the two
    # requests of a message half a second apart).
    ts = T0 + timedelta(minutes=37 * n + rng.choice([0, 0, 0, 3000]), seconds=n + (0.5 if rid == "r2" else 0))
    if rng.random() < 0.1:  # a provider bucket, re-polled: replaces its stored state
        b = rng.randrange(6)  # buckets 4 and 5: a model without a price, often without a request count
        return UsageRecord(
            "openai_api", "openai", "unknown-o" if b > 3 else "gpt-5", T0 + timedelta(hours=rng.randrange(5)),
            f"bucket:{b}", Tokens(rng.randrange(1000), rng.randrange(100)), requests=rng.choice([0, 0, 3]),
            replace=True,
        )  # fmt: skip
    if rng.random() < 0.12:  # Claude Code's api_request event of the same request: no group, no project
        return UsageRecord(
            "claude_code_events", "anthropic", rng.choice(["claude-a", "unknown-x"]),
            ts + timedelta(seconds=rng.choice([-1, 0, 2])), f"cc:{group}:{rid}", Tokens(rng.randrange(60), 9),
            session_id=rng.choice(["s1", "s2", None]), speed=rng.choice([None, "fast"]),
        )  # fmt: skip
    reported = rng.random() < 0.15
    cc = rng.randrange(30)
    return UsageRecord(
        "claude_transcripts",
        "anthropic",
        rng.choice(["claude-a", "claude-b", "unknown-x"]),
        ts,
        f"cc:{group}:{rid}",
        Tokens(rng.randrange(50), rng.randrange(50) + i % 7, rng.randrange(50), cc, rng.randrange(cc + 1)),
        Decimal(rng.randrange(1, 99)) / 1000 if reported else None,
        CostOrigin.REPORTED if reported else CostOrigin.UNKNOWN,
        rng.choice(["s1", "s2", "s3", None]),
        rng.choice(["/p/a", "/p/b", None]),
        group,
        rng.random() < 0.3,
        speed=rng.choice([None, None, None, "fast"]),
    )


def _tables(db: sqlite3.Connection) -> dict[str, set[tuple[Any, ...]]]:
    return {t: set(db.execute(f"SELECT * FROM {t}")) for t in ("rollup_quarter", "rollup_session")}


def _rebuilt(db: sqlite3.Connection) -> dict[str, set[tuple[Any, ...]]]:
    db.execute("SAVEPOINT check_rollups")
    try:
        _rollups.rebuild_quarters(db)
        _rollups.rebuild_sessions(db)
        return _tables(db)
    finally:
        db.execute("ROLLBACK TO check_rollups")
        db.execute("RELEASE check_rollups")


def _strip_info(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows without the session head's "last|project" text (its project part may differ: the
    report replaces it with ``session_projects``, compared separately)."""
    return sorted(((*r[:3], None if r[3] is None else str(r[3]).split("|")[0], *r[4:]) for r in rows), key=repr)


def _assert_consistent(led: Ledger) -> None:
    assert _tables(led._db) == _rebuilt(led._db)
    # Every row is an entry (priced or not): a series without any is one whose rows all left.
    assert [t for t in led.totals() if t.unpriced or t.priced] == led.recomputed_totals()
    for group in ("quarter", "session"):
        for extra in ([], ["source"]):
            for sources in (None, ["claude_transcripts"]):
                fast = led.aggregate(group, None, None, sources, extra)
                assert _strip_info(fast) == _strip_info(led.aggregate_rows(group, None, None, sources, extra))
    since, until = int(T0.timestamp() * 1000) + 3_600_000, int(T0.timestamp() * 1000) + 30 * 3_600_000
    assert sorted(led.aggregate("quarter", since, until, None, ["source"])) == sorted(
        led.aggregate_rows("quarter", since, until, None, ["source"])
    )
    assert led.session_projects() == led.session_projects_rows()


@pytest.mark.parametrize("seed", range(6))
def test_rollups_equal_the_rows_after_random_commits_retractions_repricing_and_restarts(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    pricer = Pricer()
    led = Ledger.open(tmp_path)
    try:
        for step in range(40):
            batch = [_record(rng, step * 100 + i) for i in range(rng.randrange(1, 15))]
            led.commit(batch, pricer)
            if rng.random() < 0.1:
                led.retract("openai_api", int((T0 + timedelta(hours=rng.randrange(5))).timestamp() * 1000))
            if rng.random() < 0.05:
                pricer.known = True
                led.reprice_unknown(pricer)
            if rng.random() < 0.2:  # a restart
                led.close()
                led = Ledger.open(tmp_path)
            _assert_consistent(led)
        assert led.request_count() > 0
    finally:
        led.close()


def _bucket(key: str, model: str, day: int, requests: int = 0, out: int = 10) -> UsageRecord:
    """A provider's usage bucket: tokens, often without a request count (Anthropic's usage report)."""
    return UsageRecord(
        "anthropic_usage_api", "anthropic", model, T0 + timedelta(days=day, hours=10), key, Tokens(1000, out),
        requests=requests, replace=True,
    )  # fmt: skip


def _line(key: str, model: str, day: int, session: str = "s1") -> UsageRecord:
    return UsageRecord(
        "claude_transcripts", "anthropic", model, T0 + timedelta(days=day, hours=11), key, Tokens(1_000_000, 0),
        session_id=session, project="/p/a",
    )  # fmt: skip


def test_unpriced_rows_without_requests_are_unknown_in_rollups_as_in_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 0: only a bucket without a price or a request count (cost unknown, never $0); day 1: a
    priced line and such a bucket ($1 + ?); day 2: a priced line only."""
    from bridge.cli import _fmt_cost

    used: list[str] = []
    real = _rollups.aggregate
    monkeypatch.setattr(_rollups, "aggregate", lambda *a: used.append(a[1]) or real(*a))
    with Ledger.open(tmp_path) as led:
        led.commit(
            [_bucket("b0", "unknown-u", 0), _bucket("b1", "unknown-u", 1), _line("l1", "claude-a", 1),
             _line("l2", "claude-a", 2, session="s2")],
            Pricer(),
        )  # fmt: skip
        for group in ("quarter", "session"):
            for extra in ([], ["source"]):
                assert sorted(led.aggregate(group, extra=extra), key=repr) == sorted(
                    led.aggregate_rows(group, extra=extra), key=repr
                )
        rolled = {(r[0], r[1]): r[4:] for r in led.aggregate("quarter")}
        q0 = int((T0 + timedelta(hours=10)).timestamp()) // 900
        assert rolled[(q0, "unknown-u")] == (1000, 10, 0, 0, None, 1, 0)  # one unpriced entry, cost NULL
        by_session = {(r[0], r[1]): (r[8], r[9]) for r in led.aggregate("session")}
        assert by_session == {
            ("", "unknown-u"): (None, 2),
            ("s1", "claude-a"): (10**12, 0),
            ("s2", "claude-a"): (10**12, 0),
        }  # pusd: $1 each
        daily = build(led, "daily", UTC)
        models = build(led, "models", UTC)
    assert used.count("quarter") >= 2  # both reports were answered from the rollups
    days = {b.key: b.line for b in daily.buckets}
    assert [(k, line.cost, line.unpriced, _fmt_cost(line)) for k, line in sorted(days.items())] == [
        ("2026-03-07", None, 1, "unknown"),
        ("2026-03-08", Decimal(1), 1, "$1.00 + ?"),
        ("2026-03-09", Decimal(1), 0, "$1.00"),
    ]
    assert daily.as_json()["daily"][0]["totalCost"] is None
    assert (daily.totals.cost, daily.totals.unpriced, _fmt_cost(daily.totals)) == (Decimal(2), 2, "$2.00 + ?")
    assert {b.key: b.line.cost for b in models.buckets} == {"unknown-u": None, "claude-a": Decimal(2)}


def test_fallback_rows_that_give_way_to_their_sessions_primary_rows_leave_the_rollups(tmp_path: Path) -> None:
    def rec(key: str, session: str, day: int) -> UsageRecord:
        return replace(_line(key, "claude-a", day, session), source="openclaw")

    with Ledger.open(tmp_path) as led:
        led.commit([rec("fb:a:1", "a", 0), rec("fb:b:1", "b", 1)], Pricer(), fallback="fb:")
        led.commit([rec("a-1", "a", 2)], Pricer(), fallback="fb:")  # session a's fallback row goes
        assert {r[0]: r[4] for r in led.aggregate("session")} == {"a": 1_000_000, "b": 1_000_000}
        assert len(led.aggregate("quarter")) == 2
        _assert_consistent(led)


# Schema 3's totals: unpriced counted the requests of rows without a cost (0 for a bucket without
# a request count) and had no priced column.
_V3_TOTALS = (
    "ALTER TABLE totals DROP COLUMN priced; "
    "UPDATE totals SET unpriced = COALESCE((SELECT SUM(CASE WHEN u.cost_pusd IS NULL THEN u.requests ELSE 0 END) "
    "FROM usage u WHERE u.source = totals.source AND u.provider = totals.provider AND u.model = totals.model "
    "AND COALESCE(u.session_id, '') = totals.session_id), 0); "
)
# The perf branch's schema 4 rollups: no priced column, unpriced counted by requests.
_PERF_V4_ROLLUPS = f"""
CREATE TABLE rollup_quarter (
    quarter INTEGER NOT NULL, source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cost_pusd INTEGER NOT NULL, unpriced INTEGER NOT NULL,
    requests INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (quarter, source, provider, model)
) WITHOUT ROWID;
CREATE TABLE rollup_session (
    session_id TEXT NOT NULL, source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cost_pusd INTEGER NOT NULL, unpriced INTEGER NOT NULL,
    requests INTEGER NOT NULL, n INTEGER NOT NULL,
    last_ms INTEGER NOT NULL, start_ms INTEGER, start_project TEXT,
    PRIMARY KEY (session_id, source, provider, model)
) WITHOUT ROWID;
INSERT INTO rollup_quarter SELECT ts_ms / 900000, source, provider, {_rollups.LABEL_SQL}, SUM(input), SUM(output),
    SUM(cache_read), SUM(cache_creation), COALESCE(SUM(cost_pusd), 0),
    SUM(CASE WHEN cost_pusd IS NULL THEN requests ELSE 0 END), SUM(requests), COUNT(*) FROM usage GROUP BY 1, 2, 3, 4;
INSERT INTO rollup_session SELECT COALESCE(session_id, ''), source, provider, {_rollups.LABEL_SQL}, SUM(input),
    SUM(output), SUM(cache_read), SUM(cache_creation), COALESCE(SUM(cost_pusd), 0),
    SUM(CASE WHEN cost_pusd IS NULL THEN requests ELSE 0 END), SUM(requests), COUNT(*), MAX(ts_ms), MIN(ts_ms),
    MIN(project) FROM usage GROUP BY 1, 2, 3, 4;
"""
_OLD_SHAPES = {
    "3": _V3_TOTALS + "DROP TABLE rollup_quarter; DROP TABLE rollup_session; ",
    "4-perf": _V3_TOTALS + "DROP TABLE rollup_quarter; DROP TABLE rollup_session; " + _PERF_V4_ROLLUPS,
    "4-unpriced": "DROP TABLE rollup_quarter; DROP TABLE rollup_session; ",  # priced totals, no rollups
}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}


@pytest.mark.parametrize("shape", sorted(_OLD_SHAPES))
def test_an_older_ledger_gets_every_step_it_lacks_totals_recounted_and_rollups_rebuilt(
    tmp_path: Path, shape: str
) -> None:
    """A ledger of each older shape, written by hand from a current one, opens with the totals
    and rollups the current one had, equal to a rebuild from its rows."""
    rng = random.Random(3)
    with Ledger.open(tmp_path) as led:
        led.commit([_record(rng, i) for i in range(200)], Pricer())
        led.commit(
            [_bucket("b0", "unknown-u", 0), _bucket("b1", "unknown-u", 1, requests=4), _bucket("b5", "unknown-v", 2)],
            Pricer(),
        )
        led.commit([_bucket("gone", "unknown-g", 0)], Pricer())
        led._db.execute("UPDATE usage SET source='gone_api' WHERE dedup_key='gone'")  # a series of its own ...
        led._db.execute("UPDATE totals SET source='gone_api' WHERE model='unknown-g'")
        led._db.execute("UPDATE rollup_quarter SET source='gone_api' WHERE model='unknown-g'")
        led._db.execute("UPDATE rollup_session SET source='gone_api' WHERE model='unknown-g'")
        assert led.retract("gone_api", 0) == 1  # ... whose rows are gone: a row of zeros in the totals
        _assert_consistent(led)
        want_totals, want_rollups = led.totals(), _tables(led._db)
    assert [(t.unpriced, t.requests) for t in want_totals if t.model == "unknown-v"] == [(1, 0)]
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript(_OLD_SHAPES[shape] + f"UPDATE meta SET value='{shape[0]}' WHERE key='schema_version';")
    if shape != "4-unpriced":  # the old count: an unpriced bucket without requests read as $0
        assert (
            con.execute("SELECT unpriced FROM totals WHERE model='unknown-u' AND source LIKE 'anthropic%'").fetchone()[
                0
            ]
            == 4
        )
    con.close()
    with Ledger.open(tmp_path) as led:
        assert led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert {"priced"} <= _columns(led._db, "totals") & _columns(led._db, "rollup_quarter")
        assert "priced" in _columns(led._db, "rollup_session")
        assert led.totals() == want_totals
        assert _tables(led._db) == want_rollups
        _assert_consistent(led)
        led.commit([_bucket("b2", "unknown-u", 2), _line("l9", "claude-a", 2)], Pricer())  # and they go on
        _assert_consistent(led)


@pytest.mark.parametrize("kind", ["daily", "weekly", "monthly", "session", "models"])
@pytest.mark.parametrize("tz", ["UTC", "Asia/Kolkata", "America/St_Johns", "America/New_York"])
def test_reports_from_rollups_equal_reports_from_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, tz: str
) -> None:
    from zoneinfo import ZoneInfo

    rng = random.Random(5)
    with Ledger.open(tmp_path) as led:
        for step in range(10):
            led.commit([_record(rng, step * 50 + i) for i in range(30)], Pricer())
        fast = build(led, kind, ZoneInfo(tz)).as_json()
        used: list[str] = []
        real = _rollups.aggregate

        def spy(*args: Any) -> Any:
            used.append(args[1])
            return real(*args)

        monkeypatch.setattr(_rollups, "aggregate", spy)
        assert build(led, kind, ZoneInfo(tz)).as_json() == fast
        assert used  # the report was answered from the rollups ...
        monkeypatch.setattr(_rollups, "aggregate", lambda *a: None)
        assert build(led, kind, ZoneInfo(tz)).as_json() == fast  # ... exactly as from the rows


@pytest.mark.parametrize("zone", ["Europe/London", "America/St_Johns", "Australia/Lord_Howe", "Asia/Kathmandu"])
def test_offset_spans_match_each_quarters_own_offset(zone: str) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    lo = int(datetime(2025, 12, 20, tzinfo=UTC).timestamp()) // 900
    hi = lo + 96 * 400  # over a year: both switches where the zone has them
    spans = _rollups._offset_spans(tz, lo, hi)
    assert spans is not None
    start = lo
    for end, off in spans:
        for q in range(start, end, 7):
            got = datetime.fromtimestamp(q * 900, UTC).astimezone(tz).utcoffset()
            assert got is not None and got.total_seconds() == off * 900, (q, start, end)
        start = end
    assert start == hi + 1
