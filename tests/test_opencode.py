"""OpenCode: one record per message id, database rows win over legacy JSON, a stored cost of 0
is not free, mutable rows add only their increase."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from bridge.ledger import Ledger
from bridge.sources.opencode import OpenCode
from tests.conftest import ledger_sums
from tests.test_cli import cli

SES = "ses_01JEXAMPLE00000000000001"


def message(
    mid: str,
    *,
    cost: float = 0.028725,
    output: int = 450,
    model: str = "claude-sonnet-4-5",
    provider: str = "anthropic",
    created: int = 1772446501000,
    **extra: Any,
) -> dict[str, Any]:
    """The spec's example message (local-formats.md §5.2)."""
    return {
        "id": mid, "sessionID": SES, "role": "assistant", "providerID": provider, "modelID": model,
        "time": {"created": created, "completed": created + 18000}, "cost": cost,
        "tokens": {"input": 1200, "output": output, "reasoning": 0, "cache": {"read": 30000, "write": 2500}},
        **extra,
    }  # fmt: skip


def make_db(root: Path, *msgs: dict[str, Any], name: str = "opencode.db") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS message (id TEXT PRIMARY KEY, session_id TEXT, data TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS session (id TEXT PRIMARY KEY, directory TEXT)")
    db.execute("INSERT OR REPLACE INTO session VALUES (?, ?)", (SES, "/home/dev/shop"))
    for m in msgs:
        data = {k: v for k, v in m.items() if k != "id"}
        db.execute("INSERT OR REPLACE INTO message VALUES (?,?,?)", (m["id"], m["sessionID"], json.dumps(data)))
    db.commit()
    db.close()
    return path


def legacy(root: Path, msg: dict[str, Any]) -> Path:
    p = root / "storage" / "message" / msg["sessionID"] / f"{msg['id']}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(msg, indent=2))
    return p


def scan(root: Path, ledger: Ledger, pricer) -> dict[str, int]:
    OpenCode([root], True).scan(ledger, pricer)
    return ledger_sums(ledger)


ONE = {"input": 1200, "output": 450, "cacheRead": 30000, "cacheCreation": 2500, "requests": 1}


def test_db_row_and_legacy_json_of_one_message_count_once_row_wins(tmp_path, ledger, pricer):
    make_db(tmp_path, message("msg_01JEXAMPLE0000000000000001", cost=0.028725))
    legacy(tmp_path, message("msg_01JEXAMPLE0000000000000001", output=9999, cost=5.0))  # stale copy
    assert scan(tmp_path, ledger, pricer) == ONE
    [t] = ledger.totals()
    assert str(t.cost) == "0.028725"  # the row's reported cost, not the legacy one
    assert ledger.aggregate("session")[0][3].endswith("|/home/dev/shop")


def test_rescan_restart_and_updated_row_add_only_the_increase(tmp_path, pricer):
    make_db(tmp_path, message("msg_1", output=100))
    with Ledger.open(tmp_path / "state") as led:
        scan(tmp_path, led, pricer)
    make_db(tmp_path, message("msg_1", output=450))  # the message completed: same id, more tokens
    with Ledger.open(tmp_path / "state") as led:
        assert scan(tmp_path, led, pricer) == ONE
        assert scan(tmp_path, led, pricer) == ONE


def test_zero_cost_is_estimated_or_unknown_never_free(tmp_path, ledger, pricer):
    make_db(tmp_path, message("msg_1", cost=0), message("msg_2", cost=0, model="unknown-model-x", provider="acme"))
    scan(tmp_path, ledger, pricer)
    by_model = {t.model: t for t in ledger.totals()}
    assert by_model["claude-sonnet-4-5"].cost > 0  # estimated from tokens (FlatPricer)
    assert by_model["unknown-model-x"].unpriced == 1 and by_model["unknown-model-x"].provider == "acme"


def test_legacy_only_messages_and_a_malformed_document(tmp_path, ledger, pricer):
    legacy(tmp_path, message("msg_1", project=None, path={"cwd": "/home/dev/shop/src", "root": "/home/dev/shop"}))
    bad = tmp_path / "storage" / "message" / SES / "msg_2.json"
    bad.write_text('{"id": "msg_2", "tokens": {"input": -4}, "time": {"created": 1}}')
    user = message("msg_3")
    user["role"] = "user"
    legacy(tmp_path, user)
    assert scan(tmp_path, ledger, pricer) == ONE
    assert ledger.source_summary("opencode")["skipped"] == 1


def test_cli_sync_opencode_then_report_daily_exact_totals(cli_env, tmp_path):
    root = tmp_path / "opencode"
    make_db(root, message("msg_1"), message("msg_2", created=1772532901000, output=50, cost=0.01))
    env = {**cli_env, "OPENCODE_DATA_DIR": str(root)}
    for _ in range(2):
        out = cli(env, "sync", "--no-export", "--source", "opencode")
        assert out.returncode == 0, out.stderr
    data = json.loads(cli(env, "report", "daily", "--json", "--source", "opencode").stdout)
    assert [(d["date"], d["outputTokens"], d["totalCost"]) for d in data["daily"]] == [
        ("2026-03-02", 450, "0.028725"),
        ("2026-03-03", 50, "0.01"),
    ]
    assert data["totals"]["inputTokens"] == 2400 and data["totals"]["requests"] == 2


def test_a_wal_file_event_rereads_its_database(tmp_path, ledger, pricer):
    db = make_db(tmp_path, message("msg_1"))
    src = OpenCode([tmp_path], True)
    src.scan(ledger, pricer, paths=[db.with_name("opencode.db-wal")])
    assert ledger_sums(ledger) == ONE


def test_unchanged_rows_are_not_merged_again_but_changed_ones_are(tmp_path, ledger, pricer, monkeypatch):
    db = make_db(tmp_path, message("msg_1", output=100), message("msg_2", created=1772446601000))
    src = OpenCode([tmp_path], True)
    src.scan(ledger, pricer)
    seen: list[int] = []
    real = Ledger.commit
    monkeypatch.setattr(
        Ledger, "commit", lambda self, recs, *a, **kw: seen.append(len(recs)) or real(self, recs, *a, **kw)
    )
    make_db(tmp_path, message("msg_1", output=450))  # one row changed
    src.scan(ledger, pricer, paths=[db])
    assert seen == [1]
    assert ledger_sums(ledger)["output"] == 900
