"""The ledger: exactly-once under SIGKILL, max-register merges, totals that never drift."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge._rows import from_pusd, to_pusd
from bridge.ledger import SCHEMA_VERSION, Cursor, Gauge, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord

ROOT = Path(__file__).resolve().parents[1]
TS = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)


def rec(key: str, out: int = 10, *, group: str | None = None, side: bool = False, model: str = "m") -> UsageRecord:
    return UsageRecord(
        source="claude_transcripts",
        provider="anthropic",
        model=model,
        timestamp=TS,
        dedup_key=key,
        tokens=Tokens(input=1, output=out, cache_read=100, cache_creation=5),
        group_key=group,
        is_sidechain=side,
    )


def test_commit_is_idempotent_and_counts_only_increases(ledger, pricer):
    assert ledger.commit([rec("a", 3)], pricer).new_requests == 1
    r = ledger.commit([rec("a", 3)], pricer)
    assert (r.new_requests, r.updated_requests, r.tokens_added) == (0, 0, 0)
    r = ledger.commit([rec("a", 10)], pricer)
    assert (r.updated_requests, r.tokens_added) == (1, 7)
    [t] = ledger.totals()
    assert t.tokens == {"input": 1, "output": 10, "cacheRead": 100, "cacheCreation": 5}
    assert t.cost == Decimal(116) / Decimal(10**6)
    assert ledger.totals() == ledger.recomputed_totals()


def test_merge_is_order_independent(tmp_path, pricer):
    records = [rec("a", 3), rec("a", 9), rec("b", 4, group="g", side=True), rec("c", 4, group="g"), rec("a", 5)]
    results = []
    for i, order in enumerate([records, records[::-1], records[2:] + records[:2]]):
        with Ledger.open(tmp_path / str(i)) as led:
            for r in order:
                led.commit([r], pricer)
            results.append([(t.model, t.tokens, t.requests) for t in led.totals()])
    assert results[0] == results[1] == results[2]
    assert results[0][0][2] == 2  # "a" and the parent "c"; the replay "b" folded into "c"


def test_cursor_and_records_commit_together(ledger, pricer):
    cur = Cursor("claude_transcripts", "/x.jsonl", 7, 100, 100, b"{", 0, 1)
    ledger.commit([rec("a")], pricer, cur)
    assert ledger.cursor("claude_transcripts", "/x.jsonl") == cur

    class Boom:
        def cost(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("crash in the middle of a batch")

    later = Cursor("claude_transcripts", "/x.jsonl", 7, 200, 200, b"{", 0, 2)
    with pytest.raises(RuntimeError):
        ledger.commit([rec("b")], Boom(), later)
    assert ledger.cursor("claude_transcripts", "/x.jsonl") == cur, "cursor must not advance without its records"
    assert ledger.request_count() == 1


def test_unknown_cost_is_not_zero_and_repricing_fills_it(ledger, pricer):
    ledger.commit([rec("u", model="unknown-x")], pricer)
    [t] = ledger.totals()
    assert (t.unpriced, t.cost) == (1, 0)
    assert ledger.source_summary("claude_transcripts")["unknown_models"] == ["unknown-x"]

    class Later:
        def cost(self, provider: str, model: str, tokens: Tokens, at: Any = None) -> Decimal:
            return Decimal("0.5")

    assert ledger.reprice_unknown(Later()) == 1
    [t] = ledger.totals()
    assert (t.unpriced, t.cost) == (0, Decimal("0.5"))
    assert ledger.totals() == ledger.recomputed_totals()


def test_reported_cost_wins_over_estimate(ledger, pricer):
    r = UsageRecord(
        source="claude_transcripts", provider="anthropic", model="m", timestamp=TS, dedup_key="old",
        tokens=Tokens(input=10, output=40), cost=Decimal("0.01785"), cost_origin=CostOrigin.REPORTED,
    )  # fmt: skip
    ledger.commit([r], pricer)
    assert ledger.totals()[0].cost == Decimal("0.01785")


def test_money_is_exact_in_pico_dollars():
    assert from_pusd(to_pusd(Decimal("0.021717"))) == Decimal("0.021717")
    assert to_pusd(Decimal("3.75") / Decimal(10**6)) == 3_750_000


def test_newer_schema_is_refused(tmp_path):
    with Ledger.open(tmp_path) as led:
        led._db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    from bridge.errors import LedgerError

    with pytest.raises(LedgerError, match="newer"):
        Ledger.open(tmp_path)


# -- kill -9 in the middle of a large ingest ------------------------------------------------------


def _generate(out: Path, size: str, seed: int) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_history.py"), "--out", str(out), "--size", size,
         "--seed", str(seed), "--days", "6"],
        check=True, capture_output=True,
    )  # fmt: skip
    truth: dict[str, Any] = json.loads((out / "truth.json").read_text())
    return truth


def _env(tmp: Path, corpus: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "CLAUDE_"))}
    env.update(
        HOME=str(tmp / "home"),
        CLAUDE_CONFIG_DIR=str(corpus),
        TOKENBRIDGE_STATE_DIR=str(tmp / "state"),
        TOKENBRIDGE_CONFIG=str(tmp / "none.toml"),
        TOKENBRIDGE_PRICES_FILE=str(tmp / "none-prices.toml"),
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, capture_output=True, text=True)


def _daily(env: dict[str, str]) -> dict[str, dict[str, dict[str, int]]]:
    out = _cli(env, "report", "daily", "--json", "--timezone", "UTC")
    assert out.returncode == 0, out.stderr
    days: dict[str, dict[str, dict[str, int]]] = {}
    for day in json.loads(out.stdout)["daily"]:
        days[day["date"]] = {
            m["modelName"]: {
                "input": m["inputTokens"],
                "output": m["outputTokens"],
                "cacheRead": m["cacheReadTokens"],
                "cacheCreation": m["cacheCreationTokens"],
                "requests": m["requests"],
            }
            for m in day["modelBreakdowns"]
        }
    return days


def _truth_daily(truth: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    keys = ("input", "output", "cacheRead", "cacheCreation", "requests")
    return {
        day: {model: {k: v[k] for k in keys} for model, v in body["models"].items()}
        for day, body in truth["daily"].items()
    }


def _committed(db: Path) -> int:
    """Requests committed so far, read by another connection (0 before the ledger exists)."""
    if not db.exists():
        return 0
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return int(con.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


@pytest.mark.slow
def test_sigkill_during_large_ingest_then_restart_gives_exact_totals(tmp_path):
    corpus = tmp_path / "corpus"
    truth = _generate(corpus, "120MB", seed=7)
    env = _env(tmp_path, corpus)
    db = tmp_path / "state" / "ledger.sqlite3"
    kills, seen = 0, []
    for _ in range(3):
        # Kill as soon as this run has committed something new: mid-ingest by construction,
        # whatever the machine's speed.
        before = _committed(db)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "sync", "--no-export", "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while proc.poll() is None and _committed(db) <= before:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            seen.append(_committed(db))
        proc.wait()
    assert any(0 < n < truth["totals"]["requests"] for n in seen), f"no kill landed mid-ingest: {seen}"
    assert kills >= 1, "the ingest finished before any kill: make the corpus bigger"
    assert db.exists()
    done = _cli(env, "sync", "--no-export", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert _daily(env) == _truth_daily(truth)
    # One more pass over an already complete ledger changes nothing.
    again = _cli(env, "sync", "--no-export", "--no-progress")
    assert "ingested 0 new request(s)" in again.stderr
    assert _daily(env) == _truth_daily(truth)
    with Ledger(db) as led:
        assert led.totals() == led.recomputed_totals()


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "parse-worker"])
def test_report_daily_json_matches_synthetic_truth_exactly(tmp_path, parallel):
    corpus = tmp_path / "corpus"
    truth = _generate(corpus, "6MB", seed=3)
    env = _env(tmp_path, corpus)
    # 0 forces the parse worker (normally used from 48 MB on); a huge value keeps it in-process.
    env["TOKENBRIDGE_PARALLEL_MIN_BYTES"] = "0" if parallel else str(10**15)
    out = _cli(env, "--debug", "sync", "--no-export", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert ("in a worker process" in out.stderr) == parallel
    assert _daily(env) == _truth_daily(truth)
    sources = json.loads(_cli(env, "sources", "--json").stdout)["sources"]
    transcripts = next(s for s in sources if s["name"] == "claude_transcripts")
    assert transcripts["skippedLines"] == truth["malformedLines"]
    assert transcripts["unknownModels"] == ["claude-experimental-x"]


def test_schema_1_ledger_is_upgraded_with_its_rows(tmp_path, pricer):
    import sqlite3

    with Ledger.open(tmp_path) as led:
        led.commit([rec("a", 7), rec("b", 9, group="g2")], pricer)
        before = led.totals()
    # Rebuild the usage table as schema 1 had it (a WITHOUT ROWID table keyed by dedup_key).
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript(
        """
        ALTER TABLE usage RENAME TO usage_new;
        DROP INDEX usage_group; DROP INDEX usage_ts;
        CREATE TABLE usage (dedup_key TEXT PRIMARY KEY, group_key TEXT, source TEXT NOT NULL,
            provider TEXT NOT NULL, model TEXT NOT NULL, ts_ms INTEGER NOT NULL, session_id TEXT, project TEXT,
            sidechain INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,
            cache_read INTEGER NOT NULL, cache_creation INTEGER NOT NULL, cache_creation_1h INTEGER NOT NULL,
            reported_pusd INTEGER, cost_pusd INTEGER, cost_origin TEXT NOT NULL) WITHOUT ROWID;
        CREATE INDEX usage_group ON usage (group_key) WHERE group_key IS NOT NULL;
        CREATE INDEX usage_ts ON usage (ts_ms);
        INSERT INTO usage SELECT dedup_key, group_key, source, provider, model, ts_ms, session_id, project,
            sidechain, input, output, cache_read, cache_creation, cache_creation_1h, reported_pusd, cost_pusd,
            cost_origin FROM usage_new;
        DROP TABLE usage_new;
        UPDATE meta SET value='1' WHERE key='schema_version';
        """
    )
    con.close()
    with Ledger.open(tmp_path) as led:
        assert led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert "WITHOUT ROWID" not in led._db.execute("SELECT sql FROM sqlite_master WHERE name='usage'").fetchone()[0]
        assert led.totals() == before == led.recomputed_totals()
        assert led.commit([rec("a", 8)], pricer).updated_requests == 1, "keys still unique after the upgrade"
        assert led.request_count() == 2


def bucket(key: str, inp: int, out: int, requests: int) -> UsageRecord:
    """A provider's hourly bucket as a polled source yields it: many requests, replaced on re-poll."""
    return UsageRecord(
        source="openai_usage_api", provider="openai", model="gpt-5", timestamp=TS, dedup_key=key,
        tokens=Tokens(input=inp, output=out), requests=requests, replace=True,
    )  # fmt: skip


