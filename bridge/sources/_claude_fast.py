"""The fast path of a Claude Code transcript line: decode only the fields that count.

A cold scan parses some 130,000 assistant lines per GB. ``parse_line`` (the reference rules)
needs the whole line as Python dicts and strings; here msgspec decodes the same line into typed
structs that hold only the fields a usage record is made of (message content, often most of the
line, is skipped without building anything), and the record comes out as the worker's tuple.

Exactness by construction: this path handles only the plain, well-formed case. Whatever it does
not recognise (a field of another type, a negative or huge count, a missing id, a timestamp
without zone, a ``progress`` line, JSON msgspec rejects) returns ``FALLBACK``, and the caller runs
the reference ``parse_line`` on the line: its result, error message included, is the answer.
``tests/test_claude_fast.py`` checks both paths agree line by line on the generator's traps.

One difference is left, on purpose: a number beyond the float range (``1e999``) in a field that
is not read (message content) makes orjson reject the whole line, while msgspec skips it; with
msgspec such a line counts.

Without msgspec installed (``available()`` false) every line takes the reference path. Callers
ask for this path only on big scans: importing msgspec costs more than it saves on a few lines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from bridge.record import MAX_TOKENS
from bridge.sources._base import infer_provider

FALLBACK: Final = object()  # "not handled here: ask parse_line"
SOURCE = "claude_transcripts"
# Lines outside these bounds are corrupt (no Claude Code before 2000 or after 2100).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_REQUEST_USD = 10_000
_providers: dict[str, str] = {}


class _Decoder:
    """msgspec's decoder of a line, built on first use (see ``available``)."""

    decode: Any = None  # False: msgspec is not installed
    errors: tuple[type[Exception], ...] = (UnicodeDecodeError,)


def available() -> bool:
    """Whether the fast path can run (msgspec is installed). Imports msgspec on first call (~6 ms:
    only scans big enough to gain from it ask)."""
    if _Decoder.decode is None:
        try:
            from bridge.sources._claude_structs import decoder
        except ImportError:  # msgspec is not installed
            _Decoder.decode = False
            return False
        _Decoder.decode, errors = decoder()
        _Decoder.errors = (*errors, UnicodeDecodeError)
    return _Decoder.decode is not False


def fast_tuple(line: bytes | bytearray, session_id: str | None, project: str | None, slug: str | None) -> Any:
    """The record tuple (``record_to_tuple`` layout) of a plain assistant line, None for a line
    that counts nothing, or ``FALLBACK``. ``project`` is the session's starting cwd, if known.
    Only after ``available()`` returned True."""
    try:
        obj = _Decoder.decode(line)
        if not line.isascii():
            line.decode()  # msgspec does not check UTF-8 in the fields it skips; orjson rejects it
    except _Decoder.errors:
        return FALLBACK
    if obj.type != "assistant":
        return FALLBACK if obj.type == "progress" else None
    message = obj.message
    if message is None:
        return None
    usage = message.usage
    if usage is None:
        return None
    model = message.model
    if model == "<synthetic>":
        return None
    if not model:
        return FALLBACK
    # Counts as parse_line reads them: null is 0; anything outside 0..MAX_TOKENS is its call.
    inp, out, read, write = (
        usage.input_tokens or 0,
        usage.output_tokens or 0,
        usage.cache_read_input_tokens or 0,
        usage.cache_creation_input_tokens or 0,
    )
    one_hour = 0
    split = usage.cache_creation
    if split is not None:
        five, one_hour = split.ephemeral_5m_input_tokens or 0, split.ephemeral_1h_input_tokens or 0
        if not (0 <= five <= MAX_TOKENS and 0 <= one_hour <= MAX_TOKENS):
            return FALLBACK
        write = five + one_hour
    if not (0 <= inp <= MAX_TOKENS and 0 <= out <= MAX_TOKENS and 0 <= read <= MAX_TOKENS and 0 <= write <= MAX_TOKENS):
        return FALLBACK
    if inp == out == read == write == 0:
        return None
    ts_raw, msg_id = obj.timestamp, message.id
    if ts_raw is None or not msg_id:
        return FALLBACK
    try:
        ts = datetime.fromisoformat(ts_raw)
    except ValueError:
        return FALLBACK
    if ts.tzinfo is None or not EARLIEST <= ts < LATEST:
        return FALLBACK
    cost, origin = None, "unknown"
    raw_cost = obj.costUSD
    if raw_cost is not None:
        if not 0 <= raw_cost <= MAX_REQUEST_USD:  # NaN fails too
            return FALLBACK
        cost, origin = Decimal(str(raw_cost)), "reported"
    search = fetch = 0
    stu = usage.server_tool_use
    if stu is not None:
        search, fetch = stu.web_search_requests or 0, stu.web_fetch_requests or 0
        if not (0 <= search <= MAX_TOKENS and 0 <= fetch <= MAX_TOKENS):
            return FALLBACK
    provider = _providers.get(model)
    if provider is None:
        provider = _providers.setdefault(model, infer_provider(model))
    req_id = obj.requestId
    cwd = obj.cwd
    key = f"cc-req:{req_id}" if req_id else f"cc:{msg_id}:"  # parse_line's key, shared with the events
    return (
        SOURCE, provider, model, ts, key,
        inp, out, read, write, one_hour,
        cost, origin, obj.sessionId or session_id, project or cwd or slug, msg_id, obj.isSidechain is True,
        1, False, usage.speed or None, search, fetch,
    )  # fmt: skip
