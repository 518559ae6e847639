"""The rollup tables (bridge/_rollups.py) always equal the rows they sum up.

Random ledgers are built through the ledger's own entry points (commits with streamed
duplicates, sidechain replays before and after their parent, replaced buckets, retractions,
repricing, restarts) and after every step the rollups are compared with a rebuild from the rows
and the reports answered from them with the reports answered from the rows.
"""

from __future__ import annotations

import random
import sqlite3
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
    # One time per request (first-seen wins anyway); distinct, so "earliest" never ties.
    ts = T0 + timedelta(minutes=37 * n + rng.choice([0, 0, 0, 3000]), seconds=n)
    if rng.random() < 0.1:  # a provider bucket, re-polled: replaces its stored state
        return UsageRecord(
            "openai_api", "openai", "gpt-5", T0 + timedelta(hours=rng.randrange(5)), f"bucket:{rng.randrange(4)}",
            Tokens(rng.randrange(1000), rng.randrange(100)), requests=rng.randrange(0, 9), replace=True,
        )  # fmt: skip
    reported = rng.random() < 0.15
    cc = rng.randrange(30)
    return UsageRecord(
        "claude_transcripts",
        "anthropic",
        rng.choice(["claude-a", "claude-b", "unknown-x"]),
        ts,
        f"cc:{group}:{rng.choice(['r1', 'r2'])}",
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


def test_a_schema_3_ledger_gets_its_rollups_filled_from_its_rows(tmp_path: Path) -> None:
    rng = random.Random(3)
    with Ledger.open(tmp_path) as led:
        led.commit([_record(rng, i) for i in range(200)], Pricer())
        before = _tables(led._db)
        assert before["rollup_quarter"] and before["rollup_session"]
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript(
        "DROP TABLE rollup_quarter; DROP TABLE rollup_session; UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    con.close()
    with Ledger.open(tmp_path) as led:
        assert led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert _tables(led._db) == before
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
