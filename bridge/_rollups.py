"""Pre-aggregated sums of the ledger's usage rows, kept in the same transaction as the rows.

Reports group every row by 15-minute bucket or by session; on a history of a few GB that is a
scan of hundreds of thousands of rows per report. Two rollup tables answer the default reports
from a few thousand rows instead:

* ``rollup_quarter``: sums per (15-minute bucket, source, provider, model label). Every real
  time zone offset is a multiple of 15 minutes, so local days, weeks and months are exact sums
  of buckets (as in ``Ledger.aggregate``).
* ``rollup_session``: sums per (session, source, provider, model label), with the last request's
  time and the session's first project (the project of its earliest row that has one).

The model label is the model, with `` (fast)`` for fast-mode rows (a line of its own in reports).
``unpriced`` and ``priced`` count entries as the running totals do (``_rows.entries``: a row
without a request count weighs 1), and ``aggregate`` gives a group without a priced entry a NULL
cost, as a SUM over its rows would: unknown, never $0. ``n`` counts the rows behind a rollup row;
a rollup row whose rows are all gone is deleted, so a rollup groups exactly what the rows would.

Sums move by the same deltas as the ledger's running totals. A maximum or minimum cannot be
undone by a delta: when a row leaves a session or changes its time or project, the session's
rollup rows are recomputed from its rows instead (rare: replays folded into their parent,
retractions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from operator import add
from typing import Any

from bridge._rows import PRICED_SQL, UNPRICED_SQL, Row, entries

QUARTER_MS = 900_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_quarter (
    quarter INTEGER NOT NULL, source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cost_pusd INTEGER NOT NULL, unpriced INTEGER NOT NULL,
    priced INTEGER NOT NULL, requests INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (quarter, source, provider, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_session (
    session_id TEXT NOT NULL, source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cost_pusd INTEGER NOT NULL, unpriced INTEGER NOT NULL,
    priced INTEGER NOT NULL, requests INTEGER NOT NULL, n INTEGER NOT NULL,
    last_ms INTEGER NOT NULL, start_ms INTEGER, start_project TEXT,
    PRIMARY KEY (session_id, source, provider, model)
) WITHOUT ROWID;
"""
# The model label in SQL over ``usage`` (the same expression as Ledger.aggregate's).
LABEL_SQL = "model || CASE WHEN speed = 'fast' THEN ' (fast)' ELSE '' END"
_SUMS_SQL = (
    "SUM(input), SUM(output), SUM(cache_read), SUM(cache_creation), COALESCE(SUM(cost_pusd), 0), "
    f"{UNPRICED_SQL}, {PRICED_SQL}, SUM(requests), COUNT(*)"
)
_NSUMS = 9  # the sums above, in a Rollups list: n (the rows behind a rollup row) is the last
_ADD = (
    "input=input+excluded.input, output=output+excluded.output, cache_read=cache_read+excluded.cache_read, "
    "cache_creation=cache_creation+excluded.cache_creation, cost_pusd=cost_pusd+excluded.cost_pusd, "
    "unpriced=unpriced+excluded.unpriced, priced=priced+excluded.priced, requests=requests+excluded.requests, "
    "n=n+excluded.n"
)
_EARLIER = "excluded.start_ms IS NOT NULL AND (start_ms IS NULL OR excluded.start_ms < start_ms)"


def _label(row: Row) -> str:
    return row.model + " (fast)" if row.speed == "fast" else row.model


def _sums(row: Row, sign: int) -> list[int]:
    t = row.tokens
    weight = sign * entries(row)  # the totals' weight: a row without a request count is one entry
    unpriced, priced = (weight, 0) if row.cost_pusd is None else (0, weight)
    return [
        sign * t.input, sign * t.output, sign * t.cache_read, sign * t.cache_creation,
        sign * (row.cost_pusd or 0), unpriced, priced, sign * row.requests, sign,
    ]  # fmt: skip


def _add_into(acc: list[Any], sums: list[int]) -> None:
    acc[: len(sums)] = map(add, acc[: len(sums)], sums)


