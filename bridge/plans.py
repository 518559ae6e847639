"""``report … --plan pro|max5|max20|api``: would the report's Claude usage have cost more at API list prices
than the subscription?

Plans are priced per calendar month, so the plan's share of a report is pro-rated by day: each month the report
touches contributes ``monthly price × days covered / days in that month``. The period runs from ``--since`` (else
the first day with Claude usage) to ``--until`` (else today), in the report's time zone. The usage side is the
report's rows of provider ``anthropic`` priced at API list prices; requests without a known price are not in that
sum and are counted, and when none has a price the comparison says it cannot be made (never $0).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from bridge import report
from bridge._rows import from_pusd
from bridge.errors import ConfigError
from bridge.ledger import Ledger

# Monthly prices in USD, monthly billing, before tax (annual Pro billing is cheaper; not modelled).
PLANS: dict[str, tuple[str, Decimal | None]] = {
    "pro": ("Claude Pro", Decimal(20)),
    "max5": ("Claude Max 5x", Decimal(100)),
    "max20": ("Claude Max 20x", Decimal(200)),
    "api": ("API, pay as you go", None),
}
PRICE_SOURCE = "Anthropic's pricing page https://www.anthropic.com/pricing: monthly billing, USD, before tax"
PROVIDER = "anthropic"
_CENT = Decimal("0.01")


def prices(overrides: dict[str, Decimal] | None = None) -> dict[str, Decimal | None]:
    """Monthly price per plan: the table above, then the config file's ``[plans]``."""
    out = {name: price for name, (_label, price) in PLANS.items()}
    out.update(overrides or {})
    return out


@dataclass(slots=True)
class Usage:
    """The report's Claude usage: known cost, and requests with and without a price."""

    cost_pusd: int = 0
    requests: int = 0
    unpriced: int = 0
    priced: bool = False
    first_day: date | None = None

    @property
    def cost(self) -> Decimal | None:
        return None if self.unpriced and not self.priced else from_pusd(self.cost_pusd)


@dataclass(slots=True)
class Comparison:
    plan: str
    monthly: Decimal | None
    usage: Usage
    since: date | None = None
    until: date | None = None
    months: list[tuple[str, int, int, Decimal]] = field(default_factory=list)  # (YYYY-MM, days, of days, USD)

    @property
    def plan_cost(self) -> Decimal | None:
        return None if self.monthly is None else sum((m[3] for m in self.months), Decimal(0))

    @property
    def difference(self) -> Decimal | None:
        """API list price minus the plan's pro-rated price (> 0: the plan pays off)."""
        cost, plan = self.usage.cost, self.plan_cost
        return None if cost is None or plan is None else cost - plan

    def as_json(self) -> dict[str, Any]:
        def s(d: Decimal | None) -> str | None:
            return None if d is None else format(d.quantize(Decimal("0.000001")).normalize(), "f")

        return {
            "plan": self.plan,
            "name": PLANS[self.plan][0],
            "monthlyUsd": s(self.monthly),
            "priceSource": PRICE_SOURCE,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "months": [{"month": m, "days": d, "daysInMonth": n, "planUsd": s(usd)} for m, d, n, usd in self.months],
            "planCostUsd": s(self.plan_cost),
            "apiCostUsd": s(self.usage.cost),
            "requests": self.usage.requests,
            "unpricedRequests": self.usage.unpriced,
            "differenceUsd": s(self.difference),
        }


def prorate(monthly: Decimal, since: date, until: date) -> list[tuple[str, int, int, Decimal]]:
    """Each calendar month in since..until (inclusive): (YYYY-MM, days covered, days in month, its share in USD)."""
    out = []
    day = since
    while day <= until:
        n = calendar.monthrange(day.year, day.month)[1]
        last = min(until, day.replace(day=n))
        days = (last - day).days + 1
        out.append((f"{day.year:04d}-{day.month:02d}", days, n, monthly * days / n))
        day = last + timedelta(days=1)
    return out


