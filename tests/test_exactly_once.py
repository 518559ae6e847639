"""Exactly-once across modules: edge cases found by a second reading of the code.

Each test names a scenario that once broke (or could break) exactly-once; tests prefixed
``test_verified_`` pin down scenarios that were checked and found sound.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.sources.claude_stats_cache import TRANSCRIPTS_SCANNED, ClaudeStatsCache
from bridge.sources.claude_transcripts import ClaudeTranscripts
from tests.conftest import ClaudeHome, FlatPricer, assistant_line, user_tool_result
from tests.conftest import ledger_sums as sums
from tests.test_claude_stats_cache import SONNET, by_day, stats_doc, write


def scan(home: ClaudeHome, ledger: Ledger, pricer, **kw):  # type: ignore[no-untyped-def]
    return ClaudeTranscripts(roots=[home.root]).scan(ledger, pricer, **kw)


# -- 1. sidechain fold: two replays stored before their parent -------------------------------


def test_two_sidechain_replays_before_parent_are_both_folded(claude_home, ledger, pricer):
    """Two /btw logs replay parent message msg_P (new requestIds each) and are read before the
    parent line. When the parent arrives, _load_group_rivals keeps only ONE rival per incoming
    record (setdefault), so only one replay row is deleted; the other stays counted.
    The same three lines in one batch collapse to one request (order/batch dependence)."""
    parent = claude_home.session_file()
    claude_home.append(claude_home.session_file(sub="btw1"), assistant_line("msg_P", "req_r1", sidechain=True))
    claude_home.append(claude_home.session_file(sub="btw2"), assistant_line("msg_P", "req_r2", sidechain=True))
    scan(claude_home, ledger, pricer)
    claude_home.append(parent, assistant_line("msg_P", "req_parent"))
    scan(claude_home, ledger, pricer)
    assert ledger.totals() == ledger.recomputed_totals()
    assert sums(ledger)["requests"] == 1, "all in one batch gives 1 request; replays first gives 2"
    assert sums(ledger)["output"] == 187


# -- 2. sidechain fold: two replays of a stored parent in one batch (stale row used twice) -----


def test_two_replays_folding_into_one_stored_parent_in_one_batch_keep_totals_equal_to_rows(claude_home, ledger, pricer):
    """Parent msg_P was stored from a streamed intermediate line (output 3). Next pass, two
    sidechain replays (different requestIds) land in one batch. Both meet the same stored
    parent; computing both against one stale `old` row once made the totals drift above the
    rows. A replay never changes the parent's values (issue 6): the parent keeps its own 3."""
    claude_home.append(claude_home.session_file(), assistant_line("msg_P", "req_parent", output=3, stop_reason=None))
    scan(claude_home, ledger, pricer)
    claude_home.append(claude_home.session_file(sub="btw1"), assistant_line("msg_P", "req_r1", sidechain=True))
    claude_home.append(claude_home.session_file(sub="btw2"), assistant_line("msg_P", "req_r2", sidechain=True))
    scan(claude_home, ledger, pricer)
    assert sums(ledger)["output"] == 3 and sums(ledger)["requests"] == 1
    assert ledger.totals() == ledger.recomputed_totals()


def _rec(key: str, session: str, side: bool, out: int, group: str = "msg_P") -> UsageRecord:
    return UsageRecord(
        source="claude_transcripts",
        provider="anthropic",
        model="m",
        timestamp=datetime(2026, 3, 2, 10, tzinfo=UTC),
        dedup_key=key,
        tokens=Tokens(input=1, output=out),
        session_id=session,
        group_key=group,
        is_sidechain=side,
    )


def test_two_parents_claiming_one_stored_replay_keep_totals_equal_to_rows(ledger, pricer):
    """Same root cause as above, other branch: a stored replay (msg_P, sidechain) and, in one
    batch, two non-sidechain lines of msg_P with different keys (one behind a gateway without
    requestId). Both take the replay as their rival, both delete it and subtract it from totals."""
    ledger.commit([_rec("cc-req:req_r", "s", True, 100)], pricer)
    ledger.commit([_rec("cc-req:req_1", "s", False, 100), _rec("cc:msg_P:", "s", False, 100)], pricer)
    assert ledger.totals() == ledger.recomputed_totals()
    # Two separate requests (a gateway may reuse message.id); the replay folds into one of them.
    assert sum(t.requests for t in ledger.totals()) == 2


# -- 3. a poison line stops the whole source forever ------------------------------------------


def test_huge_token_count_is_skipped_not_fatal_for_the_whole_batch(claude_home, ledger, pricer):
    """A corrupt line with output_tokens = 10**13 passes _int (non-negative int) but its cost in
    pico-dollars exceeds SQLite's INTEGER range (OverflowError at commit). The exception rolls
    back the whole batch (every file in it) and escapes scan(); every later pass fails the same
    way, so nothing new is ever ingested again. (2**63 tokens overflows even without a price.)"""
    bad = claude_home.session_file("11111111-1111-4111-8111-111111111111")
    good = claude_home.session_file("22222222-2222-4222-8222-222222222222")
    claude_home.append(bad, assistant_line("msg_BAD", "req_BAD", output=10**13))
    claude_home.append(good, assistant_line("msg_OK", "req_OK"))
    stats = scan(claude_home, ledger, pricer)  # actual: OverflowError: Python int too large ...
    assert ledger.tokens_for(["cc-req:req_OK"]), "the good file must be ingested"
    assert stats.malformed >= 1 or stats.errors


