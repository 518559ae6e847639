"""One Claude Code transcript line → a usage record (local-formats.md §1.3–1.5).

Only assistant lines that carry ``message.usage`` count, and ``agent_progress`` lines that
mirror a subagent's assistant line. Per line:

* ``<synthetic>`` lines are app-made (zero usage) and skipped; lines without usage tokens too.
* A line without ``message.model`` keeps its tokens under model ``unknown`` (no price: its cost
  is unknown, never $0).
* Cache writes: when ``usage.cache_creation`` exists, writes are its 5m + 1h parts (the 1h part
  is priced at its own rate); else ``cache_creation_input_tokens``.
* Old (< 1.0.9) lines with ``costUSD`` keep their reported cost.
* Poison: a timestamp outside 2000..2100 or a ``costUSD`` that is negative, NaN, not a number or
  above 10,000 USD makes the line malformed: dropped, counted and reported, never stored (one
  such line would otherwise break every report and export after it).
* A line without ``message.id`` cannot be matched with its copies; it is keyed by its bytes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from bridge.record import CostOrigin, Tokens, UsageRecord, record_from_tuple, record_to_tuple
from bridge.sources._base import infer_provider, log
from bridge.sources._claude_fast import (
    EARLIEST,
    FALLBACK,
    LATEST,
    MAX_REQUEST_USD,
    SOURCE,
    available,
    fast_tuple,
)
from bridge.sources._claude_session import FileContext
from bridge.sources._tail import ChunkResult

UNKNOWN_MODEL = "unknown"  # for lines without message.model


def _int(usage: dict[str, Any], key: str) -> int:
    v = usage.get(key, 0)
    if type(v) is int and v >= 0:  # the hot path: one type check
        return v
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"usage.{key} is not a non-negative integer: {v!r}")
    return v


def _tokens_checked(usage: dict[str, Any]) -> Tokens:
    """The careful path: every field validated, with the name of the bad one."""
    cache_creation = _int(usage, "cache_creation_input_tokens")
    one_hour = 0
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        five = _int(split, "ephemeral_5m_input_tokens")
        one_hour = _int(split, "ephemeral_1h_input_tokens")
        cache_creation = five + one_hour
    return Tokens(
        _int(usage, "input_tokens"),
        _int(usage, "output_tokens"),
        _int(usage, "cache_read_input_tokens"),
        cache_creation,
        one_hour,
    )


def _tokens(usage: dict[str, Any]) -> Tokens:
    """Token counts of a usage object; the common all-integers case costs a few lookups."""
    g = usage.get
    inp, out, read, write = (
        g("input_tokens", 0),
        g("output_tokens", 0),
        g("cache_read_input_tokens", 0),
        (g("cache_creation_input_tokens", 0)),
    )
    split = g("cache_creation")
    one_hour = 0
    if split is not None:
        if type(split) is not dict:
            return _tokens_checked(usage)
        five, one_hour = split.get("ephemeral_5m_input_tokens", 0), split.get("ephemeral_1h_input_tokens", 0)
        if type(five) is not int or type(one_hour) is not int or five < 0 or one_hour < 0:
            return _tokens_checked(usage)
        write = five + one_hour
    if (
        type(inp) is not int
        or type(out) is not int
        or type(read) is not int
        or type(write) is not int
        or inp < 0
        or out < 0
        or read < 0
        or write < 0
    ):
        return _tokens_checked(usage)
    return Tokens(inp, out, read, write, one_hour)


def parse_line(obj: Any, ctx: FileContext, line: bytes | bytearray) -> UsageRecord | None:
    """One transcript line → a record, or None when the line carries no countable usage.

    Raises ``ValueError`` for a line that claims usage but is not well-formed.
    """
    if type(obj) is not dict:
        return None
    entry, sidechain = obj, obj.get("isSidechain") is True
    kind = obj.get("type")
    if kind != "assistant":
        mirrored = _mirrored_call(obj) if kind == "progress" else None
        if mirrored is None:
            return None
        entry, sidechain = mirrored, True  # a subagent's API call
    message = entry.get("message")
    if type(message) is not dict:
        return None
    usage = message.get("usage")
    if type(usage) is not dict:
        return None
    model = message.get("model")
    if model == "<synthetic>":
        return None
    if type(model) is not str or not model:
        # The tokens were still used: count them under a model with no price (cost unknown).
        model = UNKNOWN_MODEL
    tokens = _tokens(usage)
    if tokens.input == tokens.output == tokens.cache_read == tokens.cache_creation == 0:
        return None
    ts_raw = entry.get("timestamp")
    if type(ts_raw) is not str and entry is not obj:
        ts_raw = obj.get("timestamp")
    if type(ts_raw) is not str:
        raise ValueError("assistant line with usage has no timestamp")
    ts = datetime.fromisoformat(ts_raw)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {ts_raw!r}")
    if not EARLIEST <= ts < LATEST:
        # A year-1 or year-9999 time would break every later report and export (date overflow
        # in local time, OTLP start times): the line is dropped and counted, never stored.
        raise ValueError(f"timestamp {ts_raw!r} is outside 2000-01-01..2100-01-01")
    msg_id = message.get("id")
    req_id = entry.get("requestId")
    if type(msg_id) is str and msg_id:
        # One key per API request, shared with Claude Code's api_request events (which carry the
        # request id but no message id): a request seen in both counts once.
        key = f"cc-req:{req_id}" if type(req_id) is str and req_id else f"cc:{msg_id}:"
        group: str | None = msg_id
    elif entry is not obj:
        return None  # a mirror without message.id cannot be matched with the subagent's own line
    else:
        import hashlib  # here: its OpenSSL start-up is 2 ms of every one-off sync

        key = "cc-line:" + hashlib.sha1(line, usedforsecurity=False).hexdigest()
        group = None
    cost: Decimal | None = None
    origin = CostOrigin.UNKNOWN
    raw_cost = entry.get("costUSD")
    if raw_cost is not None:
        # One request never costs more than this; a negative, NaN or huge amount is corruption
        # that would swamp (or overflow) every total it is added to.
        if type(raw_cost) not in (int, float) or not 0 <= raw_cost <= MAX_REQUEST_USD:
            raise ValueError(f"costUSD {raw_cost!r} is not an amount between 0 and {MAX_REQUEST_USD} USD")
        cost, origin = Decimal(str(raw_cost)), CostOrigin.REPORTED
    session = obj.get("sessionId")
    cwd = obj.get("cwd")
    speed = usage.get("speed")
    search, fetch = _server_tools(usage.get("server_tool_use"))
    return UsageRecord(
        SOURCE,
        infer_provider(model),
        model,
        ts,
        key,
        tokens,
        cost,
        origin,
        session if type(session) is str and session else ctx.session_id,
        ctx.start_cwd or (cwd if type(cwd) is str and cwd else ctx.slug),
        group,
        sidechain,
        speed=speed if type(speed) is str and speed else None,
        web_search_requests=search,
        web_fetch_requests=fetch,
    )


def _server_tools(stu: Any) -> tuple[int, int]:
    """(web search, web fetch) request counts of ``usage.server_tool_use``; a count that is not a
    non-negative integer makes the line malformed (it would be priced)."""
    if stu is None:
        return 0, 0
    if type(stu) is not dict:
        raise ValueError("usage.server_tool_use is not an object")
    out = []
    for name in ("web_search_requests", "web_fetch_requests"):
        n = stu.get(name, 0)
        if n is None:
            n = 0
        if type(n) is not int or n < 0:
            raise ValueError(f"usage.server_tool_use.{name} is not a count: {n!r}")
        out.append(n)
    return out[0], out[1]


def _mirrored_call(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The subagent line an ``agent_progress`` line of the parent session mirrors, or None.

    local-formats.md does not describe these lines; this is Claude Code's own shape as observed:
    ``{"type": "progress", "data": {"type": "agent_progress", "agentId": …, "message": {"type":
    "assistant", "message": {"id", "model", "usage", …}, "requestId", "uuid", "timestamp"}}}``.
    The mirrored call has the subagent line's key (its requestId): it counts once
    with that line, and alone when the subagent's file is gone.
    """
    data = obj.get("data")
    if type(data) is not dict or data.get("type") != "agent_progress":
        return None
    inner = data.get("message")
    if type(inner) is not dict or inner.get("type") != "assistant":
        return None
    return inner