def test_repolled_bucket_replaces_its_row_and_totals_move_by_the_difference(ledger, pricer):
    ledger.commit([bucket("openai:2026-03-02T10", 100, 50, 3)], pricer)
    ledger.commit([bucket("openai:2026-03-02T10", 100, 50, 3)], pricer)  # the same poll again
    [t] = ledger.totals()
    assert (t.tokens["input"], t.tokens["output"], t.requests) == (100, 50, 3)
    # The provider revised the bucket downwards (a late correction): a max-register would keep
    # the old value forever, and adding it would double count; replacing is exact.
    ledger.commit([bucket("openai:2026-03-02T10", 90, 70, 4)], pricer)
    [t] = ledger.totals()
    assert (t.tokens["input"], t.tokens["output"], t.requests) == (90, 70, 4)
    assert ledger.request_count() == 4
    assert ledger.totals() == ledger.recomputed_totals()


def test_file_lines_keep_the_max_register_policy_when_a_smaller_copy_arrives(ledger, pricer):
    ledger.commit([rec("a", 10)], pricer)
    ledger.commit([rec("a", 3)], pricer)  # an earlier streamed line read late
    assert ledger.totals()[0].tokens["output"] == 10


def test_requests_count_requests_not_rows(ledger, pricer):
    ledger.commit([bucket("b1", 1, 1, 7), bucket("b2", 1, 1, 0), rec("line")], pricer)
    assert ledger.request_count() == 8
    assert sum(t.requests for t in ledger.totals()) == 8


