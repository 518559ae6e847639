"""The msgspec fast path of transcript lines (``_claude_fast``) against the reference rules.

The fast path may only ever give the same answer as ``parse_line`` (or hand the line back): these
tests compare both paths line by line on a generated history with all its traps, on hand-made
odd lines, and compare the worker's tuple collapse with the record collapse.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.record import CostOrigin, Tokens, UsageRecord, collapse, collapse_tuples, record_to_tuple
from bridge.sources import _claude_fast
from bridge.sources._claude_fast import FALLBACK, available, fast_tuple
from bridge.sources._claude_lines import parse_line, parse_tuples
from bridge.sources._claude_session import FileContext, file_context, with_start_cwd

pytestmark = pytest.mark.skipif(not available(), reason="msgspec is not installed")  # a dev dependency


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_history", Path(__file__).resolve().parents[1] / "scripts" / "gen_history.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_history"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hist")
    _gen().generate(out, 12_000_000, seed=7, days=10)
    return out


def _reference(line: bytes, ctx: FileContext) -> Any:
    """What parse_line makes of a line: a tuple, None, or the error it raises."""
    try:
        rec = parse_line(orjson.loads(line), ctx, line)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        return ("error", type(exc))
    return None if rec is None else record_to_tuple(rec)


def test_fast_path_agrees_with_parse_line_on_every_usage_line_of_a_generated_history(corpus: Path) -> None:
    handled = fallback = 0
    for path in sorted((corpus / "projects").rglob("*.jsonl")):
        ctx = with_start_cwd(file_context(path), str(path))
        for line in path.read_bytes().split(b"\n"):
            if b'"output_tokens"' not in line:
                continue
            got = fast_tuple(line, ctx.session_id, ctx.start_cwd, ctx.slug)
            if got is FALLBACK:
                fallback += 1
                continue
            handled += 1
            assert got == _reference(line, ctx), line[:300]
    assert handled > 1000  # the fast path does the work ...
    assert fallback < handled / 20  # ... and hands back only the odd lines


def test_chunks_give_the_same_records_and_malformed_counts_with_and_without_the_fast_path(corpus: Path) -> None:
    totals = {True: 0, False: 0}
    for path in sorted((corpus / "projects").rglob("*.jsonl")):
        ctx = with_start_cwd(file_context(path), str(path))
        buf = path.read_bytes()
        buf = buf[: buf.rfind(b"\n") + 1]
        fast, fast_res = parse_tuples(buf, ctx, fast=True)
        slow, slow_res = parse_tuples(buf, ctx, fast=False)
        assert fast == slow, path
        assert (fast_res.malformed, fast_res.first_malformed_at) == (slow_res.malformed, slow_res.first_malformed_at)
        totals[True] += fast_res.malformed
        totals[False] += len(fast)
    assert totals[True] > 0 and totals[False] > 0  # the corpus has cut lines and records


def _line(**over: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}
    usage.update(over.pop("usage", {}))
    message: Any = {"id": "msg_1", "model": "claude-sonnet-4-5", "usage": usage, "content": "x"}
    replaced = over.pop("message", {})
    message = replaced if isinstance(replaced, str) else {**message, **replaced}
    line: dict[str, Any] = {
        "type": "assistant",
        "sessionId": "s1",
        "cwd": "/p",
        "requestId": "req_1",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "message": message,
    }
    line.update(over)
    return line


ODD_LINES = [
    _line(),
    _line(usage={"input_tokens": None}),
    _line(usage={"input_tokens": -1}),
    _line(usage={"output_tokens": True}),
    _line(usage={"output_tokens": 1.0}),
    _line(usage={"output_tokens": 10**12}),
    _line(usage={"cache_creation": None, "cache_creation_input_tokens": 7}),
    _line(usage={"cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": None}}),
    _line(usage={"cache_creation": {"ephemeral_5m_input_tokens": -3}}),
    _line(usage={"cache_creation": "big"}),
    _line(usage={"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}),
    _line(usage={"speed": "fast", "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": None}}),
    _line(usage={"speed": 3}),
    _line(usage={"server_tool_use": [1]}),
    _line(usage={"server_tool_use": {"web_search_requests": -2}}),
    _line(message={"model": "<synthetic>"}),
    _line(message={"model": None}),
    _line(message={"model": ""}),
    _line(message={"model": 5}),
    _line(message={"id": None}),
    _line(message={"id": ""}),
    _line(message={"usage": None}),
    _line(message={"usage": [1]}),
    _line(message="text"),
    _line(timestamp="2026-01-02T03:04:05"),
    _line(timestamp="1999-12-31T23:59:59Z"),
    _line(timestamp="not a time"),
    _line(timestamp=None),
    _line(costUSD=0.12345),
    _line(costUSD=3),
    _line(costUSD=-1),
    _line(costUSD="0.1"),
    _line(costUSD=20000),
    _line(requestId=None),
    _line(requestId=7),
    _line(sessionId=""),
    _line(sessionId=None, cwd=None),
    _line(isSidechain=True),
    _line(isSidechain="true"),
    _line(type="user"),
    _line(type="progress"),
    {
        "type": "progress",
        "timestamp": "2026-01-02T03:04:05Z",
        "data": {"type": "agent_progress", "message": {"type": "assistant", **_line(isSidechain=True)}},
    },
]


@pytest.mark.parametrize("obj", ODD_LINES, ids=range(len(ODD_LINES)))
def test_odd_lines_get_the_reference_answer(obj: dict[str, Any]) -> None:
    line = orjson.dumps(obj)
    ctx = FileContext("file-session", "-slug", None, None)
    got = fast_tuple(line, ctx.session_id, ctx.start_cwd, ctx.slug)
    if got is not FALLBACK:
        assert got == _reference(line, ctx)
    # Whatever path a line takes, a chunk holding it ends up with the reference answer.
    tuples, res = parse_tuples(line + b"\n", ctx, fast=True)
    want = _reference(line, ctx)
    if isinstance(want, tuple) and want[0] == "error":
        assert (tuples, res.malformed) == ([], 1)
    else:
        assert tuples == ([] if want is None else [want])
        assert res.malformed == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"assistant","x":"\xff\xfe","message":{"id":"m","model":"claude-x","usage":{"output_tokens":3}},'
        b'"timestamp":"2026-01-01T00:00:00Z"}',  # invalid UTF-8 in a skipped field: orjson rejects the line
        b'{"type":"assistant","message":{"id":"m","model":"claude-x","usage":{"output_tokens":3}},'
        b'"timestamp":"2026-01-01T00:00:00Z"} trailing',
        b'{"type":"assistant","x":"\\ud800","message":{"id":"m","model":"claude-x","usage":{"output_tokens":3}}}',
        b'{"type":"assistant","message":{"id":"m","model":"claude-\xc3\xa9","usage":{"output_tokens":3}},'
        b'"timestamp":"2026-01-01T00:00:00+02:00"}',  # valid non-ASCII
    ],
)
def test_bytes_orjson_rejects_are_rejected_by_the_fast_path_too(raw: bytes) -> None:
    ctx = FileContext("s", "-slug", None, None)
    fast, fast_res = parse_tuples(raw + b"\n", ctx, fast=True)
    slow, slow_res = parse_tuples(raw + b"\n", ctx, fast=False)
    assert (fast, fast_res.malformed) == (slow, slow_res.malformed)


def test_without_msgspec_every_line_takes_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_claude_fast._Decoder, "decode", False)  # as if the import had failed
    assert not available()
    ctx = FileContext("s", "-slug", None, None)
    buf = b"".join(orjson.dumps(o) + b"\n" for o in ODD_LINES)
    assert parse_tuples(buf, ctx, fast=True) == parse_tuples(buf, ctx, fast=False)


def _random_record(rng: random.Random) -> UsageRecord:
    group = f"msg_{rng.randrange(6)}"
    reported = rng.random() < 0.3
    cc = rng.randrange(0, 50)
    return UsageRecord(
        "claude_transcripts",
        "anthropic",
        rng.choice(["m1", "m2"]),
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(100)),
        f"cc:{group}:{rng.choice(['r1', 'r2'])}",
        Tokens(rng.randrange(20), rng.randrange(20), rng.randrange(20), cc, rng.randrange(0, cc + 1)),
        Decimal(rng.randrange(100)) / 1000 if reported else None,
        CostOrigin.REPORTED if reported else CostOrigin.UNKNOWN,
        rng.choice(["s1", "s2"]),
        "/p",
        group,
        rng.random() < 0.3,
        speed=rng.choice([None, None, "fast"]),
        web_search_requests=rng.randrange(3),
        web_fetch_requests=rng.randrange(3),
    )


def test_tuple_collapse_equals_record_collapse() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        records = [_random_record(rng) for _ in range(rng.randrange(1, 12))]
        want = [record_to_tuple(r) for r in collapse(records).values()]
        assert collapse_tuples([record_to_tuple(r) for r in records]) == want


def _full_parse(buf: bytes, ctx: FileContext) -> list[tuple[Any, ...]]:
    """Every line through orjson and parse_line: no prefilter at all."""
    out = []
    for line in buf.split(b"\n"):
        got = _reference(line, ctx) if line.strip() else None
        if got is not None and got[0] != "error":
            out.append(got)
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_prefilter_drops_no_usage_line_of_a_generated_history(corpus: Path, fast: bool) -> None:
    """The byte-level prefilter (cut lines, user lines, lines without usage) against parsing every
    line in full, on the generator's traps: Task results holding a real usage object, tool output
    quoting transcript lines, lines cut inside their usage object, sidechains, resumed sessions."""
    malformed = 0
    for path in sorted((corpus / "projects").rglob("*.jsonl")):
        ctx = with_start_cwd(file_context(path), str(path))
        buf = path.read_bytes()
        tuples, res = parse_tuples(buf, ctx, fast=fast)
        assert tuples == _full_parse(buf, ctx), path
        malformed += res.malformed
    truth = orjson.loads((corpus / "truth.json").read_bytes())
    assert malformed == truth["malformedLines"]
    assert truth["traps"]  # the traps are there to be passed


@pytest.mark.parametrize(
    "head",
    [
        b'{"x":"a\\"type\\":\\"user\\"","type":"assistant",',  # escaped quotes inside a string
        b'{"x":{"type":"user"},"type":"assistant",',  # a nested object's type
        b'{"x":["type"],"type":"user","type":"assistant",',  # after a "[": not judged (parsed)
        b'{"x\\"type":"user","type":"assistant",',  # a key ending in an escaped quote
    ],
)
def test_lines_that_only_look_like_user_lines_are_parsed(head: bytes) -> None:
    body = orjson.dumps(_line())[1:]  # the rest of an assistant line
    line = head + body.replace(b'"type":"assistant",', b"", 1)
    ctx = FileContext("s", "-slug", None, None)
    want = _full_parse(line, ctx)
    assert len(want) == 1  # an assistant line with usage
    assert parse_tuples(line + b"\n", ctx, fast=True)[0] == want
    assert parse_tuples(line + b"\n", ctx, fast=False)[0] == want


@pytest.mark.parametrize("fast", [True, False])
def test_an_assistant_line_cut_just_after_a_brace_before_its_output_tokens_is_counted(fast: bool) -> None:
    """The generator's 10 GB corpus (seed 44) has one: cut after the cache_creation object."""
    usage = {"input_tokens": 3, "cache_creation": {"ephemeral_5m_input_tokens": 0}, "output_tokens": 9}
    whole = orjson.dumps(_line(message={"usage": usage}))
    cut = whole[: whole.index(b"}", whole.index(b'"cache_creation":{')) + 1]
    assert b'"output_tokens"' not in cut and cut.endswith(b"}")
    tuples, res = parse_tuples(cut + b"\n" + whole + b"\n", FileContext("s", "-slug", None, None), fast=fast)
    assert len(tuples) == 1 and res.malformed == 1 and res.first_malformed_at == 0