def compare(
    plan: str,
    monthly: Decimal | None,
    usage: Usage,
    since: date | None,
    until: date | None,
    today: date,
) -> Comparison:
    """The comparison for ``plan`` (``monthly`` USD, None for pay as you go) over the report's period."""
    if plan not in PLANS:
        raise ConfigError("--plan", f"unknown plan {plan!r} (one of {', '.join(PLANS)})")
    start = since or usage.first_day
    end = until or max(today, start or today)
    cmp = Comparison(plan, monthly, usage, start, end if start else None)
    if monthly is not None and start is not None:
        cmp.months = prorate(monthly, start, end)
    return cmp


def for_report(
    ledger: Ledger,
    plan: str,
    overrides: dict[str, Decimal],
    tz: tzinfo,
    days: tuple[date | None, date | None],
    sources: Sequence[str] | None,
    exclude: Sequence[tuple[str, str, int]],
) -> Comparison:
    """The comparison for a report over ``days`` (since, until) of ``sources`` without ``exclude``."""
    since, until = days
    daily = report.build(ledger, "daily", tz, since, until, sources, exclude=exclude)
    return compare(plan, prices(overrides).get(plan), usage_of(daily), since, until, datetime.now(tz).date())


def usage_of(daily: report.Report) -> Usage:
    """Claude usage (provider ``anthropic``) of a ``bridge.report`` daily report."""
    u = Usage()
    for b in daily.buckets:
        for (_model, provider), line in b.models.items():
            if provider != PROVIDER:
                continue
            u.cost_pusd += line.cost_pusd
            u.requests += line.requests
            u.unpriced += line.unpriced
            u.priced = u.priced or line.priced
            if u.first_day is None:
                u.first_day = date.fromisoformat(b.key)
    return u


def _months(months: list[tuple[str, int, int, Decimal]]) -> list[str]:
    """Partial months one by one ("2026-03: 30 of 31 days = $19.35"), whole months counted together."""
    whole = [usd for _m, d, n, usd in months if d == n]
    out = [f"{m}: {d} of {n} days = ${usd.quantize(_CENT):,.2f}" for m, d, n, usd in months if d != n]
    if whole:
        out.insert(1 if months[0][1] != months[0][2] else 0, f"{len(whole)} whole month(s) = ${sum(whole):,.2f}")
    return out


def explain(c: Comparison) -> list[str]:
    """What the comparison means, in a few lines under the report."""
    name = PLANS[c.plan][0]
    cost = c.usage.cost
    known = "" if cost is None else f"${cost:,.2f}"
    missing = (
        f" (+ {c.usage.unpriced} request(s) or usage row(s) without a known price, not included)"
        if c.usage.unpriced
        else ""
    )
    if not (c.usage.requests or c.usage.unpriced or c.usage.priced):  # usage rows may carry no request count
        return [f"Plan {name}: no Claude usage (provider {PROVIDER}) in this report to compare."]
    usage_line = f"Claude usage at API list prices: {known or 'unknown (no request has a known price)'}{missing}."
    if c.monthly is None:
        return [f"Plan {name}: you pay the API list price.", usage_line]
    assert c.since and c.until and c.plan_cost is not None
    lines = [
        f"Plan {name}: ${c.monthly:,.2f}/month (from {PRICE_SOURCE}; override in the config file's [plans]).",
        f"Period {c.since.isoformat()} to {c.until.isoformat()}, the plan's price pro-rated by day: "
        + "; ".join(_months(c.months))
        + f"; together ${c.plan_cost.quantize(_CENT):,.2f}.",
        usage_line,
    ]
    diff = c.difference
    if diff is None:
        lines.append("No comparison: the usage has no known price.")
    elif diff > 0:
        at_least = "at least " if c.usage.unpriced else ""
        lines.append(
            f"At API prices this usage would cost {at_least}${diff:,.2f} more than the plan: the plan pays off."
        )
    else:
        caveat = " (not counting the requests without a known price)" if c.usage.unpriced else ""
        lines.append(f"At API prices this usage would cost ${-diff:,.2f} less than the plan{caveat}.")
    return lines