def test_schema_2_ledger_is_upgraded_in_place_counting_one_request_per_row(tmp_path, pricer):
    import sqlite3

    with Ledger.open(tmp_path) as led:
        led.commit([rec("a", 7), rec("b", 9)], pricer)
        before = led.totals()
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript(
        "ALTER TABLE usage DROP COLUMN requests; DROP TABLE gauges; DROP TABLE health; "
        "UPDATE meta SET value='2' WHERE key='schema_version';"
    )
    con.close()
    with Ledger.open(tmp_path) as led:
        assert led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert led.totals() == before == led.recomputed_totals()
        assert led.request_count() == 2
        led.set_gauges("openrouter_api", [Gauge("tokenbridge.balance", {"provider": "openrouter"}, Decimal("4.5"), 1)])
        assert led.gauges()[0].value == Decimal("4.5")


def test_schema_3_ledger_without_the_speed_columns_gets_them_and_keeps_its_rows(tmp_path, pricer):
    import sqlite3

    with Ledger.open(tmp_path) as led:
        led.commit([rec("a", 7), rec("b", 9)], pricer)
        before = led.totals()
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript("ALTER TABLE usage DROP COLUMN speed; ALTER TABLE usage DROP COLUMN web_search; "
                      "ALTER TABLE usage DROP COLUMN web_fetch;")  # fmt: skip
    con.close()
    with Ledger.open(tmp_path) as led:
        assert led.totals() == before == led.recomputed_totals()
        fast = rec("c", 5)
        fast.speed, fast.web_search_requests = "fast", 2
        led.commit([fast, rec("a", 7)], pricer)
        stored = led._db.execute("SELECT dedup_key, speed, web_search, web_fetch FROM usage ORDER BY 1").fetchall()
        assert stored == [("a", None, 0, 0), ("b", None, 0, 0), ("c", "fast", 2, 0)]