class Rollups:
    """The rollup changes of one transaction: collected with ``add``/``replace``, written by
    ``apply`` after the usage rows are written."""

    def __init__(self) -> None:
        self.quarter: dict[tuple[int, str, str, str], list[int]] = {}
        # per key: the _NSUMS sums, last_ms, start_ms, start_project
        self.session: dict[tuple[str, str, str, str], list[Any]] = {}
        self.dirty: set[str] = set()  # sessions to recompute from their rows

    def add(self, row: Row, sign: int) -> None:
        """``row`` joins (+1) or leaves (-1) the ledger."""
        label = _label(row)
        sums = _sums(row, sign)
        key = (row.ts_ms // QUARTER_MS, row.source, row.provider, label)
        q = self.quarter.get(key)
        self.quarter[key] = sums if q is None else list(map(add, q, sums))
        session = row.session_id or ""
        if sign < 0:
            self.dirty.add(session)  # its last time or first project may have been this row's
            return
        skey = (session, row.source, row.provider, label)
        s = self.session.get(skey)
        if s is None:
            self.session[skey] = [*sums, row.ts_ms, row.ts_ms if row.project is not None else None, row.project]
            return
        s[:_NSUMS] = map(add, s[:_NSUMS], sums)
        s[_NSUMS] = max(s[_NSUMS], row.ts_ms)
        if row.project is not None and (s[_NSUMS + 1] is None or row.ts_ms < s[_NSUMS + 1]):
            s[_NSUMS + 1], s[_NSUMS + 2] = row.ts_ms, row.project

    def replace(self, old: Row, new: Row) -> None:
        """A stored row updated in place: with the same identity, only its sums move."""
        same = (old.ts_ms, old.session_id, old.project, old.source, old.provider, _label(old)) == (
            new.ts_ms, new.session_id, new.project, new.source, new.provider, _label(new),
        )  # fmt: skip
        if not same:
            self.add(old, -1)
            self.add(new, +1)
            return
        q = self.quarter.setdefault((new.ts_ms // QUARTER_MS, new.source, new.provider, _label(new)), [0] * _NSUMS)
        diff = [b - a for a, b in zip(_sums(old, 1), _sums(new, 1), strict=True)]
        _add_into(q, diff)
        key = (new.session_id or "", new.source, new.provider, _label(new))
        s = self.session.get(key)
        if s is None:
            s = self.session[key] = [*[0] * _NSUMS, new.ts_ms, None, None]
        _add_into(s, diff)

    def apply(self, db: sqlite3.Connection) -> None:
        if self.quarter:
            db.executemany(
                f"INSERT INTO rollup_quarter VALUES ({_marks(4 + _NSUMS)}) ON CONFLICT DO UPDATE SET {_ADD}",
                [(*k, *v) for k, v in self.quarter.items() if any(v)],
            )
            if any(v[_NSUMS - 1] < 0 for v in self.quarter.values()):
                db.execute("DELETE FROM rollup_quarter WHERE n <= 0")
        rows = [(*k, *v) for k, v in self.session.items() if k[0] not in self.dirty]
        if rows:
            db.executemany(
                f"INSERT INTO rollup_session VALUES ({_marks(7 + _NSUMS)}) ON CONFLICT DO UPDATE SET "
                f"{_ADD}, last_ms=MAX(last_ms, excluded.last_ms), "
                f"start_project=CASE WHEN {_EARLIER} THEN excluded.start_project ELSE start_project END, "
                f"start_ms=CASE WHEN {_EARLIER} THEN excluded.start_ms ELSE start_ms END",
                rows,
            )
        if self.dirty:
            rebuild_sessions(db, sorted(self.dirty))


def _marks(n: int) -> str:
    return ",".join("?" * n)


def recreate(db: sqlite3.Connection) -> None:
    """Both tables dropped, created with this schema and filled from the rows (a migration: an
    older table may lack a column or count differently)."""
    db.execute("DROP TABLE IF EXISTS rollup_quarter")
    db.execute("DROP TABLE IF EXISTS rollup_session")
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            db.execute(stmt)
    rebuild_quarters(db)
    rebuild_sessions(db)


def rebuild_quarters(db: sqlite3.Connection) -> None:
    """``rollup_quarter`` recomputed from every row (a migration, a check)."""
    db.execute("DELETE FROM rollup_quarter")
    db.execute(
        f"INSERT INTO rollup_quarter SELECT ts_ms / {QUARTER_MS}, source, provider, {LABEL_SQL}, {_SUMS_SQL} "
        "FROM usage GROUP BY 1, 2, 3, 4"
    )


def rebuild_sessions(db: sqlite3.Connection, sessions: Iterable[str] | None = None) -> None:
    """``rollup_session`` rows of ``sessions`` ("" is the rows without one; None: every session)
    recomputed from their rows."""
    if sessions is None:
        db.execute("DELETE FROM rollup_session")
        _insert_sessions(db, "1=1", [])
        return
    todo = list(sessions)
    for i in range(0, len(todo), 500):  # within SQLite's limit of bound parameters
        chunk = todo[i : i + 500]
        marks = ",".join("?" * len(chunk))
        db.execute(f"DELETE FROM rollup_session WHERE session_id IN ({marks})", chunk)
        _insert_sessions(db, f"COALESCE(session_id, '') IN ({marks})", chunk)


def _insert_sessions(db: sqlite3.Connection, where: str, params: list[str]) -> None:
    db.execute(
        f"INSERT INTO rollup_session SELECT COALESCE(session_id, ''), source, provider, {LABEL_SQL}, {_SUMS_SQL}, "
        f"MAX(ts_ms), NULL, NULL FROM usage WHERE {where} GROUP BY 1, 2, 3, 4",
        params,
    )
    # SQLite: with MIN() as the only aggregate, the bare column comes from the row holding it.
    starts = db.execute(
        f"SELECT project, MIN(ts_ms), COALESCE(session_id, ''), source, provider, {LABEL_SQL} FROM usage "
        f"WHERE {where} AND project IS NOT NULL GROUP BY 3, 4, 5, 6",
        params,
    ).fetchall()
    db.executemany(
        "UPDATE rollup_session SET start_project=?, start_ms=? WHERE session_id=? AND source=? AND provider=? "
        "AND model=?",
        starts,
    )


def aggregate(
    db: sqlite3.Connection,
    group: str,
    since_ms: int | None,
    until_ms: int | None,
    sources: Any,
    with_source: bool,
    days_in: tzinfo | None = None,
) -> list[tuple[Any, ...]] | None:
    """``Ledger.aggregate``'s rows from the rollups, or None when they cannot answer exactly
    (bounds that are not whole 15-minute buckets; a session report limited in time). With
    ``days_in``, quarter rows of one local day of that zone are merged (see ``_day_of``)."""
    where, params = ["1=1"], []  # type: list[str], list[Any]
    if group == "quarter":
        for bound, op in ((since_ms, ">="), (until_ms, "<")):
            if bound is None:
                continue
            if bound % QUARTER_MS:
                return None
            where.append(f"quarter {op} ?")
            params.append(bound // QUARTER_MS)
        day = _day_of(db, days_in) if days_in is not None else None
        head, table = f"{day or 'quarter'}, model, provider, NULL", "rollup_quarter"
    elif group == "session":
        if since_ms is not None or until_ms is not None:
            return None
        head, table = (
            "session_id, model, provider, MAX(last_ms) || '|' || COALESCE(MAX(start_project), '')",
            ("rollup_session"),
        )
    else:
        return None
    if sources is not None:
        where.append(f"source IN ({','.join('?' * len(sources))})")
        params.extend(sources)
    # The cost is NULL when no entry of the group is priced, as SUM over the rows gives it: unknown, never $0.
    cost = "CASE WHEN SUM(priced) = 0 THEN NULL ELSE SUM(cost_pusd) END"
    sums = f"SUM(input), SUM(output), SUM(cache_read), SUM(cache_creation), {cost}, SUM(unpriced), SUM(requests)"
    tail, by = (", source", "1, 2, 3, 12") if with_source else ("", "1, 2, 3")
    q = f"SELECT {head}, {sums}{tail} FROM {table} WHERE {' AND '.join(where)} GROUP BY {by}"
    return list(db.execute(q, params))


def _day_of(db: sqlite3.Connection, tz: tzinfo) -> str | None:
    """SQL mapping a quarter to one quarter of its local day in ``tz`` (its local noon: a switch
    of offset happens at night, so noon computed with either offset is on the same date): a CASE
    over the spans of constant UTC offset between the first and the last quarter stored. None
    when an offset is not a whole number of quarters (then the rows stay per quarter)."""
    lo, hi = db.execute("SELECT MIN(quarter), MAX(quarter) FROM rollup_quarter").fetchone()
    if lo is None:
        return None
    spans = _offset_spans(tz, int(lo), int(hi))
    if spans is None:
        return None
    per_day = 86_400_000 // QUARTER_MS

    def midnight(off: int) -> str:  # local noon, in fact: never on the other side of a switch
        return f"((quarter + {off}) / {per_day}) * {per_day} + {per_day // 2} - {off}"

    if len(spans) == 1:
        return midnight(spans[0][1])
    parts = " ".join(f"WHEN quarter < {end} THEN {midnight(off)}" for end, off in spans[:-1])
    return f"CASE {parts} ELSE {midnight(spans[-1][1])} END"


def _offset_spans(tz: tzinfo, lo: int, hi: int) -> list[tuple[int, int]] | None:
    """[(first quarter after the span, UTC offset in quarters)] covering quarters lo..hi."""

    def offset(q: int) -> int | None:
        off = datetime.fromtimestamp(q * QUARTER_MS / 1000, UTC).astimezone(tz).utcoffset()
        seconds = int(off.total_seconds()) if off is not None else 0
        return None if seconds % (QUARTER_MS // 1000) else seconds // (QUARTER_MS // 1000)

    spans: list[tuple[int, int]] = []
    step = 86_400_000 // QUARTER_MS  # offsets change at most a few times a year: look daily ...
    q, cur = lo, offset(lo)
    while q <= hi:
        if cur is None:
            return None
        nxt = min(q + step, hi + 1)
        off = offset(nxt)
        if off != cur:  # ... and find the change within the day by bisection
            a, b = q, nxt  # offset(a) == cur, offset(b) != cur
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == cur else (a, mid)
            spans.append((b, cur))
            q, cur = b, offset(b)
            continue
        q = nxt
    spans.append((hi + 1, cur if cur is not None else 0))
    return spans


def session_projects(db: sqlite3.Connection, sources: Any) -> dict[str, str]:
    """Each session's first project (``Ledger.session_projects`` without time bounds)."""
    where, params = "start_ms IS NOT NULL", []  # type: str, list[Any]
    if sources is not None:
        where += f" AND source IN ({','.join('?' * len(sources))})"
        params = list(sources)
    q = f"SELECT session_id, start_project, MIN(start_ms) FROM rollup_session WHERE {where} GROUP BY 1"
    return {str(r[0]): str(r[1]) for r in db.execute(q, params)}
