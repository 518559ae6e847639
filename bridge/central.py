"""Team reports from the central store: ``tokenbridge report daily --central URL --by user``.

In team mode every developer's bridge and Claude Code send their usage to one collector, which stamps the
authenticated ``user`` (the bridge adds ``machine``) and writes to VictoriaMetrics (docs/team.md). This module reads
that store through its Prometheus-compatible query API (``/api/v1/query``), so it also works against Prometheus.

**Counting once, per user** (the team dashboards use the same expressions, :func:`team_query`):

* Within one user, the rule of ``bridge.views`` and the personal dashboards: per model, the bridge's transcript and
  stats-cache series are preferred; Claude Code's native telemetry counts only for models that user's bridge has
  not seen; every other tool's source is added.
* Provider **billing** sources (usage and cost APIs) are organisation-wide: they carry the user whose bridge polled
  them, not the users who spent. They are left out of per-user totals (one line says so) and shown alone with
  ``--source``. Attribution sources are never exported, so they never reach the store.

**Exact windows.** A laptop that was off for a week sends its next sample a week after its last one, and
MetricsQL's ``increase`` only looks a few scrape intervals back for the value before a window: it would count the
whole cumulative total again (or drop the first sample). So a window's increase is the difference of two all-time
totals, ``increase_pure(m[ALL])`` at the window's end minus the same at its start (``increase_pure`` counts resets
and starts every counter at zero: the bridge's series are the ledger's totals from zero, the collector's
delta-to-cumulative series start at the first delta); a series with no sample before the window counts whole.
Exact for any gap, at the price of reading each series' whole history per query (docs/team.md measures it).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from bridge.errors import CentralError, ConfigError
from bridge.views import NATIVE_PREFERRED, billing_sources

TOKENS = "claude_code_token_usage_tokens_total"
COST = "claude_code_cost_usage_USD_total"
UNPRICED = "tokenbridge_unpriced_requests_total"
PREFERRED = "|".join(NATIVE_PREFERRED)  # the bridge's own views: native telemetry of their models is not counted
FALLBACK = "claude_code_otel"  # Claude Code's native telemetry, stamped by the collector
# "All time" for increase_pure: longer than any retention a team configures (VictoriaMetrics reads what it has).
ALL = "100y"
TYPES = ("input", "output", "cacheRead", "cacheCreation")
BY = ("user", "machine", "provider", "model")
KINDS = ("daily", "weekly", "monthly")
# Without --since: how far back each kind reaches (buckets, the current one included).
_DEFAULT_SPAN = {"daily": 30, "weekly": 12, "monthly": 12}
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_]+")
_COST_PLACES = Decimal("0.000001")  # the store sums float64: below a micro-dollar is rounding noise


def billing_regex() -> str:
    return "|".join(sorted(billing_sources()))


def window_increase(metric: str, selector: str, rng: str, since: str | None = None) -> str:
    """Each series' exact increase over the ``rng`` before the evaluation time (module docstring); with ``since``
    (a MetricsQL expression of a Unix time, e.g. the start of the UTC month), from that time on instead: a sample
    exactly at ``since`` belongs to the new period (the millisecond before it closes the old one)."""
    full = f"increase_pure({metric}{{{selector}}}[{ALL}])"
    before = f"{full} @ ({since} - 0.001)" if since else f"{full} offset {rng}"
    return f"(({full} - {before}) or {full})"


def team_query(
    metric: str, by: Sequence[str], rng: str, filters: str = "", scope: str = "user", since: str | None = None
) -> str:
    """``sum by (by)`` of each series' increase over ``rng`` (:func:`window_increase`) in the users' client
    views, each request counted once per ``scope``.

    ``filters``: extra matchers (the dashboards' variables); ``since``: see :func:`window_increase`. ``scope``:
    the labels inside which native telemetry gives way to the bridge's transcripts for the same model (``user``:
    native series carry no ``machine``)."""
    inner = [*by, *(label for label in (*scope.split(","), "model", "source") if label not in by)]

    def part(matcher: str) -> str:
        sel = ",".join(m for m in (filters, matcher) if m)
        return f"sum by ({', '.join(inner)}) {window_increase(metric, sel, rng, since)}"

    preferred = part(f'source=~"{PREFERRED}"')
    fallback = part(f'source="{FALLBACK}"')
    others = part(f'source!~"{PREFERRED}|{FALLBACK}|{billing_regex()}"')
    body = f"{preferred}\n  or on ({scope}, model) {fallback}\n  or {others}"
    return f"sum by ({', '.join(by)}) (\n  {body}\n)" if by else f"sum (\n  {body}\n)"


class Central:
    """The query side of the central store: ``url`` with an optional bearer ``token`` (or ``user:pass@`` in the
    URL for basic auth). Neither ever appears in a message."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url.strip().rstrip("/"))
        host = parts.hostname or ""
        self.shown = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        if parts.scheme not in ("http", "https") or not host:
            raise ConfigError("--central", f"not an http(s) URL: {self.shown}")
        self.timeout_s = timeout_s
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], Decimal]]:
        """An instant query at ``at`` (Unix seconds): each series' labels and value."""
        import httpx

        params = {"query": expr, "time": f"{at:.3f}", "nocache": "1"}
        try:
            r = httpx.post(f"{self.shown}/api/v1/query", data=params, headers=self._headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise CentralError(f"cannot reach the central store at {self.shown}: {type(exc).__name__}") from None
        if r.status_code in (401, 403):
            raise CentralError(f"the central store at {self.shown} refused the query (HTTP {r.status_code}): "
                               "check TOKENBRIDGE_CENTRAL_TOKEN")  # fmt: skip
        try:
            data = r.json()
        except json.JSONDecodeError:
            raise CentralError(f"the central store at {self.shown} answered HTTP {r.status_code}, not JSON") from None
        if r.status_code != 200 or not isinstance(data, dict) or data.get("status") != "success":
            error = data.get("error") if isinstance(data, dict) else None
            raise CentralError(f"the central store at {self.shown} answered HTTP {r.status_code}: {error}")
        result = data["data"]["result"]
        if data["data"].get("resultType") != "vector":
            raise CentralError(f"the central store at {self.shown}: expected a vector, got {data['data']}")
        return [(dict(s["metric"]), Decimal(str(s["value"][1]))) for s in result]


@dataclass(slots=True)
class Group:
    """Tokens by type, known cost and unpriced requests of one value of the ``--by`` dimension."""

    key: str
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    cost: Decimal | None = None
    unpriced: int = 0

    @property
    def total(self) -> int:
        return sum(self.tokens.values())

    def merge(self, other: Group) -> None:
        for t in TYPES:
            self.tokens[t] += other.tokens[t]
        if other.cost is not None:
            self.cost = other.cost + (self.cost or Decimal(0))
        self.unpriced += other.unpriced

    def as_json(self) -> dict[str, Any]:
        cost = None if self.cost is None else self.cost.quantize(_COST_PLACES).normalize()
        return {
            "inputTokens": self.tokens["input"],
            "outputTokens": self.tokens["output"],
            "cacheCreationTokens": self.tokens["cacheCreation"],
            "cacheReadTokens": self.tokens["cacheRead"],
            "totalTokens": self.total,
            # Unknown when no series of the group has a price (never $0); see unpricedRequests.
            "totalCost": None if cost is None else f"{cost:f}",
            "unpricedRequests": self.unpriced,
        }


@dataclass(slots=True)
class Bucket:
    key: str
    start: datetime
    end: datetime
    groups: dict[str, Group] = field(default_factory=dict)

    def total(self) -> Group:
        out = Group("total")
        for g in self.groups.values():
            out.merge(g)
        return out

    def ordered(self) -> list[Group]:
        """Largest spender first (cost, then tokens), unknown cost last: a team lead's top list."""
        return sorted(self.groups.values(), key=lambda g: (-(g.cost or Decimal(-1)), -g.total, g.key))


@dataclass(slots=True)
class CentralReport:
    kind: str
    by: str
    timezone: str
    url: str
    buckets: list[Bucket]
    billing_seen: list[str]

    def totals(self) -> dict[str, Group]:
        out: dict[str, Group] = {}
        for b in self.buckets:
            for g in b.groups.values():
                out.setdefault(g.key, Group(g.key)).merge(g)
        return out

    def as_json(self) -> dict[str, Any]:
        label = {"daily": "date", "weekly": "week", "monthly": "month"}[self.kind]
        items = []
        for b in self.buckets:
            groups = [{self.by: g.key, **g.as_json()} for g in b.ordered()]
            items.append({label: b.key, **b.total().as_json(), "groups": groups})
        grand = Group("total")
        for g in self.totals().values():
            grand.merge(g)
        per = sorted(self.totals().values(), key=lambda g: (-(g.cost or Decimal(-1)), -g.total, g.key))
        return {
            self.kind: items,
            "totals": grand.as_json(),
            "totalsBy": [{self.by: g.key, **g.as_json()} for g in per],
            "by": self.by,
            "timezone": self.timezone,
            "central": self.url,
            "billingSourcesNotAttributed": self.billing_seen,
        }


def buckets(kind: str, tz: tzinfo, since: date | None, until: date | None, now: datetime) -> list[Bucket]:
    """The periods from ``since`` to ``until`` (inclusive days) in ``tz``; the last one ends at ``now`` at the
    latest (a store answers nothing about the future)."""
    today = now.astimezone(tz).date()
    last = min(until or today, today)
    first = since or _default_since(kind, today)
    if first > last:
        raise ConfigError("--since/--until", f"no day between {first.isoformat()} and {last.isoformat()}")
    out: list[Bucket] = []
    start = _period_start(kind, first)
    while start <= last:
        nxt = _next_period(kind, start)
        lo = max(start, first)
        hi = min(nxt, last + timedelta(days=1))
        b_start = datetime(lo.year, lo.month, lo.day, tzinfo=tz)
        b_end = min(datetime(hi.year, hi.month, hi.day, tzinfo=tz), now)
        key = start.isoformat() if kind != "monthly" else f"{start.year:04d}-{start.month:02d}"
        out.append(Bucket(key, b_start, b_end))
        start = nxt
    return out


def _default_since(kind: str, today: date) -> date:
    n = _DEFAULT_SPAN[kind]
    if kind == "daily":
        return today - timedelta(days=n - 1)
    if kind == "weekly":
        return _period_start(kind, today) - timedelta(weeks=n - 1)
    months = today.year * 12 + today.month - 1 - (n - 1)
    return date(months // 12, months % 12 + 1, 1)


def _period_start(kind: str, d: date) -> date:
    if kind == "weekly":
        return d - timedelta(days=d.weekday())
    if kind == "monthly":
        return d.replace(day=1)
    return d


def _next_period(kind: str, d: date) -> date:
    if kind == "daily":
        return d + timedelta(days=1)
    if kind == "weekly":
        return d + timedelta(weeks=1)
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def build(
    central: Central,
    kind: str,
    by: str,
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
    sources: Sequence[str] | None = None,
    now: datetime | None = None,
) -> CentralReport:
    """Per bucket and value of ``by``: tokens, cost and unpriced requests from the central store.

    Each bucket is one instant query per metric at the last millisecond before the bucket's end, over a window of
    exactly its length: (start - 1 ms, end - 1 ms] is [start, end) in the store's millisecond timestamps, the
    local report's half-open buckets."""
    if kind not in KINDS:
        raise ConfigError("report", f"report {kind} reads the local ledger only; with --central: {', '.join(KINDS)}")
    if by not in BY:
        raise ConfigError("--by", f"with --central, --by is one of {', '.join(BY)}, not {by!r}")
    for name in sources or ():
        if not _LABEL_VALUE.fullmatch(name):
            raise ConfigError("--source", f"with --central, a source label value (letters, digits, _), not {name!r}")
    now = now or datetime.now(UTC)
    out = buckets(kind, tz, since, until, now)
    only = f'source=~"{"|".join(sources)}"' if sources else ""
    for b in out:
        span_ms = int((b.end - b.start).total_seconds() * 1000)
        if span_ms <= 0:
            continue
        at, rng = b.end.timestamp() - 0.001, f"{span_ms}ms"
        for metric, labels in ((TOKENS, [by, "type"]), (COST, [by]), (UNPRICED, [by])):
            expr = _plain(metric, labels, rng, only) if sources else team_query(metric, labels, rng)
            for series, value in central.query(expr, at):
                _add(b, metric, series.get(by) or "(none)", series.get("type", ""), value)
        # A series that only existed (a machine that was off) is no usage: no row of zeros.
        b.groups = {k: g for k, g in b.groups.items() if g.total or g.cost or g.unpriced}
    seen = [] if sources else _billing_seen(central, out)
    return CentralReport(kind, by, getattr(tz, "key", None) or str(tz), central.shown, out, seen)


def _plain(metric: str, by: Sequence[str], rng: str, matcher: str) -> str:
    """The selected sources as they are (``--source``): no rule, like the local report's ``--source``."""
    return f"sum by ({', '.join(by)}) {window_increase(metric, matcher, rng)}"


def _add(b: Bucket, metric: str, key: str, typ: str, value: Decimal) -> None:
    g = b.groups.get(key)
    if g is None:
        g = b.groups[key] = Group(key)
    if metric == TOKENS:
        if typ in g.tokens:
            g.tokens[typ] += int(value.to_integral_value())
    elif metric == COST:
        g.cost = value + (g.cost or Decimal(0))
    else:
        g.unpriced += int(value.to_integral_value())


def _billing_seen(central: Central, out: list[Bucket]) -> list[str]:
    """Billing sources with data in the report's range: not attributed to users (module docstring)."""
    if not out:
        return []
    start, end = out[0].start, out[-1].end
    span_ms = int((end - start).total_seconds() * 1000)
    if span_ms <= 0:
        return []
    selector = f'source=~"{billing_regex()}"'
    expr = f"sum by (source) {window_increase(COST, selector, f'{span_ms}ms')}"
    return sorted(s.get("source", "") for s, v in central.query(expr, end.timestamp() - 0.001) if v > 0)


_HEADER = {"user": "User", "machine": "Machine", "provider": "Provider", "model": "Model"}
_FIRST = {"daily": "Date", "weekly": "Week of", "monthly": "Month"}


def table(rep: CentralReport, cell: Any) -> Any:
    """The report as a Rich table: a row per period, a row per ``--by`` value under it (largest spender first),
    and the range's totals per value at the end. ``cell`` escapes names for the terminal (bridge.cli)."""
    from rich.table import Table

    t = Table(title=cell(f"Team usage from {rep.url} — {rep.kind.capitalize()} by {rep.by} ({rep.timezone})"))
    t.add_column(_FIRST[rep.kind], overflow="fold")
    t.add_column(_HEADER[rep.by], overflow="fold")
    for col in ("Input", "Output", "Cache create", "Cache read", "Total tokens", "Cost (USD)"):
        t.add_column(col, justify="right", no_wrap=True)
    for b in rep.buckets:
        if not b.groups:
            continue
        t.add_row(cell(b.key), "", *_cells(b.total()))
        for g in b.ordered():
            t.add_row("", cell(g.key), *_cells(g))
    t.add_section()
    per = sorted(rep.totals().values(), key=lambda g: (-(g.cost or Decimal(-1)), -g.total, g.key))
    for g in per:
        t.add_row("Total", cell(g.key), *_cells(g), style="bold")
    return t


def _cells(g: Group) -> list[str]:
    cost = "unknown" if g.cost is None else f"${g.cost:,.2f}" + (" + ?" if g.unpriced else "")
    tk = g.tokens
    return [f"{n:,}" for n in (tk["input"], tk["output"], tk["cacheCreation"], tk["cacheRead"], g.total)] + [cost]
