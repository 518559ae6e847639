"""Amp threads: usage-ledger events and message usage describe one request once; whole-file
rewrites add only what is new."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bridge.ledger import Ledger
from bridge.sources.amp import Amp, parse_thread
from tests.conftest import ledger_sums
from tests.test_cli import cli

TID = "T-7f3c2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b"


def assistant(
    mid: int,
    *,
    inp: int = 100,
    out: int = 50,
    write: int = 20,
    read: int = 10,
    model: str = "claude-sonnet-4-5",
    ts: str = "2026-05-01T01:02:03.000Z",
) -> dict[str, Any]:
    return {
        "role": "assistant", "messageId": mid, "content": [{"type": "text", "text": "done"}],
        "usage": {"model": model, "timestamp": ts, "inputTokens": inp, "outputTokens": out,
                  "cacheCreationInputTokens": write, "cacheReadInputTokens": read,
                  "totalTokens": inp + out + write + read},
    }  # fmt: skip


def event(eid: str, to: int | None, *, inp: int = 100, out: int = 50, ts: str = "2026-05-01T01:02:03.000Z"):
    e: dict[str, Any] = {"id": eid, "timestamp": ts, "model": "claude-sonnet-4-5", "credits": 1.25,
                         "tokens": {"input": inp, "output": out, "total": inp + out}}  # fmt: skip
    if to is not None:
        e["toMessageId"] = to
    return e


def thread(root: Path, messages: list[Any], events: list[Any] | None = None) -> Path:
    trees = [{"displayName": "shop", "uri": "file:///home/dev/shop"}]
    doc: dict[str, Any] = {"v": 42, "id": TID, "created": 1777597323000, "messages": messages}
    doc["env"] = {"initial": {"trees": trees}}
    if events is not None:
        doc["usageLedger"] = {"events": events}
    p = root / "threads" / f"{TID}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.stat().st_mtime_ns if p.exists() else 0
    p.write_text(json.dumps(doc, indent=2))
    os.utime(p, ns=(old + 10**9, old + 10**9))  # whole-file rewrite: a new mtime
    return p


def scan(root: Path, ledger: Ledger, pricer) -> dict[str, int]:
    Amp([root], True).scan(ledger, pricer)
    return ledger_sums(ledger)


ONE = {"input": 100, "output": 50, "cacheRead": 10, "cacheCreation": 20, "requests": 1}


def test_ledger_event_and_message_usage_are_one_request(tmp_path, ledger, pricer):
    user = {"role": "user", "messageId": 1, "content": []}
    thread(tmp_path, [user, assistant(2)], [event("ev-1", 2)])
    assert scan(tmp_path, ledger, pricer) == ONE
    assert ledger.aggregate("session")[0][0] == TID
    assert ledger.aggregate("session")[0][3].endswith("|/home/dev/shop")


def test_older_thread_takes_cache_split_from_the_message(tmp_path):
    # An older message carries only the cache split; the event carries input and output.
    msg = {"role": "assistant", "messageId": 2, "usage": {"cacheCreationInputTokens": 20, "cacheReadInputTokens": 10,
                                                          "timestamp": "2026-05-01T01:02:03.000Z"}}  # fmt: skip
    p = thread(tmp_path, [msg], [event("ev-1", 2)])
    recs = parse_thread(p, p.read_bytes()).records
    assert {r.dedup_key for r in recs} == {f"amp:{TID}:m2"}


def test_rewrites_with_new_turns_add_only_the_new_turns(tmp_path, pricer):
    thread(tmp_path, [assistant(2)], [event("ev-1", 2)])
    with Ledger.open(tmp_path / "state") as led:
        assert scan(tmp_path, led, pricer) == ONE
    turns = [assistant(2), assistant(4, inp=7, out=3, write=0, read=500)]
    thread(tmp_path, turns, [event("ev-1", 2), event("ev-2", 4, inp=7, out=3)])
    with Ledger.open(tmp_path / "state") as led:  # after a restart
        want = {"input": 107, "output": 53, "cacheRead": 510, "cacheCreation": 20, "requests": 2}
        assert scan(tmp_path, led, pricer) == want
        assert scan(tmp_path, led, pricer) == want


def test_event_without_message_counts_by_its_own_id(tmp_path, ledger, pricer):
    thread(tmp_path, [], [event("ev-9", None, inp=40, out=2)])
    assert scan(tmp_path, ledger, pricer) == {
        "input": 40,
        "output": 2,
        "cacheRead": 0,
        "cacheCreation": 0,
        "requests": 1,
    }


def test_half_written_thread_is_skipped_and_read_on_the_next_rewrite(tmp_path, ledger, pricer):
    p = thread(tmp_path, [assistant(2)])
    full = p.read_text()
    p.write_text(full[:100])
    assert scan(tmp_path, ledger, pricer)["requests"] == 0
    assert ledger.source_summary("amp")["skipped"] == 1
    thread(tmp_path, [assistant(2)])
    assert scan(tmp_path, ledger, pricer) == ONE


def test_unknown_model_stays_unpriced(tmp_path, ledger, pricer):
    thread(tmp_path, [assistant(2, model="unknown-amp-model")])
    scan(tmp_path, ledger, pricer)
    [t] = ledger.totals()
    assert t.unpriced == 1 and t.model == "unknown-amp-model"


def test_cli_sync_amp_then_report_daily_exact_totals(cli_env, tmp_path):
    root = tmp_path / "amp"
    thread(root, [assistant(2), assistant(4, inp=7, out=3, write=0, read=500, ts="2026-05-02T09:00:00.000Z")],
           [event("ev-1", 2), event("ev-2", 4, inp=7, out=3, ts="2026-05-02T09:00:00.000Z")])  # fmt: skip
    env = {**cli_env, "AMP_DATA_DIR": str(root)}
    for _ in range(2):
        assert cli(env, "sync", "--no-export", "--source", "amp").returncode == 0
    data = json.loads(cli(env, "report", "daily", "--json", "--source", "amp").stdout)
    got = [(d["date"], d["inputTokens"], d["outputTokens"], d["cacheReadTokens"], d["requests"]) for d in data["daily"]]
    assert got == [("2026-05-01", 100, 50, 10, 1), ("2026-05-02", 7, 3, 500, 1)]
    assert data["totals"]["totalCost"] is not None