# -- 4. stats cache double counts days when the transcript cutoff moves earlier ---------------


def test_stats_cache_days_are_not_double_counted_after_a_days_limited_first_sync(claude_home, ledger, pricer):
    """`tokenbridge sync --days 1` first: an old transcript (2026-03-02, mtime 10 days ago) is
    skipped, the newer one (03-05) is read and the transcripts are marked scanned. The stats
    cache then imports every day before 03-05, including 03-02. A later full sync reads the old
    transcript: day 03-02 is now counted by both sources (the cutoff moved, stats rows stay)."""
    old = claude_home.session_file("11111111-1111-4111-8111-111111111111")
    new = claude_home.session_file("22222222-2222-4222-8222-222222222222")
    claude_home.append(old, assistant_line("msg_OLD", "req_OLD", ts="2026-03-02T10:00:00.000Z"))
    claude_home.append(new, assistant_line("msg_NEW", "req_NEW", ts="2026-03-05T10:00:00.000Z"))
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).timestamp()
    os.utime(old, (ten_days_ago, ten_days_ago))
    write(claude_home, stats_doc({"2026-03-02": {SONNET: 49391}, "2026-03-05": {SONNET: 49391}}, "2026-03-05"))
    stats_src = ClaudeStatsCache([claude_home.root], tz=UTC)

    scan(claude_home, ledger, pricer, since=datetime.now(UTC) - timedelta(days=1))  # sync --days 1
    ledger.set_state(*TRANSCRIPTS_SCANNED, "1")
    stats_src.scan(ledger, pricer)
    scan(claude_home, ledger, pricer)  # later full sync
    stats_src.scan(ledger, pricer)

    rows = ledger.aggregate("quarter")
    day = [r for r in rows if datetime.fromtimestamp(r[0] * 900, UTC).date().isoformat() == "2026-03-02"]
    tokens_0302 = sum(r[4] + r[5] + r[6] + r[7] for r in day)
    assert tokens_0302 == 49391, f"day 2026-03-02 counted by transcripts AND stats cache: {by_day(ledger)}"


# -- 5. the parse worker dying aborts the scan -----------------------------------------------


def _dying_worker(items: list[object]) -> list[object]:
    os._exit(1)  # e.g. the OOM killer


def test_parse_worker_death_does_not_abort_the_scan(claude_home, ledger, pricer, monkeypatch):
    """With the parse worker in use, a dead worker raises BrokenProcessPool (a RuntimeError, not
    OSError) out of read_in_worker → scan() → ingest(): `sync` fails, and `run` dies in its
    initial ingest (only later passes are guarded by _pass). No fallback to in-process reading."""
    import bridge.sources.claude_transcripts as ct

    monkeypatch.setenv("TOKENBRIDGE_PARALLEL_MIN_BYTES", "0")
    monkeypatch.setattr(ct, "_read_files", _dying_worker)
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    stats = scan(claude_home, ledger, pricer)  # actual: BrokenProcessPool
    assert sums(ledger)["requests"] == 1 or stats.errors


def test_verified_parse_worker_death_loses_and_doubles_nothing(claude_home, ledger, pricer, monkeypatch):
    """A dead worker's files are read in-process, once; later passes add nothing."""
    import bridge.sources.claude_transcripts as ct

    monkeypatch.setenv("TOKENBRIDGE_PARALLEL_MIN_BYTES", "0")
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    with monkeypatch.context() as m:
        m.setattr(ct, "_read_files", _dying_worker)
        scan(claude_home, ledger, pricer)  # the worker dies: this process reads the file instead
    scan(claude_home, ledger, pricer)
    scan(claude_home, ledger, pricer)
    assert sums(ledger)["requests"] == 1 and sums(ledger)["output"] == 187


# -- 6. same-size in-place rewrite while the file had a partial last line ---------------------


def test_same_size_rewrite_is_detected_when_cursor_stopped_before_a_partial_line(claude_home, ledger, pricer):
    """Cursor stored while a partial last line was pending (offset < size). The file is then
    rewritten in place with the same size and head (mtime changes). An append always grows the
    file, so this can only be a rewrite; plan_read's same-size rule requires offset == size and
    misses it: reading resumes at the old offset and msg_C, which sits before it, is never read."""
    f = claude_home.session_file()
    a = assistant_line("msg_A", "req_A")
    b = assistant_line("msg_B", "req_B", output=1)
    c = assistant_line("msg_C", "req_C", output=2)
    assert len(b) == len(c)
    tail = '{"type":"summary","summary":"' + "x" * 19  # 49 bytes, still being written
    f.write_bytes(f"{a}\n{b}\n{tail}".encode())
    scan(claude_home, ledger, pricer)
    st = f.stat()
    pad = st.st_size - len(f"{a}\n{c}\n") - len('{"type":"summary","summary":""}\n')
    filler = '{"type":"summary","summary":"' + "y" * pad + '"}'
    new = f"{a}\n{c}\n{filler}\n".encode()
    assert len(new) == st.st_size
    with f.open("r+b") as fh:  # same inode, same size, same first 256 bytes
        fh.write(new)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    scan(claude_home, ledger, pricer)
    assert ledger.tokens_for(["cc-req:req_C"]), "msg_C was rewritten into the file and never read"