def test_gauges_keep_the_latest_value_per_label_set(ledger):
    ledger.set_gauges(
        "deepseek_api", [Gauge("tokenbridge.balance", {"provider": "deepseek", "currency": "USD"}, Decimal("9.10"), 5)]
    )
    ledger.set_gauges(
        "deepseek_api", [Gauge("tokenbridge.balance", {"provider": "deepseek", "currency": "USD"}, Decimal("8.75"), 6)]
    )
    ledger.set_gauges(
        "deepseek_api", [Gauge("tokenbridge.balance", {"provider": "deepseek", "currency": "CNY"}, Decimal("12"), 6)]
    )
    got = {(g.labels["currency"], g.value) for g in ledger.gauges("tokenbridge.balance")}
    assert got == {("USD", Decimal("8.75")), ("CNY", Decimal("12"))}


def test_health_is_readable_by_another_process_and_counts_consecutive_failures(tmp_path):
    with Ledger.open(tmp_path) as writer:
        writer.record_health("openai_usage_api", "http_429", "rate limited")
        writer.record_health("openai_usage_api", "http_429", "rate limited")
        writer.record_health("claude_transcripts")
        out = subprocess.run(
            [sys.executable, "-c", _READ_HEALTH, str(tmp_path)], capture_output=True, text=True, check=True, cwd=ROOT
        )
    got = json.loads(out.stdout)
    assert got["openai_usage_api"] == {"kind": "http_429", "failures": 2, "success": False}
    assert got["claude_transcripts"] == {"kind": None, "failures": 0, "success": True}


_READ_HEALTH = """
import json, sys
from pathlib import Path
from bridge.ledger import Ledger
with Ledger.open(Path(sys.argv[1])) as led:
    print(json.dumps({h.source: {"kind": h.last_error_kind, "failures": h.consecutive_failures,
                                 "success": h.last_success_ms is not None} for h in led.health().values()}))
"""

_OPEN_AND_COMMIT = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
class P:
    def cost(self, *a, **k): return None
with Ledger.open(Path(sys.argv[1])) as led:
    ts = datetime(2026, 3, 2, tzinfo=UTC)
    led.commit([UsageRecord("s", "anthropic", "m", ts, sys.argv[2], Tokens(output=1))], P())