# Every usage object has "output_tokens"; a 15-byte needle is found several times faster than
# '"usage"' by CPython's fast search, and the hit lands inside the line we want.
_NEEDLE = b'"output_tokens"'
_CLOSE = ord("}")


def chunk_parser(ctx: FileContext, fast: bool = False) -> Any:
    """A parser of chunks of complete lines into records (the in-process path); ``fast`` as in
    ``parse_tuples``."""

    def parse(buf: bytes) -> ChunkResult:
        tuples, out = parse_tuples(buf, ctx, fast)
        out.records = [record_from_tuple(t) for t in tuples]
        return out

    return parse


def parse_tuples(
    buf: bytes | bytearray, ctx: FileContext, fast: bool = False, end: int | None = None
) -> tuple[list[tuple[Any, ...]], ChunkResult]:
    """Records (as ``record_to_tuple`` tuples) of a chunk of complete lines, and its malformed
    lines. ``fast``: try ``_claude_fast`` first, if msgspec is installed (the reference
    ``parse_line`` decides whatever it does not handle). ``end``: the chunk is ``buf[:end]``.

    Lines are visited newline to newline (memchr speed) and looked at in three cheap steps
    before any parsing: a line that does not end with ``}`` was cut short (counted, never
    parsed: it cannot be a JSON object); a ``user`` line (``_is_user_line``, 80 % of the bytes:
    tool results) is skipped without scanning its body; a line without ``"assistant"`` carries no
    usage, nor one without ``"output_tokens"`` (only checked to be whole JSON). Not detected: a
    ``user`` line cut just after a ``}`` (it ends like a whole line, and user lines are not parsed).
    """
    fast = fast and available()
    out = ChunkResult(records=[])
    tuples: list[tuple[Any, ...]] = []
    add = tuples.append
    find = buf.find
    pos, n = 0, len(buf) if end is None else end
    session, project, slug = ctx.session_id, ctx.start_cwd, ctx.slug
    while pos < n:
        start = pos
        end = find(b"\n", pos, n)
        end = n if end < 0 else end
        pos = end + 1
        last = end - 1
        while last >= start and buf[last] in _TRAILING:
            last -= 1
        if last < start:
            continue  # an empty line
        if buf[last] != _CLOSE:
            _note_malformed(out, start, "line cut short (not a whole JSON object)")
            continue
        if _is_user_line(buf, start, end) or find(b'"assistant"', start, end) < 0:
            continue
        line = buf[start:end]
        if find(_NEEDLE, start, end) < 0:
            # No usage, unless it was cut off: an assistant line cut just after a "}" inside its
            # usage object ends like a whole line. Rare enough to check by parsing.
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                _note_malformed(out, start, str(exc))
            continue
        if fast:
            got = fast_tuple(line, session, project, slug)
            if got is not FALLBACK:
                if got is not None:
                    add(got)
                continue
        try:
            rec = parse_line(orjson.loads(line), ctx, line)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            log.debug("malformed transcript line at chunk byte %d: %s", start, exc)
            _note_malformed(out, start, str(exc))
            continue
        if rec is not None:
            add(record_to_tuple(rec))
    return tuples, out


_USER = b'"type":"user"'
_USER_WITHIN = 1024  # Claude Code writes "type" before "message": within the first few hundred bytes
_TRAILING = b" \t\r"
_OPENERS = (ord("{"), ord(","))


def _is_user_line(buf: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the line at ``buf[start:end]`` is certainly a top-level ``"type":"user"`` line (which
    never counts), judged from its first bytes. Certain means: the key follows ``{`` or ``,`` (so
    its quote is not an escaped one inside a string) and only the line's own ``{`` and no ``[``
    comes before it (so it is a key of the top-level object). Anything less certain is parsed.
    A line repeating the ``type`` key (JSON parsers keep the last) would be misjudged; Claude
    Code does not write such lines."""
    h = buf.find(_USER, start, min(end, start + _USER_WITHIN))
    return h > start and buf[h - 1] in _OPENERS and buf.count(b"{", start, h) == 1 and buf.find(b"[", start, h) < 0


def _note_malformed(out: ChunkResult, at: int, reason: str) -> None:
    if out.first_malformed_at is None or at < out.first_malformed_at:
        out.first_malformed_at, out.malformed_reason = at, reason[:200]
    out.malformed += 1
