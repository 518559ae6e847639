"""Rows of the ledger's ``usage`` table and the pure rules that merge them.

Every row is a field-wise max-register of one request's usage (see ``Tokens.merge_max``);
a group (Claude Code's ``message.id``) folds its sidechain replays into one row. Keeping these
rules free of SQL makes them order-independent by inspection and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.surcharges import Extras

_PICO = Decimal(10) ** 12
MAX_PUSD = 2**62  # SQLite INTEGER is 64-bit; keep sums of many rows in range

_EXTERNAL, _UNKNOWN = CostOrigin.EXTERNAL.value, CostOrigin.UNKNOWN.value
Deltas = dict[tuple[str, str, str, str], list[int]]

# Claude Code's api_request events (bridge/sources/claude_code_events.py): rows keyed like the
# transcript lines of the same requests (``cc-req:{requestId}``), merged with them.
EVENTS_SOURCE = "claude_code_events"


@dataclass(slots=True)
class Row:
    dedup_key: str
    group_key: str | None
    source: str
    provider: str
    model: str
    ts_ms: int
    session_id: str | None
    project: str | None
    sidechain: bool
    tokens: Tokens
    reported_pusd: int | None
    cost_pusd: int | None
    cost_origin: str
    requests: int = 1
    speed: str | None = None
    web_search: int = 0
    web_fetch: int = 0

    @classmethod
    def from_db(cls, r: Any) -> Row:
        return cls(
            str(r[0]),
            None if r[1] is None else str(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            int(r[5]),
            None if r[6] is None else str(r[6]),
            None if r[7] is None else str(r[7]),
            bool(r[8]),
            Tokens(int(r[9]), int(r[10]), int(r[11]), int(r[12]), int(r[13])),
            None if r[14] is None else int(r[14]),
            None if r[15] is None else int(r[15]),
            str(r[16]),
            int(r[17]),
            None if r[18] is None else str(r[18]),
            int(r[19]),
            int(r[20]),
        )

    def as_params(self) -> tuple[object, ...]:
        t = self.tokens
        return (
            self.dedup_key,
            self.group_key,
            self.source,
            self.provider,
            self.model,
            self.ts_ms,
            self.session_id,
            self.project,
            int(self.sidechain),
            t.input,
            t.output,
            t.cache_read,
            t.cache_creation,
            t.cache_creation_1h,
            self.reported_pusd,
            self.cost_pusd,
            self.cost_origin,
            self.requests,
            self.speed,
            self.web_search,
            self.web_fetch,
        )

    def extras(self) -> Extras | None:
        """What is priced on top of the tokens, or None when nothing is (the plain path)."""
        if self.speed is None and not self.web_search and not self.web_fetch:
            return None
        return Extras(self.speed, self.web_search, self.web_fetch)


def to_pusd(amount: Decimal) -> int:
    """USD → integer pico-dollars (exact for prices with up to 12 decimals)."""
    return int((amount * _PICO).to_integral_value())


def from_pusd(pusd: int) -> Decimal:
    return Decimal(pusd) / _PICO


def merge_record(old: Row | None, rec: UsageRecord) -> Row:
    """A stored row updated with an incoming record: field-wise max of the usage; the first-seen
    identity (time, session, project) stays, unless a non-sidechain line meets a sidechain row;
    an event row and a transcript line of the same request: see ``adopt_line``."""
    reported = to_pusd(rec.cost) if rec.cost is not None and rec.cost_origin is CostOrigin.REPORTED else None
    if reported is not None and not 0 <= reported < MAX_PUSD:
        reported = None
    origin = _EXTERNAL if rec.cost_origin is CostOrigin.EXTERNAL else _UNKNOWN
    new = Row(
        rec.dedup_key, rec.group_key, rec.source, rec.provider, rec.model, rec.timestamp_ms,
        rec.session_id, rec.project, rec.is_sidechain, rec.tokens, reported, None, origin, rec.requests,
        rec.speed, rec.web_search_requests, rec.web_fetch_requests,
    )  # fmt: skip
    if rec.replace or old is None:
        return new  # a bucket's latest state replaces the stored one, up or down
    if old.source == EVENTS_SOURCE and new.source != EVENTS_SOURCE:
        return adopt_line(old, new)
    if new.source == EVENTS_SOURCE and old.source != EVENTS_SOURCE:
        return fold(old, new)  # the transcript line's identity stays; reported costs: max
    if old.sidechain and not rec.is_sidechain:
        return fold(new, old)
    return fold(old, new)


def adopt_line(row: Row, line: Row) -> Row:
    """An event row meeting the transcript line of its request: it takes what only the line
    knows (sidechain flag, message id as group, project) and keeps its series (source, model,
    session, time), which may already have been exported: moving the request to the line's
    series would leave the exported event series at its value (counters never go down) and
    count the request twice downstream."""
    first = row.group_key is None  # not yet met by any line (lines with a requestId have a group)
    out = fold(row, line)
    out.sidechain = line.sidechain if first else row.sidechain and line.sidechain  # non-sidechain wins
    out.project = row.project or line.project
    return out


def identity_and_usage(r: Row) -> tuple[object, ...]:
    return (
        r.tokens, r.reported_pusd, r.sidechain, r.ts_ms, r.session_id, r.project, r.model, r.source, r.requests,
        r.cost_origin == _EXTERNAL, r.speed, r.web_search, r.web_fetch, r.group_key,
    )  # fmt: skip


def fold(base: Row, other: Row) -> Row:
    """``base``'s identity with the field-wise max of both rows' usage (and the first group key:
    a row stored from an event has none, the line of the same request brings it)."""
    return Row(
        base.dedup_key, base.group_key or other.group_key, base.source, base.provider, base.model, base.ts_ms,
        base.session_id, base.project, base.sidechain, base.tokens.merge_max(other.tokens),
        max_opt_int(base.reported_pusd, other.reported_pusd), base.cost_pusd, base.cost_origin,
        max(base.requests, other.requests),
        base.speed if base.speed is not None else other.speed,  # the first stated speed stays
        max(base.web_search, other.web_search), max(base.web_fetch, other.web_fetch),
    )  # fmt: skip


def resolve_groups(rows: dict[str, Row], groups: set[str]) -> None:
    """Fold sidechain rows into their group's one canonical row (in place).

    A group is a ``message.id``. Non-sidechain rows are separate requests (a gateway may reuse
    one id); every sidechain row of the group is a replay. With a non-sidechain row present the
    replays are dropped: a replay is another API call re-sending the parent's conversation, so
    its usage says nothing about the parent's, which keeps its own values. With none yet, all
    replays fold into one (field-wise max) that stands in until the parent is read.
    """
    if not groups:
        return
    members: dict[str, list[str]] = {}
    for key, row in rows.items():
        if row.group_key in groups:
            members.setdefault(row.group_key, []).append(key)
    for keys in members.values():
        side = sorted(k for k in keys if rows[k].sidechain)
        if not side:
            continue
        if any(not rows[k].sidechain for k in keys):
            for k in side:
                del rows[k]
            continue
        for k in side[1:]:
            rows[side[0]] = fold(rows[side[0]], rows.pop(k))


def max_opt_int(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def entries(row: Row) -> int:
    """What a row weighs in the unpriced and priced counts: its requests, or 1 for a row that
    carries no request count (a provider's usage bucket, an analytics row): such a row with an
    unknown price is still unknown, never a silent $0. SQL: ``MAX(requests, 1)``."""
    return max(row.requests, 1)


# ``entries`` without and with a known price, as sums over usage rows in SQL.
UNPRICED_SQL = "SUM(CASE WHEN cost_pusd IS NULL THEN MAX(requests, 1) ELSE 0 END)"
PRICED_SQL = "SUM(CASE WHEN cost_pusd IS NULL THEN 0 ELSE MAX(requests, 1) END)"


def add_delta(deltas: Deltas, row: Row, sign: int) -> None:
    key = (row.source, row.provider, row.model, row.session_id or "")
    d = deltas.setdefault(key, [0, 0, 0, 0, 0, 0, 0, 0])
    t = row.tokens
    d[0] += sign * t.input
    d[1] += sign * t.output
    d[2] += sign * t.cache_read
    d[3] += sign * t.cache_creation
    d[4] += sign * (row.cost_pusd or 0)
    d[5] += sign * row.requests
    d[6] += sign * (entries(row) if row.cost_pusd is None else 0)  # unpriced
    d[7] += sign * (0 if row.cost_pusd is None else entries(row))  # priced