"""


def test_a_new_ledger_opened_by_several_processes_at_once_never_fails_locked(tmp_path):
    for attempt in range(3):  # the race is at creation: try it on several new ledgers
        state = tmp_path / str(attempt)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AND_COMMIT, str(state), f"k{i}"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(6)
        ]
        for p in procs:
            _out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        with Ledger.open(state) as led:
            assert led.request_count() == 6


def _corrupt_a_table_page(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='usage'").fetchone()[0]
    con.close()
    with open(path, "r+b") as f:  # garbage over the usage table's root page, past its header
        f.seek((root - 1) * page_size + 8)
        f.write(os.urandom(page_size - 16))


def test_a_damaged_ledger_is_refused_naming_the_file_and_nothing_is_written(tmp_path, pricer):
    from bridge.errors import LedgerError

    with Ledger.open(tmp_path) as led:
        led.commit([rec(f"k{i}") for i in range(2000)], pricer)
    path = tmp_path / "ledger.sqlite3"
    _corrupt_a_table_page(path)
    damaged = path.read_bytes()
    with pytest.raises(LedgerError) as err:
        Ledger.open(tmp_path, check=True)
    assert str(path) in str(err.value) and "damaged" in str(err.value)
    assert path.read_bytes() == damaged, "nothing may be written into a damaged ledger"


def test_disk_full_is_one_error_naming_the_ledger_and_the_batch_is_not_half_written(tmp_path, pricer):
    from bridge.errors import LedgerError

    with Ledger.open(tmp_path) as led:
        led.commit([rec("first")], pricer)
        pages = led._db.execute("PRAGMA page_count").fetchone()[0]
        led._db.execute(f"PRAGMA max_page_count={pages + 2}")  # what a full disk looks like to SQLite
        with pytest.raises(LedgerError) as err:
            led.commit([rec(f"k{i}", model="x" * 200) for i in range(5000)], pricer)
        assert str(tmp_path / "ledger.sqlite3") in str(err.value) and "full" in str(err.value)
        assert led.request_count() == 1
        assert led.totals() == led.recomputed_totals()


def _session_rec(key: str, session: str, out: int) -> UsageRecord:
    return UsageRecord("s", "anthropic", "m", datetime(2026, 1, 1, tzinfo=UTC), key, Tokens(0, out, 0, 0, 0),
                       session_id=session)  # fmt: skip


def test_fallback_rows_give_way_to_primary_rows_of_their_session_in_either_order(ledger, pricer):
    res = ledger.commit([_session_rec("fb:a:1", "a", 50), _session_rec("fb:b:1", "b", 7)], pricer, fallback="fb:")
    assert res.new_requests == 2
    res = ledger.commit([_session_rec("a-1", "a", 30)], pricer, fallback="fb:")
    assert res.tokens_added == 30 - 50  # the fallback row of session a went in the same transaction
    ledger.commit([_session_rec("fb:a:2", "a", 99)], pricer, fallback="fb:")  # a has primary rows now
    assert {t.session_id: t.tokens["output"] for t in ledger.totals()} == {"a": 30, "b": 7}
    assert ledger.totals() == ledger.recomputed_totals()
    assert {s: t.requests for s, t in ledger.fallback_sums("s", "fb:").items()} == {"b": 1}


def test_a_primary_session_retracts_only_its_own_fallback_rows(ledger, pricer):
    ledger.commit([_session_rec("fb:a:1", "a", 5), _session_rec("fb:a:b:1", "a:b", 6)], pricer, fallback="fb:")
    ledger.commit([_session_rec("a-1", "a", 1)], pricer, fallback="fb:")
    assert {t.session_id: t.tokens["output"] for t in ledger.totals()} == {"a": 1, "a:b": 6}


def test_sessions_stored_before_the_fallback_rule_are_known_as_primary(ledger, pricer):
    ledger.commit([_session_rec("a-1", "a", 30)], pricer)  # an older bridge: no fallback rule yet
    ledger.commit([_session_rec("fb:a:1", "a", 50), _session_rec("fb:c:1", "c", 5)], pricer, fallback="fb:")
    assert {t.session_id: t.tokens["output"] for t in ledger.totals()} == {"a": 30, "c": 5}


def usage_row(key: str, model: str, requests: int = 0, source: str = "anthropic_usage_api") -> UsageRecord:
    """A provider's usage bucket: tokens without a request count (Anthropic's usage report)."""
    return UsageRecord(
        source=source, provider="anthropic", model=model, timestamp=TS, dedup_key=key,
        tokens=Tokens(input=1000, output=10), requests=requests, replace=True,
    )  # fmt: skip


def test_a_row_without_a_request_count_and_without_a_price_is_one_unpriced_entry(ledger, pricer):
    ledger.commit([usage_row("u", "unknown-x"), usage_row("k", "m"), usage_row("k3", "m3", requests=3)], pricer)
    by_model = {t.model: (t.requests, t.unpriced, t.priced) for t in ledger.totals()}
    assert by_model == {"unknown-x": (0, 1, 0), "m": (0, 0, 1), "m3": (3, 0, 3)}
    assert ledger.unpriced_requests() == 1
    [row] = [r for r in ledger.aggregate("quarter") if r[1] == "unknown-x"]
    assert (row[8], row[9], row[10]) == (None, 1, 0)  # no known cost: None, never 0

    class Later:
        def cost(self, provider: str, model: str, tokens: Tokens, at: Any = None) -> Decimal:
            return Decimal("0.25")

    assert ledger.reprice_unknown(Later()) == 1
    assert {t.model: (t.unpriced, t.priced) for t in ledger.totals()}["unknown-x"] == (0, 1)
    assert ledger.totals() == ledger.recomputed_totals()


def test_schema_3_ledger_totals_are_recounted_from_the_rows(tmp_path, pricer):
    """A ledger written before schema 4 counted an unpriced row without a request count as 0
    unpriced and had no priced count; opening it recomputes the running totals from the rows."""
    import sqlite3

    with Ledger.open(tmp_path) as led:
        led.commit([usage_row("u", "unknown-x"), usage_row("k", "m"), rec("a", 7), rec("b", 9, model="unknown-y")],
                   pricer)  # fmt: skip
        led.commit([usage_row("gone", "unknown-z", source="anthropic_claude_code_api")], pricer)
        assert led.retract("anthropic_claude_code_api", 0) == 1  # its series keeps a row of zeros
        want = led.totals()
    con = sqlite3.connect(tmp_path / "ledger.sqlite3")
    con.executescript(
        # What schema 3 stored: unpriced = the requests of rows without a cost; no priced column.
        "ALTER TABLE totals DROP COLUMN priced; "
        "UPDATE totals SET unpriced = COALESCE((SELECT SUM(CASE WHEN u.cost_pusd IS NULL THEN u.requests ELSE 0 END) "
        "FROM usage u WHERE u.source = totals.source AND u.provider = totals.provider AND u.model = totals.model "
        "AND COALESCE(u.session_id, '') = totals.session_id), 0); "
        "UPDATE meta SET value='3' WHERE key='schema_version';"
    )
    old = dict(con.execute("SELECT model, unpriced FROM totals WHERE model LIKE 'unknown-%'").fetchall())
    con.close()
    assert old == {"unknown-x": 0, "unknown-y": 1, "unknown-z": 0}  # the bug: unknown-x read as $0
    with Ledger.open(tmp_path) as led:
        assert led._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        assert led.totals() == want
        assert {(t.source[:9], t.model): (t.requests, t.unpriced, t.priced) for t in led.totals()} == {
            ("anthropic", "unknown-x"): (0, 1, 0), ("anthropic", "m"): (0, 0, 1), ("anthropic", "unknown-z"): (0, 0, 0),
            ("claude_tr", "m"): (1, 0, 1), ("claude_tr", "unknown-y"): (1, 1, 0),
        }  # fmt: skip
        assert [t for t in led.totals() if t.model != "unknown-z"] == led.recomputed_totals()
        led.commit([usage_row("u", "unknown-x"), rec("c", 5)], pricer)  # the running totals go on from there
        after = {(t.source, t.model): (t.requests, t.unpriced, t.priced) for t in led.totals()}
        assert after[("claude_transcripts", "m")] == (2, 0, 2)
        assert after[("anthropic_usage_api", "unknown-x")] == (0, 1, 0)
        assert [t for t in led.totals() if t.model != "unknown-z"] == led.recomputed_totals()


def test_is_empty_until_the_first_row(ledger, pricer):
    assert ledger.is_empty()
    ledger.commit([rec("a", 3)], pricer)
    assert not ledger.is_empty()
    ledger.retract("claude_transcripts", 0)
    assert ledger.is_empty()