# -- 7. price chosen by the latest line's timestamp: batch-dependent, can go down -------------


@pytest.mark.parametrize(
    ("model", "t1", "t2"),
    [
        ("deepseek-chat", "2026-03-02T16:29:59.000Z", "2026-03-02T16:30:01.000Z"),  # off-peak starts
        ("claude-sonnet-4-6", "2026-03-12T23:59:58.000Z", "2026-03-13T00:00:02.000Z"),  # 1M flat pricing
    ],
)
def test_cost_of_a_request_does_not_depend_on_batch_boundaries(tmp_path, model, t1, t2):
    """One streamed response: first line at t1, final line at t2 (same key). The row keeps t1 as
    its time, but _merged_row prices the merged tokens at rec.timestamp, i.e. the LATEST line's
    time when the lines land in different passes. Read in one pass: priced at t1; in two passes:
    priced at t2. Across the deepseek off-peak boundary or sonnet-4-6's 2026-03-13 change the
    row's cost goes DOWN while its tokens go up (the exported cost counter would decrease)."""
    from bridge.pricing import Pricer

    pricer = Pricer(None)
    kw = {"model": model, "input": 250_000 if "sonnet" in model else 4}
    first = assistant_line("msg_A", "req_A", output=3, stop_reason=None, ts=t1, **kw)
    final = assistant_line("msg_A", "req_A", output=187, ts=t2, **kw)

    one = ClaudeHome(tmp_path / "one")
    (one.root / "projects").mkdir(parents=True)
    one.append(one.session_file(), first, final)
    with Ledger.open(tmp_path / "s1") as led:
        scan(one, led, pricer)
        one_pass = led.totals()[0].cost

    two = ClaudeHome(tmp_path / "two")
    (two.root / "projects").mkdir(parents=True)
    with Ledger.open(tmp_path / "s2") as led:
        two.append(two.session_file(), first)
        scan(two, led, pricer)
        after_first = led.totals()[0].cost
        two.append(two.session_file(), final)
        scan(two, led, pricer)
        two_passes = led.totals()[0].cost
    assert two_passes >= after_first, f"cost went down: {after_first} -> {two_passes}"
    assert two_passes == one_pass


# -- verified sound -------------------------------------------------------------------------


def test_verified_crlf_lines_parse_and_are_not_malformed(claude_home, ledger, pricer):
    f = claude_home.session_file()
    f.write_bytes((assistant_line("msg_A", "req_A") + "\r\n" + user_tool_result("x") + "\r\n").encode())
    scan(claude_home, ledger, pricer)
    assert sums(ledger)["requests"] == 1
    assert ledger.source_summary("claude_transcripts")["skipped"] == 0


def test_verified_symlinked_second_root_counts_once(claude_home, ledger, pricer, tmp_path):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A"))
    link = tmp_path / "link"
    link.symlink_to(claude_home.root)
    src = ClaudeTranscripts(roots=[claude_home.root, link])
    src.scan(ledger, pricer)
    # the daemon watches both roots: an event names the file through the link
    src.scan(ledger, pricer, paths={link / "projects" / "-home-dev-app" / claude_home.session_file().name})
    assert sums(ledger)["requests"] == 1 and sums(ledger)["output"] == 187


def test_verified_stats_cache_never_reads_days_the_transcripts_cover(claude_home, ledger):
    pricer = FlatPricer()
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", ts="2026-03-05T10:00:00.000Z"))
    write(claude_home, stats_doc({"2026-03-04": {SONNET: 10}, "2026-03-05": {SONNET: 10}}, "2026-03-05"))
    scan(claude_home, ledger, pricer)
    ledger.set_state(*TRANSCRIPTS_SCANNED, "1")
    ClaudeStatsCache([claude_home.root], tz=UTC).scan(ledger, pricer)
    assert set(by_day(ledger)) == {f"stats:2026-03-04:{SONNET}"}
    assert Decimal(0) <= ledger.totals()[0].cost


def test_verified_sidechain_replay_twice_after_parent_counts_once(claude_home, ledger, pricer):
    claude_home.append(claude_home.session_file(), assistant_line("msg_P", "req_parent"))
    scan(claude_home, ledger, pricer)
    for sub in ("btw1", "btw2"):
        claude_home.append(claude_home.session_file(sub=sub), assistant_line("msg_P", "req_r", sidechain=True))
        scan(claude_home, ledger, pricer)
    assert sums(ledger)["requests"] == 1 and ledger.totals() == ledger.recomputed_totals()
