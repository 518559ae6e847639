"""Tailing JSON-lines files: where a read resumes, and rewrites found by more than the head."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from bridge.ledger import Cursor, Ledger
from bridge.sources._tail import ChunkResult, fingerprint, read_chunks
from bridge.sources.claude_transcripts import ClaudeTranscripts
from tests.conftest import ClaudeHome, FlatPricer, assistant_line, user_tool_result
from tests.conftest import ledger_sums as totals


def scan(home: ClaudeHome, ledger: Ledger, pricer: FlatPricer):  # type: ignore[no-untyped-def]
    return ClaudeTranscripts(roots=[home.root]).scan(ledger, pricer)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with path.open("r+b") as fh:  # same inode: no replace, no truncation
        fh.write(data)


@pytest.mark.parametrize("parallel", [False, True])
def test_in_place_rewrite_keeping_the_head_and_growing_is_reread(claude_home, ledger, pricer, monkeypatch, parallel):
    """Claude Code rewrites a session file (resume, compaction): the first line, longer than the
    256 head bytes, stays; a later line changes; the file grows. Reading on from the old offset
    would miss the changed line for good."""
    if parallel:
        monkeypatch.setenv("TOKENBRIDGE_PARALLEL_MIN_BYTES", "0")  # the worker computes the marks
    f = claude_home.session_file()
    a = assistant_line("msg_A", "req_A")
    b = assistant_line("msg_B", "req_B", output=1)
    c = assistant_line("msg_C", "req_C", output=2)
    d = assistant_line("msg_D", "req_D", output=3)
    assert len(a) > 256 and len(b) == len(c)
    claude_home.append(f, a, b)
    scan(claude_home, ledger, pricer)
    _rewrite_in_place(f, f"{a}\n{c}\n{d}\n".encode())
    stats = scan(claude_home, ledger, pricer)
    assert ledger.tokens_for(["cc-req:req_C"]), "the rewritten line was never read"
    assert stats.bytes_read == f.stat().st_size, "re-read from the start"
    assert totals(ledger) == {"input": 16, "output": 193, "cacheRead": 192000, "cacheCreation": 4800, "requests": 4}


def test_appends_across_passes_read_only_the_new_bytes(claude_home, ledger, pricer):
    f = claude_home.session_file()
    claude_home.append(f, user_tool_result("x" * 5000), assistant_line("msg_A", "req_A"))
    scan(claude_home, ledger, pricer)
    for i in range(3):
        line = assistant_line(f"msg_{i}", f"req_{i}", output=i + 1)
        claude_home.append(f, line)
        stats = scan(claude_home, ledger, pricer)
        assert stats.bytes_read == len(line) + 1, "an append is not mistaken for a rewrite"
    assert totals(ledger)["requests"] == 4


def test_cursor_stored_by_an_older_version_still_resumes_at_its_offset(claude_home, ledger, pricer):
    """Cursors written before the fingerprint existed hold the raw first bytes as ``head``."""
    f = claude_home.session_file()
    a = assistant_line("msg_A", "req_A")
    claude_home.append(f, a)
    st = f.stat()
    old = Cursor(
        "claude_transcripts", str(f), st.st_ino, st.st_size, st.st_size, f.read_bytes()[:256], 0, st.st_mtime_ns
    )
    ledger.commit([], pricer, old)
    b = assistant_line("msg_B", "req_B", output=5)
    claude_home.append(f, b)
    stats = scan(claude_home, ledger, pricer)
    assert stats.bytes_read == len(b) + 1
    assert totals(ledger)["requests"] == 1, "msg_A lies before the old cursor: not read again"
    # The cursor is now in the new format: a later rewrite behind it is detected.
    c = assistant_line("msg_C", "req_C", output=7)
    assert len(c) == len(b)
    _rewrite_in_place(f, f"{a}\n{c}\n".encode() + b"\n")
    scan(claude_home, ledger, pricer)
    assert ledger.tokens_for(["cc-req:req_C"])


def test_each_chunk_carries_the_fingerprint_of_the_bytes_before_its_end(tmp_path):
    f = tmp_path / "x.jsonl"
    lines = [f'{{"n":{i},"pad":"{"p" * (i * 37 % 900)}"}}\n'.encode() for i in range(200)]
    data = b"".join(lines)
    f.write_bytes(data)
    start = len(lines[0]) + len(lines[1])

    def parse(buf: bytes) -> ChunkResult:
        return ChunkResult(records=[])

    offset = start
    outcomes = list(read_chunks(str(f), start, parse, chunk_bytes=1000))
    assert len(outcomes) > 10
    for out in outcomes:
        offset += out.consumed
        assert out.mark == fingerprint(data[:offset]), f"mark at {offset}"
    assert offset == len(data)
    assert fingerprint(b"") == fingerprint(b"")
    assert fingerprint(b"a" * 10_000) == fingerprint(b"b" + b"a" * 9_999), "only the bytes just before count"
    assert len(hashlib.sha256().digest()) > len(fingerprint(b"x")) > 8


@pytest.mark.parametrize("start", [0, 5, 300])
@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_reused_buffer_spans_equal_the_plain_chunks(tmp_path, start, chunk):
    """complete_spans (one reused buffer: the parse worker) yields exactly complete_chunks' chunks
    and marks: lines longer than a chunk, a partial last line, a start inside the file."""
    from bridge.sources._tail import complete_chunks, complete_spans

    rng = random.Random(start * 31 + chunk)
    lines = [b"x" * rng.choice([0, 1, 5, 40, 200, 700]) for _ in range(60)]
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"partial"')
    want = list(complete_chunks(str(path), start, chunk))
    buf = bytearray(b"left over from another file")
    got = [(bytes(b[:end]), mark) for b, end, mark in complete_spans(str(path), start, buf, chunk)]
    assert got == want
    assert b"".join(c for c, _ in got) == path.read_bytes()[start : path.read_bytes().rfind(b"\n") + 1]


def test_batches_start_small_and_double_up_to_the_maximum(tmp_path):
    """The first commits of a long scan come early; later ones are large (fewer index writes)."""
    from bridge.sources._tail import Batch

    mb = 1024 * 1024
    with Ledger.open(tmp_path) as led:
        batch = Batch(led, FlatPricer())
        flushed_at: list[int] = []
        seen = 0
        for i in range(100):
            batch.add([], Cursor("s", f"/f{i}", 1, 4 * mb, 4 * mb, b""), 4 * mb)
            seen += 4 * mb
            if batch.bytes == 0:
                flushed_at.append(seen // mb)
        sizes = [b - a for a, b in zip([0, *flushed_at], flushed_at, strict=False)]
        assert sizes[:4] == [16, 32, 64, 128] and set(sizes[4:]) == {128}
