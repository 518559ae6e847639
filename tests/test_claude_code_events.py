"""Claude Code's api_request events as usage records, and how the ledger merges them with the transcript lines
of the same requests (one row per request id, whichever arrives first)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from google.protobuf.json_format import MessageToJson

from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.sources.claude_code_events import NAME, from_json, from_protobuf, skipped_state
from bridge.sources.claude_transcripts import ClaudeTranscripts
from tests._events import api_request, event, logs_request
from tests.conftest import ClaudeHome, FlatPricer, assistant_line
from tests.conftest import ledger_sums as sums

SONNET = "claude-sonnet-4-5-20250929"
SESSION = "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f"  # the conftest transcript's session
# The tokens of conftest's assistant_line: one request seen by both sources.
LINE_TOKENS = {"input_tokens": 4, "output_tokens": 187, "cache_read_tokens": 48000, "cache_creation_tokens": 1200}


def _event(req: str, *, cost: float = 0.0, strings: bool = False, **tokens: int) -> dict:
    t = {**LINE_TOKENS, **tokens}
    return api_request(SESSION, req, SONNET, duration_ms=900, cost_usd=cost, numbers_as_strings=strings, **t)


def _ingest_events(ledger: Ledger, pricer: FlatPricer, *events: dict) -> int:
    batch = from_protobuf(logs_request(list(events)).SerializeToString())
    return ledger.commit(batch.records, pricer, state=skipped_state(ledger, batch)).new_requests


def _scan(home: ClaudeHome, ledger: Ledger, pricer: FlatPricer) -> None:
    ClaudeTranscripts(roots=[home.root]).scan(ledger, pricer)


def _rows(ledger: Ledger) -> dict[str, tuple]:
    q = "SELECT dedup_key, source, output, cost_origin, cost_pusd, group_key, sidechain FROM usage"
    return {r[0]: r[1:] for r in ledger._db.execute(q)}


# -- parsing -------------------------------------------------------------------------------------


def test_api_request_event_becomes_one_record_keyed_by_request_id_with_reported_cost():
    batch = from_protobuf(logs_request([_event("req_A", cost=0.0421)]).SerializeToString())
    (rec,) = batch.records
    assert (rec.source, rec.dedup_key, rec.model, rec.provider, rec.session_id) == (
        NAME,
        "cc-req:req_A",
        SONNET,
        "anthropic",
        SESSION,
    )
    assert (rec.tokens.input, rec.tokens.output, rec.tokens.cache_read, rec.tokens.cache_creation) == (
        4,
        187,
        48000,
        1200,
    )
    assert rec.cost == Decimal("0.0421") and rec.cost_origin == "reported"
    assert rec.group_key is None and not rec.is_sidechain
    assert batch.rejected == 0


def test_numbers_as_strings_from_older_versions_read_the_same():
    new = from_protobuf(logs_request([_event("req_A", cost=0.5)]).SerializeToString()).records
    old = from_protobuf(logs_request([_event("req_A", cost=0.5, strings=True)]).SerializeToString()).records
    assert [(r.tokens, r.cost, r.dedup_key) for r in old] == [(r.tokens, r.cost, r.dedup_key) for r in new]


def test_otlp_json_and_protobuf_give_the_same_records():
    req = logs_request([_event("req_A", cost=0.25), _event("req_B", output_tokens=9)])
    pb = from_protobuf(req.SerializeToString()).records
    js = from_json(MessageToJson(req).encode()).records
    assert [(r.dedup_key, r.tokens, r.cost, r.timestamp, r.session_id) for r in js] == [
        (r.dedup_key, r.tokens, r.cost, r.timestamp, r.session_id) for r in pb
    ]
    assert len(pb) == 2


def test_zero_cost_is_no_reported_cost_and_other_events_are_ignored():
    batch = from_protobuf(
        logs_request(
            [
                _event("req_A", cost=0.0),
                event("tool_result", SESSION, {"tool_name": "Bash", "success": "true", "duration_ms": 4}),
                event("user_prompt", SESSION, {"prompt_length": 3}),
            ]
        ).SerializeToString()
    )
    (rec,) = batch.records
    assert rec.cost is None and rec.cost_origin == "unknown"  # priced by the ledger, never $0
    assert batch.rejected == 0


def test_events_of_other_programs_are_not_claude_code_usage():
    req = logs_request([_event("req_A")], resource_extra={"service.name": "gemini-cli"})
    assert from_protobuf(req.SerializeToString()).records == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"request_id": ""}, "request_id"),
        ({"output_tokens": -5}, "output_tokens"),
        ({"input_tokens": "lots"}, "input_tokens"),
        ({"cost_usd": 1e9, "cost_usd_micros": ""}, "cost_usd"),
        ({"event.timestamp": "yesterday"}, "event.timestamp"),
    ],
)
def test_a_bad_event_is_rejected_naming_the_field_and_the_others_still_count(fields, named):
    bad = _event("req_bad")
    bad["attributes"].update(fields)
    batch = from_protobuf(logs_request([bad, _event("req_ok")]).SerializeToString())
    assert [r.dedup_key for r in batch.records] == ["cc-req:req_ok"]
    assert batch.rejected == 1 and named in (batch.reason or "")


def test_a_body_that_is_not_otlp_is_a_bad_request():
    from bridge.sources.claude_code_events import BadRequest

    with pytest.raises(BadRequest):
        from_protobuf(b"\xff\xff\xff not protobuf")
    with pytest.raises(BadRequest):
        from_json(b"{not json")


# -- one request, two sources: counted once --------------------------------------------------------


@pytest.mark.parametrize("event_first", [True, False])
def test_request_in_transcript_and_as_event_counts_once(claude_home, ledger, pricer, event_first):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A"), assistant_line("msg_B", "req_B", output=50))
    if event_first:
        _ingest_events(ledger, pricer, _event("req_A"), _event("req_C", output_tokens=7))
        _scan(claude_home, ledger, pricer)
    else:
        _scan(claude_home, ledger, pricer)
        _ingest_events(ledger, pricer, _event("req_A"), _event("req_C", output_tokens=7))
    # req_A in both, req_B only in the transcript, req_C only as an event (another machine): the union.
    assert sums(ledger) == {"input": 12, "output": 187 + 50 + 7, "cacheRead": 144000, "cacheCreation": 3600,
                            "requests": 3}  # fmt: skip
    assert ledger.totals() == ledger.recomputed_totals()
    rows = _rows(ledger)
    assert set(rows) == {"cc-req:req_A", "cc-req:req_B", "cc-req:req_C"}
    # The first arrival keeps the row's series; the event row learns the line's message id.
    assert rows["cc-req:req_A"][0] == (NAME if event_first else "claude_transcripts")
    assert rows["cc-req:req_A"][4] == "msg_A"


def test_streamed_partial_line_and_final_event_keep_the_maximum(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", output=3, stop_reason=None))
    _scan(claude_home, ledger, pricer)
    _ingest_events(ledger, pricer, _event("req_A", output_tokens=187))
    assert sums(ledger)["output"] == 187 and sums(ledger)["requests"] == 1
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", output=187))
    _scan(claude_home, ledger, pricer)
    assert sums(ledger)["output"] == 187 and sums(ledger)["requests"] == 1


@pytest.mark.parametrize("event_first", [True, False])
def test_the_event_cost_is_the_reported_cost_whichever_arrives_first(claude_home, ledger, pricer, event_first):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    if event_first:
        _ingest_events(ledger, pricer, _event("req_A", cost=0.0931))
        _scan(claude_home, ledger, pricer)
    else:
        _scan(claude_home, ledger, pricer)
        _ingest_events(ledger, pricer, _event("req_A", cost=0.0931))
    (row,) = _rows(ledger).values()
    assert row[2:4] == ("reported", 93_100_000_000)  # $0.0931 in pico-dollars
    assert ledger.totals() == ledger.recomputed_totals()


def test_resent_events_add_nothing(ledger, pricer):
    assert _ingest_events(ledger, pricer, _event("req_A", cost=0.01), _event("req_B")) == 2
    before = sums(ledger)
    assert _ingest_events(ledger, pricer, _event("req_A", cost=0.01), _event("req_B")) == 0
    assert sums(ledger) == before


def test_replay_of_a_parent_first_seen_as_an_event_still_folds(claude_home, ledger, pricer):
    """The parent request arrives as an event, its line gives the row its message id, and a sidechain replay
    of that message (another request id) read later is dropped as for transcript rows."""
    _ingest_events(ledger, pricer, _event("req_parent"))
    claude_home.append(claude_home.session_file(), assistant_line("msg_P", "req_parent"))
    _scan(claude_home, ledger, pricer)
    claude_home.append(claude_home.session_file(sub="btw1"), assistant_line("msg_P", "req_replay", sidechain=True))
    _scan(claude_home, ledger, pricer)
    assert sums(ledger)["requests"] == 1
    assert set(_rows(ledger)) == {"cc-req:req_parent"}
    assert ledger.totals() == ledger.recomputed_totals()


def test_subagent_request_first_seen_as_an_event_becomes_a_sidechain_row(claude_home, ledger, pricer):
    _ingest_events(ledger, pricer, _event("req_S", output_tokens=9))
    claude_home.append(claude_home.session_file(sub="a1"), assistant_line("msg_S", "req_S", sidechain=True, output=9))
    _scan(claude_home, ledger, pricer)
    (row,) = _rows(ledger).values()
    assert row[0] == NAME and row[5] == 1  # its series stays, the line's sidechain flag is kept
    assert sums(ledger)["requests"] == 1


def test_rejected_events_are_counted_for_sources(ledger, pricer):
    bad = _event("x")
    bad["attributes"]["request_id"] = ""
    _ingest_events(ledger, pricer, bad, bad)
    _ingest_events(ledger, pricer, bad)
    info = ledger.source_summary(NAME)
    assert info["skipped"] == 3
    assert "request_id" in (ledger.state(NAME, "last_skipped") or "")


# -- the one-time re-keying of stored transcript rows ----------------------------------------------


def _old_ledger(path, rows: list[tuple[str, int]], pricer: FlatPricer) -> None:
    with Ledger(path) as led:
        recs = [
            UsageRecord(
                "claude_transcripts",
                "anthropic",
                SONNET,
                datetime(2026, 3, 2, 10, tzinfo=UTC),
                key,
                Tokens(input=1, output=out),
                session_id="s",
                group_key=key.split(":")[1],
            )
            for key, out in rows
        ]
        led.commit(recs, pricer)
        led._db.execute("DELETE FROM meta WHERE key='claude_keys_by_request'")  # as written before the change


def test_stored_transcript_keys_are_rewritten_once_and_totals_do_not_move(tmp_path, pricer):
    path = tmp_path / "ledger.sqlite3"
    _old_ledger(path, [("cc:msg_A:req_A", 10), ("cc:msg_B:", 20), ("cc:msg_X:req_S", 30), ("cc:msg_Y:req_S", 40)],
                pricer)  # fmt: skip
    with Ledger(path) as led:
        before = led.totals()
    with Ledger(path) as led:
        keys = {r[0] for r in led._db.execute("SELECT dedup_key FROM usage")}
        # msg_X and msg_Y under one request id (a gateway): the second keeps its old key and its row.
        assert keys == {"cc-req:req_A", "cc:msg_B:", "cc-req:req_S", "cc:msg_Y:req_S"} or keys == {
            "cc-req:req_A",
            "cc:msg_B:",
            "cc-req:req_S",
            "cc:msg_X:req_S",
        }
        assert led.totals() == before == led.recomputed_totals()
        assert led._db.execute("SELECT 1 FROM meta WHERE key='claude_keys_by_request'").fetchone()


def test_after_rekeying_a_reread_line_and_its_event_add_nothing(tmp_path, claude_home, pricer):
    path = tmp_path / "state" / "ledger.sqlite3"
    _old_ledger(path, [("cc:msg_A:req_A", 187)], pricer)
    with Ledger(path) as led:
        led._db.execute(
            "UPDATE usage SET input=4, cache_read=48000, cache_creation=1200, session_id=?", (SESSION,)
        )  # the stored row of conftest's line
        led._db.execute("DELETE FROM totals")
        led._db.execute(
            "INSERT INTO totals SELECT source, provider, model, session_id, SUM(input), SUM(output), SUM(cache_read), "
            "SUM(cache_creation), SUM(cost_pusd), SUM(requests), 0, SUM(requests) FROM usage GROUP BY 1, 2, 3, 4"
        )
    with Ledger(path) as led:
        before = sums(led)
        claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
        _scan(claude_home, led, pricer)
        _ingest_events(led, pricer, _event("req_A"))
        assert sums(led) == before
