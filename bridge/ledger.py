"""The ledger: one SQLite database (WAL) that makes every source exactly-once.

It holds, per source file, a cursor (inode, size, byte offset, a fingerprint of the head);
per request, one row keyed by the record's ``dedup_key`` holding the most complete usage seen
so far; running totals per series, kept in the same transaction as the rows; and small
per-source state (e.g. the stats-cache snapshot).

Exactly-once comes from two rules:

* A batch of records and the cursor that produced it are committed in one transaction, so a
  crash (even ``kill -9``) leaves either both or neither.
* Each row is a field-wise max-register (see ``Tokens.merge_max``): re-reading a line, reading a
  streamed duplicate or a copy in a resumed session adds nothing; a more complete line adds only
  the increase. Totals are updated by exactly the row's change, so they never drift from rows.

Money is stored as integer pico-dollars (1e-12 USD) so SQL sums stay exact.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from bridge import _rollups
from bridge._rows import (
    MAX_PUSD,
    PRICED_SQL,
    UNPRICED_SQL,
    Deltas,
    Row,
    add_delta,
    from_pusd,
    identity_and_usage,
    merge_record,
    resolve_groups,
    to_pusd,
)
from bridge.errors import LedgerError
from bridge.record import CostOrigin, Tokens, UsageRecord, collapse
from bridge.surcharges import Extras

log = logging.getLogger("tokenbridge.ledger")

# 2: usage became a rowid table with a unique dedup_key index: appends go to the end of the
# table instead of random leaves of a text-keyed tree (a third of the write I/O on large scans).
# 3: rows count requests (a provider bucket stands for many), gauges (balances, quotas) and
# source health; replace-by-bucket merge policy for polled sources.
# 4: two branches each called their change schema 4, so a version-4 ledger is one of two shapes:
# totals count unpriced and priced entries (a row without a request count weighs 1, see
# ``_rows.entries``: a usage bucket with an unknown price is unknown, never $0); or rollup tables
# (bridge/_rollups.py) kept with the rows, so reports need not scan every row.
# 5: both. ``_migrate`` tells the two 4s apart by the columns present.
SCHEMA_VERSION = 5

_USAGE_TABLE = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    group_key TEXT,
    source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, session_id TEXT, project TEXT,
    sidechain INTEGER NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cache_creation_1h INTEGER NOT NULL,
    reported_pusd INTEGER,
    cost_pusd INTEGER,
    cost_origin TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 1,
    speed TEXT,
    web_search INTEGER NOT NULL DEFAULT 0,
    web_fetch INTEGER NOT NULL DEFAULT 0
);
"""
# Columns added to schema 3 after its first release (fast mode, server tools): a schema-3 ledger
# without them gets them on open. Their defaults are exact for every older row (nothing stated).
_EXTRA_COLUMNS = (
    ("speed", "TEXT"),
    ("web_search", "INTEGER NOT NULL DEFAULT 0"),
    ("web_fetch", "INTEGER NOT NULL DEFAULT 0"),
)
_USAGE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS usage_group ON usage (group_key) WHERE group_key IS NOT NULL;",
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts_ms);",
)

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, path TEXT NOT NULL,
    inode INTEGER NOT NULL, size INTEGER NOT NULL, offset INTEGER NOT NULL,
    head BLOB NOT NULL, malformed INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, path)
);
{usage}CREATE TABLE IF NOT EXISTS totals (
    source TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, session_id TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    cache_creation INTEGER NOT NULL, cost_pusd INTEGER NOT NULL,
    requests INTEGER NOT NULL, unpriced INTEGER NOT NULL, priced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, provider, model, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS source_state (
    source TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS series (
    series_key TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, last_value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gauges (
    name TEXT NOT NULL, labels TEXT NOT NULL, source TEXT NOT NULL,
    value TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    PRIMARY KEY (name, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
    source TEXT PRIMARY KEY, last_attempt_ms INTEGER, last_success_ms INTEGER,
    last_error_ms INTEGER, last_error_kind TEXT, last_error TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
""".replace("{usage}", _USAGE_TABLE + "\n".join(_USAGE_INDEXES) + "\n")
    + _rollups.SCHEMA
)

_COLS_V2 = (
    "dedup_key, group_key, source, provider, model, ts_ms, session_id, project, sidechain, "
    "input, output, cache_read, cache_creation, cache_creation_1h, reported_pusd, cost_pusd, cost_origin"
)
_COLS = _COLS_V2 + ", requests, speed, web_search, web_fetch"
_NCOLS = _COLS.count(",") + 1
# Entries without and with a known price (``_rows.entries``), as sums over usage rows.
_UNPRICED, _PRICED = UNPRICED_SQL, PRICED_SQL
# The columns of ``_series_total`` summed from the rows (the key columns come before them).
_SERIES_SUMS = (
    "SUM(input), SUM(output), SUM(cache_read), SUM(cache_creation), COALESCE(SUM(cost_pusd), 0), "
    f"SUM(requests), {_UNPRICED}, {_PRICED}"
)


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    have = {str(r[1]) for r in db.execute("PRAGMA table_info(usage)")}
    return [(n, t) for n, t in _EXTRA_COLUMNS if n not in have]


def _add_missing_columns(db: sqlite3.Connection) -> list[str]:
    missing = _missing_columns(db)
    for name, typ in missing:
        db.execute(f"ALTER TABLE usage ADD COLUMN {name} {typ}")
    return [n for n, _ in missing]


class CostFunction(Protocol):
    """What the ledger needs from pricing: exact cost or None when the model has no price."""

    def cost(
        self, provider: str, model: str, tokens: Tokens, at: datetime | None = None, extras: Extras | None = None
    ) -> Decimal | None: ...


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a file was read up to. ``head`` fingerprints the file's first bytes to detect rewrites."""

    source: str
    path: str
    inode: int
    size: int
    offset: int
    head: bytes
    malformed: int = 0
    mtime_ns: int = 0  # of the file when the cursor was stored; a same-size rewrite changes it


@dataclass(frozen=True, slots=True)
class SeriesTotal:
    """Cumulative totals of one exported series."""

    source: str
    provider: str
    model: str
    session_id: str
    tokens: dict[str, int]
    cost: Decimal
    requests: int
    unpriced: int  # entries (a row without a request count weighs 1) without a known price
    priced: int  # entries with one: none while unpriced > 0 means the cost is unknown, not $0
    project: str = ""  # only in ``totals_by_project`` (the opt-in ``project`` attribute)


@dataclass(frozen=True, slots=True)
class Gauge:
    """The latest value of a state (a balance, a key's remaining limit, a quota window)."""

    name: str
    labels: dict[str, str]
    value: Decimal
    ts_ms: int = 0  # when the value was true (0: now)
    source: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """Last outcome of a source's passes (``last_error`` never holds a secret: sources write
    messages made of status codes and kinds, not of responses or headers)."""

    source: str
    last_attempt_ms: int | None
    last_success_ms: int | None
    last_error_ms: int | None
    last_error_kind: str | None
    last_error: str | None
    consecutive_failures: int


@dataclass(slots=True)
class BatchResult:
    """What a committed batch changed."""

    new_requests: int = 0
    updated_requests: int = 0
    tokens_added: int = 0


class Ledger:
    """The bridge's single source of truth. Not thread-safe: one ``Ledger`` per thread."""

    def __init__(self, path: Path, check: bool = False, fast: bool = False) -> None:
        """``fast``: for commands that must answer at once (the status line runs on every refresh):
        a busy ledger fails within a fraction of a second instead of 30 s, and the daily integrity
        check is left to the other commands."""
        self.path = path
        self.generation = 0  # bumped by every commit: lets readers skip work when nothing changed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger directory {path.parent}: {exc.strerror or exc}") from exc
        busy_s = _FAST_TIMEOUT_S if fast else _OPEN_TIMEOUT_S
        deadline = time.monotonic() + busy_s
        while True:
            try:
                self._db = self._connect(path, busy_s)
                break
            except sqlite3.OperationalError as exc:
                # Two processes creating a new ledger at once: switching to WAL and creating the
                # schema take the write lock outside the busy handler's reach. Wait and retry.
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise LedgerError(_explain(path, exc)) from exc
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise LedgerError(_explain(path, exc)) from exc
        try:
            if check or (not fast and self._check_due()):
                self.check()
            self._check_version()
            if not fast:  # the status line never waits for a one-time rewrite: the next command does it
                self._rekey_claude_requests()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(_explain(path, exc)) from exc
        except LedgerError:
            self._db.close()
            raise

    @staticmethod
    def _connect(path: Path, busy_s: float = 30.0) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=busy_s, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-16384")  # 16 MiB: hot B-tree pages stay in memory
            # Checkpoints (which fsync) every 32 MiB of WAL instead of every 4 MiB: a cold scan
            # commits often; durability per commit is unchanged (WAL, synchronous=NORMAL).
            db.execute("PRAGMA wal_autocheckpoint=8192")
            db.execute("BEGIN IMMEDIATE")
            db.executescript(_SCHEMA)  # commits the BEGIN above
        except BaseException:
            db.close()
            raise
        return db

    def _check_due(self) -> bool:
        """A quick integrity check at most once a day (it reads every page: not on every sync)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='checked_ms'").fetchone()
        return row is None or time.time() * 1000 - int(row[0]) > _CHECK_EVERY_MS

    def check(self) -> None:
        """Refuse to write into a damaged database: SQLite would go on using it, and a corrupt
        page can silently drop or repeat rows. Raises ``LedgerError`` naming the file."""
        problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise LedgerError(
                f"ledger {self.path} is damaged ({'; '.join(problems)}); nothing was written. Move it aside "
                "and run `tokenbridge sync` to rebuild it from the sources"
            )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('checked_ms', ?)", (str(int(time.time() * 1000)),))

    @classmethod
    def open(cls, state_dir: Path, check: bool = False, fast: bool = False) -> Ledger:
        return cls(state_dir / "ledger.sqlite3", check=check, fast=fast)

    def instance_id(self) -> str:
        """A stable id of this ledger: the exporter's ``service.instance.id`` across restarts."""
        row = self._db.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
        if row is None:  # a ledger created before the id existed
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('instance_id', ?)", (str(uuid.uuid4()),))
            row = self._db.execute("SELECT value FROM meta WHERE key='instance_id'").fetchone()
        return str(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            now = str(time.time_ns())
            # OR IGNORE: another process creating the same new ledger may have written it first.
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('created_ns', ?)", (now,))
        elif int(row[0]) > SCHEMA_VERSION:
            raise LedgerError(f"ledger {self.path} has schema {row[0]}, newer than this tokenbridge ({SCHEMA_VERSION})")
        elif int(row[0]) < SCHEMA_VERSION:
            self._migrate(int(row[0]))
        else:
            self._add_extra_columns()

    def _rekey_claude_requests(self) -> None:
        """Once per ledger: transcript rows keyed ``cc:{message.id}:{requestId}`` take the key
        ``cc-req:{requestId}`` that Claude Code's api_request events share (bridge/_rows.py).

        ``UPDATE OR IGNORE``: a row whose new key is already taken (two message ids under one
        request id, a gateway's doing) keeps its old key and its row; totals do not move, since
        they are kept per series, not per key."""
        if self._db.execute("SELECT 1 FROM meta WHERE key=?", (_REKEY_MARK,)).fetchone() is not None:
            return
        with self._transaction(bump=False) as db:
            if db.execute("SELECT 1 FROM meta WHERE key=?", (_REKEY_MARK,)).fetchone() is not None:
                return  # another process did it while this one waited for the lock
            cur = db.execute(
                "UPDATE OR IGNORE usage SET dedup_key = 'cc-req:' || "
                "substr(dedup_key, 4 + instr(substr(dedup_key, 4), ':')) "
                "WHERE substr(dedup_key, 1, 3) = 'cc:' AND substr(dedup_key, -1) != ':'"
            )
            db.execute("INSERT INTO meta VALUES (?, ?)", (_REKEY_MARK, str(int(time.time() * 1000))))
        if cur.rowcount:
            log.info("ledger %s: %d Claude Code row(s) re-keyed by request id", self.path, cur.rowcount)

    def _add_extra_columns(self) -> None:
        if _missing_columns(self._db):
            with self._transaction() as db:
                names = _add_missing_columns(db)
            log.info("ledger %s: added column(s) %s", self.path, ", ".join(names))

    def _migrate(self, version: int) -> None:
        """Upgrade an older ledger in one transaction (its rows and totals are kept as they are)."""
        with self._transaction() as db:
            if version == 1:
                db.execute("ALTER TABLE usage RENAME TO usage_v1")
                db.execute(_USAGE_TABLE)
                db.execute(f"INSERT INTO usage ({_COLS_V2}) SELECT {_COLS_V2} FROM usage_v1")
                db.execute("DROP TABLE usage_v1")
                for stmt in _USAGE_INDEXES:
                    db.execute(stmt)
            elif version == 2:
                # Every schema-2 row is one Claude request: the default of 1 is exact.
                db.execute("ALTER TABLE usage ADD COLUMN requests INTEGER NOT NULL DEFAULT 1")
            _add_missing_columns(db)
            if not _has_column(db, "totals", "priced"):  # schema 3, or 4 with rollups only
                _recount_totals(db)
            # Rollups: none before 4, empty ones (created with the schema on opening) in a 4 with
            # priced totals, or ones without the priced column that count unpriced by requests in
            # a 4 with rollups: in every case they are made anew from the rows.
            _rollups.recreate(db)
            db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        log.info("ledger %s upgraded from schema %d to %d", self.path, version, SCHEMA_VERSION)

    @contextmanager
    def _transaction(self, bump: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            # Disk full, a damaged page, a lock held too long: one error that names the file.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerError(_explain(self.path, exc)) from exc
        if bump:  # health notes do not change what is exported
            self.generation += 1

    # -- cursors -------------------------------------------------------------------------------

    def cursor(self, source: str, path: str) -> Cursor | None:
        r = self._db.execute(
            "SELECT inode, size, offset, head, malformed, mtime_ns FROM cursors WHERE source=? AND path=?",
            (source, path),
        ).fetchone()
        if r is None:
            return None
        return Cursor(source, path, int(r[0]), int(r[1]), int(r[2]), bytes(r[3]), int(r[4]), int(r[5]))

    def cursors(self, source: str) -> list[Cursor]:
        rows = self._db.execute(
            "SELECT path, inode, size, offset, head, malformed, mtime_ns FROM cursors WHERE source=?", (source,)
        ).fetchall()
        return [
            Cursor(source, str(r[0]), int(r[1]), int(r[2]), int(r[3]), bytes(r[4]), int(r[5]), int(r[6])) for r in rows
        ]

    # -- ingest --------------------------------------------------------------------------------

    def commit(
        self,
        records: Sequence[UsageRecord],
        pricer: CostFunction,
        cursor: Cursor | Sequence[Cursor] | None = None,
        state: dict[tuple[str, str], str] | None = None,
        fallback: str | None = None,
    ) -> BatchResult:
        """Merge ``records`` and store the cursor(s) and ``state`` in one transaction.

        ``fallback``: a dedup-key prefix (``<prefix><session>:…``) of records that only stand in
        for sessions of their source that have no other rows (see ``_supersede``)."""
        result = BatchResult()
        cursors = [] if cursor is None else [cursor] if isinstance(cursor, Cursor) else list(cursor)
        now_ms = int(time.time() * 1000)
        with self._transaction() as db:
            if fallback is not None:
                records = self._supersede(db, records, fallback, result)
            if records:
                self._merge(db, records, pricer, result)
            db.executemany(
                "INSERT OR REPLACE INTO cursors VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (c.source, c.path, c.inode, c.size, c.offset, c.head, c.malformed, now_ms, c.mtime_ns)
                    for c in cursors
                ],
            )
            for (source, key), value in (state or {}).items():
                db.execute("INSERT OR REPLACE INTO source_state VALUES (?,?,?)", (source, key, value))
        return result

    def _supersede(
        self, db: sqlite3.Connection, records: Sequence[UsageRecord], prefix: str, result: BatchResult
    ) -> list[UsageRecord]:
        """Apply the fallback rule inside the commit's transaction: a session with primary rows
        (keys without ``prefix``) never keeps fallback rows. A primary record retracts its
        session's stored fallback rows (keys ``<prefix><session>:``, an index range) and a
        fallback record of a session known to have primary rows is dropped. Known sessions are
        markers in ``source_state`` (``primary:<session>``), so the rule holds in both arrival
        orders and across restarts; done in the transaction that adds the primary rows, no
        reader ever sees a session counted twice."""
        self._index_primaries(db, {r.source for r in records}, prefix)
        primary: set[tuple[str, str]] = set()
        for r in records:
            if r.session_id and not r.dedup_key.startswith(prefix):
                primary.add((r.source, r.session_id))
        deltas: Deltas = {}
        roll = _rollups.Rollups()
        for source, session in sorted(primary):
            if db.execute(
                "INSERT OR IGNORE INTO source_state VALUES (?,?,'1')", (source, f"{_PRIMARY}{session}")
            ).rowcount:
                for row in self._fallback_rows(db, source, prefix, session):
                    add_delta(deltas, row, -1)
                    roll.add(row, -1)
                    result.tokens_added -= row.tokens.total
                    db.execute("DELETE FROM usage WHERE dedup_key=?", (row.dedup_key,))
        self._apply_deltas(db, deltas)
        roll.apply(db)
        keep = []
        for rec in records:
            if rec.dedup_key.startswith(prefix) and (
                not rec.session_id
                or (rec.source, rec.session_id) in primary
                or db.execute(
                    "SELECT 1 FROM source_state WHERE source=? AND key=?", (rec.source, f"{_PRIMARY}{rec.session_id}")
                ).fetchone()
            ):
                continue  # the session's transcript counts instead
            keep.append(rec)
        return keep

    @staticmethod
    def _fallback_rows(db: sqlite3.Connection, source: str, prefix: str, session: str) -> list[Row]:
        lo = f"{prefix}{session}:"
        hi = f"{prefix}{session};"  # ';' sorts right after ':'
        q = f"SELECT {_COLS} FROM usage WHERE dedup_key >= ? AND dedup_key < ? AND source=? AND session_id=?"
        return [Row.from_db(r) for r in db.execute(q, (lo, hi, source, session))]

    @staticmethod
    def _index_primaries(db: sqlite3.Connection, sources: set[str], prefix: str) -> None:
        """Once per source: a marker for every session that had rows before the fallback rule
        was first applied (all of them primary: no fallback row can predate the rule)."""
        for source in sorted(sources):
            done = f"fallback-indexed:{prefix}"
            if db.execute("SELECT 1 FROM source_state WHERE source=? AND key=?", (source, done)).fetchone():
                continue
            db.execute(
                "INSERT OR IGNORE INTO source_state SELECT DISTINCT source, ? || session_id, '1' FROM totals "
                "WHERE source=? AND session_id != '' AND requests > 0",
                (_PRIMARY, source),
            )
            db.execute("INSERT INTO source_state VALUES (?,?,'1')", (source, done))

    def fallback_sums(self, source: str, prefix: str) -> dict[str, SeriesTotal]:
        """Sums of ``source``'s fallback rows (keys starting with ``prefix``) per session (an
        index range of the keys: no scan of the other rows)."""
        hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._db.execute(
            f"SELECT source, provider, '', COALESCE(session_id, ''), {_SERIES_SUMS} FROM usage "
            "WHERE dedup_key >= ? AND dedup_key < ? AND source=? GROUP BY 4",
            (prefix, hi, source),
        )
        return {str(r[3]): _series_total(r) for r in rows}

    def _merge(
        self,
        db: sqlite3.Connection,
        records: Sequence[UsageRecord],
        pricer: CostFunction,
        result: BatchResult,
    ) -> None:
        """Merge a batch: the new state of every touched row is computed in memory, then the
        difference to the stored state is written and added to the totals (each stored row is
        subtracted at most once, so totals always equal the rows)."""
        incoming = collapse(records)  # streamed duplicates and in-batch replays, merged once
        groups = {rec.group_key for rec in incoming.values() if rec.group_key}
        # Loading the groups finds the stored replays of a message and, usually, a record's own
        # row; a row stored without a group (from an api_request event, or a line without one)
        # is found by its key.
        stored = self._load(db, "group_key", sorted(groups))
        stored.update(self._load(db, "dedup_key", [k for k in incoming if k not in stored]))
        rows = dict(stored)
        for key, rec in incoming.items():
            rows[key] = merge_record(rows.get(key), rec)
        resolve_groups(rows, groups)
        deltas: Deltas = {}
        roll = _rollups.Rollups()
        writes: list[tuple[object, ...]] = []
        gone = [old for key, old in stored.items() if key not in rows]  # replays folded into a parent
        for old in gone:
            add_delta(deltas, old, -1)
            roll.add(old, -1)
            result.tokens_added -= old.tokens.total
        db.executemany("DELETE FROM usage WHERE dedup_key=?", [(old.dedup_key,) for old in gone])
        for key, row in rows.items():
            prev = stored.get(key)
            if prev is not None and identity_and_usage(prev) == identity_and_usage(row):
                continue  # unchanged: keeps its cost
            self._price(row, pricer)
            if prev is None:
                result.new_requests += 1
                roll.add(row, +1)
            else:
                result.updated_requests += 1
                add_delta(deltas, prev, -1)
                roll.replace(prev, row)
                result.tokens_added -= prev.tokens.total
            add_delta(deltas, row, +1)
            result.tokens_added += row.tokens.total
            writes.append(row.as_params())
        if writes:
            db.executemany(f"INSERT OR REPLACE INTO usage ({_COLS}) VALUES ({','.join('?' * _NCOLS)})", writes)
        self._apply_deltas(db, deltas)
        roll.apply(db)

    @staticmethod
    def _price(row: Row, pricer: CostFunction) -> None:
        """Cost of a row from its tokens at its own (first-seen) time: the same whatever the
        batch boundaries, and never lower after more tokens arrive."""
        if row.reported_pusd is not None:
            row.cost_pusd, row.cost_origin = row.reported_pusd, _REPORTED
            return
        if row.cost_origin == _EXTERNAL:
            row.cost_pusd = 0  # the provider's billing source carries this cost
            return
        at = datetime.fromtimestamp(row.ts_ms / 1000, UTC)
        extras = row.extras()
        if extras is None:  # the common case: the plain four-argument call every pricer has
            cost = pricer.cost(row.provider, row.model, row.tokens, at)
        else:
            cost = pricer.cost(row.provider, row.model, row.tokens, at, extras=extras)
        pusd = None if cost is None else to_pusd(cost)
        if pusd is not None and not 0 <= pusd < MAX_PUSD:
            log.warning("cost of %s (%s) is out of range; kept as unknown", row.dedup_key, cost)
            pusd = None
        row.cost_pusd = pusd
        row.cost_origin = _UNKNOWN if pusd is None else _ESTIMATED

    def _load(self, db: sqlite3.Connection, column: str, values: list[str]) -> dict[str, Row]:
        """Stored rows whose ``column`` (dedup_key or group_key) is one of ``values``, by key."""
        out: dict[str, Row] = {}
        for chunk in _chunks(values, 500):
            q = f"SELECT {_COLS} FROM usage WHERE {column} IN ({','.join('?' * len(chunk))})"
            for r in db.execute(q, chunk):
                row = Row.from_db(r)
                out[row.dedup_key] = row
        return out

    def _apply_deltas(self, db: sqlite3.Connection, deltas: Deltas) -> None:
        params = [(*k, *v) for k, v in deltas.items() if any(v)]
        if not params:
            return
        db.executemany(
            "INSERT INTO totals VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
            "input=input+excluded.input, output=output+excluded.output, "
            "cache_read=cache_read+excluded.cache_read, cache_creation=cache_creation+excluded.cache_creation, "
            "cost_pusd=cost_pusd+excluded.cost_pusd, requests=requests+excluded.requests, "
            "unpriced=unpriced+excluded.unpriced, priced=priced+excluded.priced",
            params,
        )

    # -- reading -------------------------------------------------------------------------------

    def totals(self) -> list[SeriesTotal]:
        """Cumulative totals per (source, provider, model, session)."""
        rows = self._db.execute(
            "SELECT source, provider, model, session_id, input, output, cache_read, cache_creation, "
            "cost_pusd, requests, unpriced, priced FROM totals ORDER BY source, provider, model, session_id"
        ).fetchall()
        return [_series_total(r) for r in rows]

    def totals_by_project(self) -> list[SeriesTotal]:
        """Cumulative totals per (source, provider, model, session, project), summed from the
        rows: the running totals have no project, so this reads every row (opt-in export)."""
        rows = self._db.execute(
            f"SELECT source, provider, model, COALESCE(session_id, ''), {_SERIES_SUMS}, {_GROUP_COLUMNS['project']} "
            f"FROM {_WITH_PROJECT} GROUP BY 1, 2, 3, 4, 13 ORDER BY 1, 2, 3, 4, 13"
        ).fetchall()
        return [replace(_series_total(r), project=str(r[12])) for r in rows]

    def recomputed_totals(self) -> list[SeriesTotal]:
        """Totals recomputed from the rows: must always equal ``totals()`` (a consistency check)."""
        rows = self._db.execute(
            f"SELECT source, provider, model, COALESCE(session_id, ''), {_SERIES_SUMS} FROM usage "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        ).fetchall()
        return [_series_total(r) for r in rows]

    def aggregate(
        self,
        group: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        sources: Sequence[str] | None = None,
        extra: Sequence[str] = (),
        exclude: Sequence[tuple[str, str, int]] = (),
        days_in: tzinfo | None = None,
    ) -> list[tuple[Any, ...]]:
        """Sums grouped by ``group`` ("quarter" = 15-minute bucket, "ms" = the exact time, or "session") and model.
        ``days_in``: the quarter rows may come merged into local days of that zone (each row's
        quarter is then one of its day's; far fewer rows for a daily or monthly report).

        Rows: (group value, model, provider, extra, input, output, cache_read, cache_creation,
        cost_pusd (None when no row of the group has a known price), unpriced (entries without a
        price, ``_rows.entries``), requests), then one value per column named in ``extra`` ("source",
        "project", "session_id"; missing ones as ""), which also group. Every real time zone offset
        is a multiple of 15 minutes, so quarter-hour buckets convert exactly to local days, weeks
        and months. ``exclude`` leaves out the rows of (source, provider) from a time on (see
        ``bridge.views``).
        """
        if not exclude and list(extra) in ([], ["source"]):
            rolled = _rollups.aggregate(self._db, group, since_ms, until_ms, sources, bool(extra), days_in)
            if rolled is not None:
                return rolled
        return self.aggregate_rows(group, since_ms, until_ms, sources, extra, exclude)

    def aggregate_rows(
        self,
        group: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
        sources: Sequence[str] | None = None,
        extra: Sequence[str] = (),
        exclude: Sequence[tuple[str, str, int]] = (),
    ) -> list[tuple[Any, ...]]:
        """``aggregate`` from the rows themselves (what the rollups must always equal)."""
        where, params = _where(since_ms, until_ms, sources)
        for source, provider, from_ms in exclude:
            where += " AND NOT (source=? AND provider=? AND ts_ms >= ?)"
            params += [source, provider, from_ms]
        # Fast-mode requests are their own line ("claude-opus-4-6 (fast)"): a multiple of the price.
        model = "model || CASE WHEN speed = 'fast' THEN ' (fast)' ELSE '' END"
        if group == "quarter":
            head = f"ts_ms / 900000, {model}, provider, NULL"
        elif group == "ms":  # five-hour blocks need each request's time (bridge.blocks)
            head = f"ts_ms, {model}, provider, NULL"
        elif group == "session":
            head = f"COALESCE(session_id, ''), {model}, provider, MAX(ts_ms) || '|' || COALESCE(MAX(project), '')"
        else:
            raise ValueError(group)
        more = [_GROUP_COLUMNS[name] for name in extra]
        tail = "".join(f", {col}" for col in more)
        by = ", ".join(str(i) for i in [1, 2, 3, *range(12, 12 + len(more))])  # after 4 head + 7 sums
        table = _WITH_PROJECT if "project" in extra else "usage"
        q = f"SELECT {head}, {_SUMS}{tail} FROM {table} WHERE {where} GROUP BY {by}"
        return list(self._db.execute(q, params))

    def session_projects(
        self, since_ms: int | None = None, until_ms: int | None = None, sources: Sequence[str] | None = None
    ) -> dict[str, str]:
        """Each session's project as of its first row (a session that moves to another
        directory stays attributed to the one it started in)."""
        if since_ms is None and until_ms is None:
            return _rollups.session_projects(self._db, sources)
        return self.session_projects_rows(since_ms, until_ms, sources)

    def session_projects_rows(
        self, since_ms: int | None = None, until_ms: int | None = None, sources: Sequence[str] | None = None
    ) -> dict[str, str]:
        """``session_projects`` from the rows themselves."""
        where, params = _where(since_ms, until_ms, sources)
        # SQLite: with MIN() as the only aggregate, a bare column comes from the row holding it.
        q = (
            "SELECT COALESCE(session_id, ''), project, MIN(ts_ms) FROM usage "
            f"WHERE {where} AND project IS NOT NULL GROUP BY 1"
        )
        return {str(r[0]): str(r[1]) for r in self._db.execute(q, params)}

    def history(
        self, bucket_ms: int, sources: Sequence[str] | None = None, by_session: bool = True
    ) -> Iterator[tuple[int, SeriesTotal]]:
        """Sums per time bucket (``ts_ms // bucket_ms``) and (source, provider, model, session),
        oldest bucket first: the same groups as ``totals()`` (the session '' unless
        ``by_session``), so they add up to it exactly."""
        where, params = _where(None, None, sources)
        session = "COALESCE(session_id, '')" if by_session else "''"
        q = (
            f"SELECT source, provider, model, {session}, {_SERIES_SUMS}, ts_ms / ? FROM usage WHERE {where} "
            "GROUP BY 13, 1, 2, 3, 4 ORDER BY 13, 1, 2, 3, 4"
        )
        for r in self._db.execute(q, [bucket_ms, *params]):  # streamed: a long history never sits in memory
            yield int(r[12]), _series_total(r)

    def tokens_for(self, keys: list[str]) -> dict[str, Tokens]:
        """Stored tokens of the given dedup keys (missing keys are absent)."""
        return {k: row.tokens for k, row in self._load(self._db, "dedup_key", keys).items()}

    def source_summary(self, source: str) -> dict[str, Any]:
        """Requests, last event, skipped lines and unpriced models of one source."""
        n, last = self._db.execute(
            "SELECT COALESCE(SUM(requests), 0), MAX(ts_ms) FROM usage WHERE source=?", (source,)
        ).fetchone()
        skipped = self._db.execute(
            "SELECT COALESCE(SUM(malformed), 0) + (SELECT COALESCE(SUM(CAST(value AS INTEGER)), 0) FROM source_state "
            "WHERE source=? AND key='skipped') FROM cursors WHERE source=?",  # a push source's rejected records
            (source, source),
        )
        unknown = self._db.execute(
            "SELECT DISTINCT model FROM usage WHERE source=? AND cost_pusd IS NULL ORDER BY model", (source,)
        )
        return {
            "requests": int(n),
            "last_event": None if last is None else datetime.fromtimestamp(last / 1000, UTC).isoformat(),
            "skipped": int(skipped.fetchone()[0]),
            "unknown_models": [str(r[0]) for r in unknown],
        }

    def source_providers(self) -> set[tuple[str, str]]:
        """Every (source, provider) pair with rows (from the totals: no scan of the rows)."""
        return {(str(r[0]), str(r[1])) for r in self._db.execute("SELECT DISTINCT source, provider FROM totals")}

    def first_ms(self, sources: Sequence[str], provider: str) -> int | None:
        """Time of the earliest row of ``provider`` among ``sources``."""
        q = f"SELECT MIN(ts_ms) FROM usage WHERE provider=? AND source IN ({','.join('?' * len(sources))})"
        r = self._db.execute(q, [provider, *sources]).fetchone()
        return None if r is None or r[0] is None else int(r[0])

    def first_day_ms(self, source: str) -> int | None:
        r = self._db.execute("SELECT MIN(ts_ms) FROM usage WHERE source=?", (source,)).fetchone()
        return None if r is None or r[0] is None else int(r[0])

    def retract(self, source: str, since_ms: int) -> int:
        """Remove ``source``'s rows from ``since_ms`` on (and their totals): for a source whose
        rule gives way to a better one for those days. Returns the number of rows removed."""
        if (
            self._db.execute(  # every row is a priced or an unpriced entry, with or without requests
                "SELECT 1 FROM totals WHERE source=? AND (requests > 0 OR unpriced > 0 OR priced > 0) LIMIT 1",
                (source,),
            ).fetchone()
            is None
        ):
            return 0  # the source has no rows at all: skip the scan of the time index
        with self._transaction() as db:
            rows = [Row.from_db(r) for r in db.execute(
                f"SELECT {_COLS} FROM usage WHERE source=? AND ts_ms >= ?", (source, since_ms)
            )]  # fmt: skip
            deltas: Deltas = {}
            roll = _rollups.Rollups()
            for row in rows:
                add_delta(deltas, row, -1)
                roll.add(row, -1)
            db.executemany("DELETE FROM usage WHERE dedup_key=?", [(r.dedup_key,) for r in rows])
            self._apply_deltas(db, deltas)
            roll.apply(db)
        return len(rows)

    def unpriced_requests(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(unpriced), 0) FROM totals").fetchone()[0])

    def reprice_unknown(self, pricer: CostFunction) -> int:
        """Give a price to rows stored as unknown (e.g. after the user added an override).

        Only unknown → estimated: a cost never goes down, so exported counters stay monotonic.
        """
        changed = 0
        with self._transaction() as db:
            rows = [Row.from_db(r) for r in db.execute(f"SELECT {_COLS} FROM usage WHERE cost_pusd IS NULL")]
            deltas: Deltas = {}
            roll = _rollups.Rollups()
            for row in rows:
                before = replace(row)
                self._price(row, pricer)
                if row.cost_pusd is None:
                    continue
                add_delta(deltas, before, -1)
                add_delta(deltas, row, +1)
                roll.replace(before, row)
                db.execute("UPDATE usage SET cost_pusd=?, cost_origin=? WHERE dedup_key=?",
                           (row.cost_pusd, row.cost_origin, row.dedup_key))  # fmt: skip
                changed += 1
            self._apply_deltas(db, deltas)
            roll.apply(db)
        return changed

    # -- small per-source state and export bookkeeping -----------------------------------------

    def state(self, source: str, key: str) -> str | None:
        r = self._db.execute("SELECT value FROM source_state WHERE source=? AND key=?", (source, key)).fetchone()
        return None if r is None else str(r[0])

    def set_state(self, source: str, key: str, value: str, bump: bool = True) -> None:
        """``bump=False`` for bookkeeping that changes nothing exported (no export refresh)."""
        with self._transaction(bump=bump) as db:
            db.execute("INSERT OR REPLACE INTO source_state VALUES (?,?,?)", (source, key, value))

    def record_series(self, values: dict[str, tuple[int, str]]) -> None:
        """Persist each exported series' stable start time and last exported value."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO series VALUES (?,?,?)", [(k, s, v) for k, (s, v) in values.items()])

    def forget_series(self, keys: Sequence[str]) -> None:
        """Drop series' start and last value (a backfill that could not deliver them undoes its claim)."""
        with self._transaction() as db:
            db.executemany("DELETE FROM series WHERE series_key=?", [(k,) for k in keys])

    def all_series(self) -> dict[str, tuple[int, str]]:
        return {str(r[0]): (int(r[1]), str(r[2])) for r in self._db.execute("SELECT * FROM series")}

    def is_empty(self) -> bool:
        """No usage rows at all (one index probe; ``request_count`` sums every row)."""
        return self._db.execute("SELECT 1 FROM usage LIMIT 1").fetchone() is None

    def request_count(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(requests), 0) FROM usage").fetchone()[0])

    # -- gauges: values that are a state, not a sum (balances, key limits, plan quotas) ---------

    def set_gauges(self, source: str, values: Sequence[Gauge], exclusive: bool = False) -> None:
        """Store each gauge's latest value (one row per name and label set). ``exclusive``: these
        are all of ``source``'s gauges now; its others (a currency gone, a key removed) go."""
        now_ms = int(time.time() * 1000)
        with self._transaction() as db:
            if exclusive:
                db.execute("DELETE FROM gauges WHERE source=?", (source,))
            db.executemany(
                "INSERT OR REPLACE INTO gauges VALUES (?,?,?,?,?)",
                [(g.name, _labels_key(g.labels), source, str(g.value), g.ts_ms or now_ms) for g in values],
            )

    def gauges(self, name: str | None = None) -> list[Gauge]:
        q = "SELECT name, labels, source, value, ts_ms FROM gauges"
        rows = (
            self._db.execute(q + " WHERE name=? ORDER BY labels", (name,))
            if name
            else self._db.execute(q + " ORDER BY name, labels")
        )
        return [Gauge(str(r[0]), dict(json.loads(r[1])), Decimal(str(r[3])), int(r[4]), source=str(r[2])) for r in rows]

    # -- source health, readable by every process (``tokenbridge sources`` beside ``run``) -------

    def record_health(self, source: str, error_kind: str | None = None, error: str | None = None) -> None:
        """One attempt of ``source``: a success when ``error_kind`` is None."""
        now_ms = int(time.time() * 1000)
        with self._transaction(bump=False) as db:
            if error_kind is None:
                db.execute(
                    "INSERT INTO health (source, last_attempt_ms, last_success_ms, consecutive_failures) "
                    "VALUES (?,?,?,0) ON CONFLICT DO UPDATE SET last_attempt_ms=excluded.last_attempt_ms, "
                    "last_success_ms=excluded.last_success_ms, consecutive_failures=0",
                    (source, now_ms, now_ms),
                )
            else:
                db.execute(
                    "INSERT INTO health (source, last_attempt_ms, last_error_ms, last_error_kind, last_error, "
                    "consecutive_failures) VALUES (?,?,?,?,?,1) ON CONFLICT DO UPDATE SET "
                    "last_attempt_ms=excluded.last_attempt_ms, last_error_ms=excluded.last_error_ms, "
                    "last_error_kind=excluded.last_error_kind, last_error=excluded.last_error, "
                    "consecutive_failures=consecutive_failures+1",
                    (source, now_ms, now_ms, error_kind, error),
                )

    def health(self) -> dict[str, Health]:
        rows = self._db.execute(
            "SELECT source, last_attempt_ms, last_success_ms, last_error_ms, last_error_kind, last_error, "
            "consecutive_failures FROM health"
        )
        return {str(r[0]): Health(str(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in rows}


def _series_total(r: Any) -> SeriesTotal:
    tokens = {"input": int(r[4]), "output": int(r[5]), "cacheRead": int(r[6]), "cacheCreation": int(r[7])}
    return SeriesTotal(
        str(r[0]), str(r[1]), str(r[2]), str(r[3]), tokens, from_pusd(int(r[8])), int(r[9]), int(r[10]), int(r[11])
    )


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return column in {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}


def _recount_totals(db: sqlite3.Connection) -> None:
    """Schema 4 (priced totals): the running totals recomputed from the rows, with the unpriced and priced
    entries (before, a row without a request count added nothing to ``unpriced``). A series
    whose rows are all gone keeps its row of zeros, as the running totals had it."""
    if not _has_column(db, "totals", "priced"):
        db.execute("ALTER TABLE totals ADD COLUMN priced INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE totals SET input=0, output=0, cache_read=0, cache_creation=0, cost_pusd=0, requests=0, "
        "unpriced=0, priced=0"
    )
    db.execute(
        "INSERT OR REPLACE INTO totals (source, provider, model, session_id, input, output, cache_read, "
        "cache_creation, cost_pusd, requests, unpriced, priced) "
        f"SELECT source, provider, model, COALESCE(session_id, ''), {_SERIES_SUMS} FROM usage GROUP BY 1, 2, 3, 4"
    )


# Enum values as plain strings: ``CostOrigin.X.value`` is a descriptor call, and _price runs per row.
_REPORTED, _EXTERNAL = CostOrigin.REPORTED.value, CostOrigin.EXTERNAL.value
_UNKNOWN, _ESTIMATED = CostOrigin.UNKNOWN.value, CostOrigin.ESTIMATED.value
_OPEN_TIMEOUT_S = 30.0
_PRIMARY = "primary:"  # source_state key prefix: a session with primary (non-fallback) rows
_REKEY_MARK = "claude_keys_by_request"  # meta: when the one-time re-keying ran
_FAST_TIMEOUT_S = 0.3
_CHECK_EVERY_MS = 24 * 3600 * 1000


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    low = text.lower()
    if "disk is full" in low or "disk full" in low:
        return f"ledger {path}: the disk is full ({text}); nothing of the last batch was written"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return (
            f"ledger {path} is damaged ({text}); move it aside and run `tokenbridge sync` to rebuild it "
            "from the sources"
        )
    if _is_busy(exc) if isinstance(exc, sqlite3.OperationalError) else False:
        return f"ledger {path} is locked by another process for too long ({text})"
    return f"ledger {path}: {text}"


def _labels_key(labels: dict[str, str]) -> str:
    return json.dumps(sorted(labels.items()), separators=(",", ":"))


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _where(since_ms: int | None, until_ms: int | None, sources: Sequence[str] | None) -> tuple[str, list[object]]:
    where, params = ["1=1"], []  # type: list[str], list[object]
    if since_ms is not None:
        where.append("ts_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("ts_ms < ?")
        params.append(until_ms)
    if sources is not None:
        where.append(f"source IN ({','.join('?' * len(sources))})")
        params.extend(sources)
    return " AND ".join(where), params


# A session belongs to the project it started in (Claude Code may cd elsewhere mid-session):
# every row of a session takes the project of the session's first row that has one.
_WITH_PROJECT = (
    "usage LEFT JOIN (SELECT session_id AS start_session, project AS start_project, MIN(ts_ms) AS start_ts "
    "FROM usage WHERE session_id IS NOT NULL AND project IS NOT NULL GROUP BY session_id) "
    "ON start_session = session_id"
)
_GROUP_COLUMNS = {
    "source": "source",
    "project": "COALESCE(start_project, project, '')",  # only with _WITH_PROJECT
    "session_id": "COALESCE(session_id, '')",
}
# The cost is NULL when no row of the group has a known price (unknown, never $0).
_SUMS = f"SUM(input), SUM(output), SUM(cache_read), SUM(cache_creation), SUM(cost_pusd), {_UNPRICED}, SUM(requests)"
