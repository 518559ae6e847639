"""The answers of the HTTP API, computed from the ledger with the same code as ``tokenbridge report``.

Every number here comes from ``report.build`` (the same SQL, the same time-zone bucketing, the
same unknown-price rule), so the web view and the terminal report can never disagree. This module
knows nothing of HTTP: ``bridge.web`` maps requests to these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from bridge import config, report
from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.record import Tokens

BY = ("provider", "model", "source")
MAX_DAYS = 3660


class BadRequest(ConfigError):
    """A query parameter is invalid: ``key`` names it (a 400 answer)."""


@dataclass(frozen=True, slots=True)
class Query:
    """Validated query parameters shared by every usage endpoint."""

    tz: tzinfo
    since: date | None = None
    until: date | None = None
    sources: tuple[str, ...] | None = None
    providers: tuple[str, ...] | None = None


def parse_query(params: dict[str, list[str]]) -> Query:
    """``since``, ``until`` (YYYY-MM-DD), ``timezone`` (IANA), ``source`` and ``provider``
    (repeatable or comma-separated). Raises ``BadRequest`` naming the parameter."""
    tz_name = _one(params, "timezone")
    try:
        tz = report.resolve_tz(tz_name)
    except ConfigError as exc:
        raise BadRequest("timezone", str(exc).split(": ", 1)[-1]) from None
    since = _day(params, "since")
    until = _day(params, "until")
    if since and until and since > until:
        raise BadRequest("since", f"{since} is after until={until}")
    sources = _many(params, "source")
    if sources is not None:
        from bridge.sources import _registry

        try:
            sources = _registry.resolve(sources)
        except ValueError as exc:
            known = ", ".join(_registry.selectors())
            raise BadRequest("source", f"unknown source {exc.args[0]!r} (known: {known})") from None
    return Query(tz, since, until, sources, _many(params, "provider"))


def _one(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(key, "given more than once")
    return values[0].strip() or None


def _many(params: dict[str, list[str]], key: str) -> tuple[str, ...] | None:
    items = [v.strip() for raw in params.get(key, []) for v in raw.split(",") if v.strip()]
    return tuple(items) if items else None


def _day(params: dict[str, list[str]], key: str) -> date | None:
    value = _one(params, key)
    if value is None:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequest(key, f"expected YYYY-MM-DD, got {value!r}") from None
    if not 2000 <= day.year <= 2100:
        raise BadRequest(key, f"{value} is outside 2000-01-01..2100-12-31")
    return day


def int_param(params: dict[str, list[str]], key: str, default: int, low: int, high: int) -> int:
    value = _one(params, key)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(key, f"expected an integer, got {value!r}") from None
    if not low <= n <= high:
        raise BadRequest(key, f"must be between {low} and {high}, got {n}")
    return n


def choice_param(params: dict[str, list[str]], key: str, choices: Sequence[str]) -> str | None:
    value = _one(params, key)
    if value is not None and value not in choices:
        raise BadRequest(key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def today(tz: tzinfo) -> date:
    return datetime.now(tz).date()


def _build(ledger: Ledger, kind: str, q: Query, since: date | None = None, until: date | None = None) -> report.Report:
    return report.build(
        ledger, kind, q.tz, since or q.since, until or q.until, q.sources, exclude=_exclusions(ledger, q)
    )


def _exclusions(ledger: Ledger, q: Query) -> list[tuple[str, str, int]]:
    """Default totals count each request once (``bridge.views``); a chosen source is shown as is."""
    from bridge.views import default_exclusions

    return [] if q.sources is not None else default_exclusions(ledger)


def _lines(rep: report.Report, providers: tuple[str, ...] | None) -> list[tuple[report.Bucket, report.Line]]:
    """Each bucket with its line, restricted to ``providers`` when given (from the per-model lines)."""
    out = []
    for b in rep.buckets:
        if providers is None:
            out.append((b, b.line))
            continue
        line = report.Line()
        for (_model, provider), sub in b.models.items():
            if provider in providers:
                _add(line, sub)
        if line.priced or line.unpriced:  # has rows (each is priced or not), with or without requests or tokens
            out.append((b, line))
    return out


def _add(into: report.Line, other: report.Line) -> None:
    into.merge(other)  # sums, and the providers and sources each JSON row carries


def _total(rep: report.Report, providers: tuple[str, ...] | None) -> report.Line:
    if providers is None:
        return rep.totals
    line = report.Line()
    for _b, sub in _lines(rep, providers):
        _add(line, sub)
    return line


def summary(ledger: Ledger, q: Query) -> dict[str, Any]:
    """All-time, last 30 days, last 7 days and today (days in ``q.tz``, today included)."""
    end = today(q.tz)
    periods = {
        "allTime": (q.since, q.until),
        "last30Days": (end - timedelta(days=29), end),
        "last7Days": (end - timedelta(days=6), end),
        "today": (end, end),
    }
    out: dict[str, Any] = {"timezone": _tz_name(q.tz), "date": end.isoformat()}
    for name, (since, until) in periods.items():
        rep = report.build(ledger, "daily", q.tz, since, until, q.sources, exclude=_exclusions(ledger, q))
        out[name] = {"since": _iso(since), "until": _iso(until), **_total(rep, q.providers).as_json()}
    return out


def by_model(ledger: Ledger, q: Query) -> dict[str, Any]:
    rep = _build(ledger, "models", q)
    rows = []
    for b in rep.buckets:
        for (model, provider), line in sorted(b.models.items()):
            if q.providers is None or provider in q.providers:
                rows.append({"model": model, "provider": provider, **line.as_json()})
    rows.sort(key=lambda r: -int(r["totalTokens"]))
    return {"models": rows, "totals": _total(rep, q.providers).as_json(), "timezone": rep.timezone}


def by_provider(ledger: Ledger, q: Query) -> dict[str, Any]:
    rep = _build(ledger, "models", q)
    lines: dict[str, report.Line] = {}
    for b in rep.buckets:
        for (_model, provider), line in b.models.items():
            if q.providers is None or provider in q.providers:
                _add(lines.setdefault(provider, report.Line()), line)
    rows = [{"provider": p, **line.as_json()} for p, line in sorted(lines.items(), key=lambda kv: -kv[1].total)]
    return {"providers": rows, "totals": _total(rep, q.providers).as_json(), "timezone": rep.timezone}


def timeline(ledger: Ledger, q: Query, days: int, by: str | None) -> dict[str, Any]:
    """Daily buckets over the last ``days`` days (or since/until), each split ``by`` a dimension."""
    until = q.until or today(q.tz)
    since = q.since or until - timedelta(days=days - 1)
    rep = _build(ledger, "daily", q, since, until)
    series: dict[str, dict[str, report.Line]] = {}
    if by in ("provider", "model"):
        for b in rep.buckets:
            for (model, provider), line in b.models.items():
                if q.providers is None or provider in q.providers:
                    key = provider if by == "provider" else model
                    _add(series.setdefault(key, {}).setdefault(b.key, report.Line()), line)
    elif by == "source":
        for source in _sources_in(ledger, q.sources):
            sub = report.build(ledger, "daily", q.tz, since, until, (source,))
            for b, line in _lines(sub, q.providers):
                series.setdefault(source, {})[b.key] = line
    day_list = [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]
    by_day = {b.key: line for b, line in _lines(rep, q.providers)}
    out: dict[str, Any] = {
        "timezone": rep.timezone,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "days": [{"date": d, **by_day.get(d, report.Line()).as_json()} for d in day_list],
    }
    if by:
        out["by"] = by
        out["series"] = {
            name: [{"date": d, **points.get(d, report.Line()).as_json()} for d in day_list]
            for name, points in sorted(series.items())
        }
    return out


def _sources_in(ledger: Ledger, only: tuple[str, ...] | None) -> list[str]:
    names = [t.source for t in ledger.totals()]
    return sorted({n for n in names if only is None or n in only})


def cache_savings(ledger: Ledger, q: Query, settings: config.Settings) -> dict[str, Any]:
    """What cache reads saved against paying the input rate for the same tokens, per model.

    A model without a price contributes nothing and is listed as unpriced (never as $0 saved).
    """
    from bridge.app import LazyPricer

    pricer = LazyPricer(settings)
    rep = _build(ledger, "models", q)
    saved = Decimal(0)
    unpriced: list[str] = []
    reads = 0
    for b in rep.buckets:
        for (model, provider), line in b.models.items():
            if q.providers is not None and provider not in q.providers:
                continue
            if not line.cache_read:
                continue
            reads += line.cache_read
            as_input = pricer.cost(provider, model, Tokens(input=line.cache_read))
            as_read = pricer.cost(provider, model, Tokens(cache_read=line.cache_read))
            if as_input is None or as_read is None:
                unpriced.append(model)
                continue
            saved += as_input - as_read
    total_in = rep.totals.input + rep.totals.cache_read + rep.totals.cache_creation
    return {
        "cacheReadTokens": reads,
        "hitRatio": None if not total_in else round(rep.totals.cache_read / total_in, 4),
        "savedUSD": str(saved.normalize() if saved else Decimal(0)),
        "unpricedModels": sorted(set(unpriced)),
    }


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _tz_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)
