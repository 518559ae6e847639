"""``tokenbridge status [--json]``: how much today, this week, this month, and how fast — from the ledger alone.

Periods are calendar periods in the local time zone (today from midnight, the week from Monday, the month from
the 1st). The burn rate is the last hour's cost; the month-end projection adds the last 24 hours' average rate
for the rest of the month. Budgets are the same settings as the alerts (config file ``[budgets] daily_usd`` and
``monthly_usd``, ``TOKENBRIDGE_BUDGET_DAILY_USD``/``…_MONTHLY_USD`` over them: ``bridge.alerts``). Balances and plan
quota windows are the ledger's gauges. Costs of requests without a known price are unknown, not $0: they are
counted and flagged.

JSON keys are stable: ``today``, ``week``, ``month`` (each ``{provider: {cost, tokens, requests, unpriced}}``
plus ``total``), ``burn_rate_usd_per_hour``, ``projected_month_usd``, ``budgets``, ``balances``, ``quotas``,
``sources``.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge._rows import from_pusd
from bridge.errors import ConfigError
from bridge.ledger import Ledger

BALANCE = "tokenbridge.balance"
QUOTA_USED = "tokenbridge.quota.used_percent"
QUOTA_RESETS = "tokenbridge.quota.resets_at"
BUDGET_KEYS = {"daily": "TOKENBRIDGE_BUDGET_DAILY_USD", "monthly": "TOKENBRIDGE_BUDGET_MONTHLY_USD"}
_Q = 900_000  # Ledger.aggregate's quarter-hour bucket, in ms


def budgets(env: Mapping[str, str]) -> dict[str, Decimal]:
    """Configured budgets; a bad value is a ConfigError naming the variable."""
    out = {}
    for name, key in BUDGET_KEYS.items():
        raw = env.get(key, "").strip()
        if not raw:
            continue
        try:
            v = Decimal(raw)
        except InvalidOperation:
            raise ConfigError(key, f"not a number: {raw!r}") from None
        if not v.is_finite() or v < 0:
            raise ConfigError(key, f"must be a number >= 0, got {raw!r}")
        out[name] = v
    return out


def _period_starts(now: datetime) -> dict[str, date]:
    today = now.date()
    return {"today": today, "week": today - timedelta(days=today.weekday()), "month": today.replace(day=1)}


def _empty() -> dict[str, Any]:
    return {"cost": Decimal(0), "tokens": 0, "requests": 0, "unpriced": 0}


def build(ledger: Ledger, env: Mapping[str, str], now: float | None = None, tz: tzinfo | None = None) -> dict[str, Any]:
    """Periods are whole local days computed by the report code (same zone rules, same
    single-count exclusions), so ``status`` and ``report`` agree to the token and the cent."""
    from bridge import report
    from bridge._tz import system_tz
    from bridge.views import default_exclusions

    now = time.time() if now is None else now
    tz = tz or system_tz()
    local_now = datetime.fromtimestamp(now, tz)
    starts = _period_starts(local_now)
    now_ms = int(now * 1000) + 1
    exclude = default_exclusions(ledger)
    periods: dict[str, dict[str, dict[str, Any]]] = {}
    for period, first in starts.items():
        rep = report.build(ledger, "daily", tz, first, starts["today"], exclude=exclude)
        lines: dict[str, dict[str, Any]] = {}
        for b in rep.buckets:
            for (_model, provider), sub in b.models.items():
                line = lines.setdefault(provider, _empty())
                line["cost"] += from_pusd(sub.cost_pusd)
                line["tokens"] += sub.total
                line["unpriced"] += sub.unpriced
                line["requests"] += sub.requests
        periods[period] = lines
    for lines in periods.values():
        total = _empty()
        for line in list(lines.values()):
            for k in total:
                total[k] += line[k]
        lines["total"] = total

    def cost_since(ms: int) -> Decimal:
        rows = ledger.aggregate("quarter", since_ms=ms, until_ms=now_ms, exclude=exclude)
        return from_pusd(sum(int(r[8] or 0) for r in rows))  # known cost (None: none known)

    burn = cost_since(now_ms - 1 - 3600_000)
    day_rate = cost_since(now_ms - 1 - 86400_000) / 24
    days = calendar.monthrange(local_now.year, local_now.month)[1]
    first = starts["month"]
    month_end = datetime(first.year, first.month, 1, tzinfo=tz) + timedelta(days=days)
    hours_left = Decimal(str(max(0.0, (month_end - local_now).total_seconds()) / 3600))
    month_cost = periods["month"]["total"]["cost"]
    projected = month_cost + day_rate * hours_left
    spent = {"daily": periods["today"]["total"]["cost"], "monthly": month_cost}
    budget_rows = {
        name: {
            "budget": limit,
            "spent": spent[name],
            "used_percent": (spent[name] / limit * 100).quantize(Decimal("0.01")) if limit else None,
            **({"projected": projected} if name == "monthly" else {}),
        }
        for name, limit in budgets(env).items()
    }
    quotas: dict[str, dict[str, Any]] = {}
    for g in ledger.gauges(QUOTA_USED):
        quotas.setdefault(g.labels.get("window", "?"), {})["used_percent"] = g.value
    for g in ledger.gauges(QUOTA_RESETS):
        quotas.setdefault(g.labels.get("window", "?"), {})["resets_at"] = int(g.value)
    return {
        "timezone": str(local_now.tzinfo),
        **periods,
        "burn_rate_usd_per_hour": burn,
        "projected_month_usd": projected,
        "budgets": budget_rows,
        "balances": [
            {**g.labels, "amount": g.value, "at": datetime.fromtimestamp(g.ts_ms / 1000).astimezone().isoformat()}
            for g in ledger.gauges(BALANCE)
        ],
        "quotas": quotas,
        "sources": {
            name: {
                "last_success": _iso(h.last_success_ms),
                "last_error": h.last_error,
                "last_error_kind": h.last_error_kind,
                "consecutive_failures": h.consecutive_failures,
            }
            for name, h in sorted(ledger.health().items())
        },
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000).astimezone().isoformat()


def to_json(data: Any) -> Any:
    """Decimals as strings (money is never a float in JSON either)."""
    if isinstance(data, dict):
        return {k: to_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [to_json(v) for v in data]
    if isinstance(data, Decimal):
        return format(data.normalize(), "f")
    return data


def cmd_status(args: Any) -> int:
    """CLI entry (``tokenbridge status [--json]``)."""
    import json

    from bridge import config

    settings = config.load(state_dir=args.state_dir, config=args.config)
    with Ledger.open(settings.state_dir) as ledger:
        data = build(ledger, settings.alert_values)  # config file, environment over it (bridge.alerts)
    print(json.dumps(to_json(data), indent=2) if args.json else render(data))
    return 0


def render(data: dict[str, Any]) -> str:
    def money(d: Decimal) -> str:
        return f"${d:,.2f}"

    out = [f"Spend ({data['timezone']})"]
    providers = sorted({p for period in ("today", "week", "month") for p in data[period] if p != "total"})
    out.append(f"  {'':<14}{'today':>12}{'this week':>12}{'this month':>12}")
    for p in [*providers, "total"]:
        cells = []
        for period in ("today", "week", "month"):
            line = data[period].get(p)
            cells.append(money(line["cost"]) + ("+?" if line["unpriced"] else "") if line else "-")
        out.append(f"  {p:<14}" + "".join(f"{c:>12}" for c in cells))
    out.append(f"Burn rate: {money(data['burn_rate_usd_per_hour'])}/h (last hour)")
    out.append(f"Month-end projection: {money(data['projected_month_usd'])} (at the last 24 hours' rate)")
    for name, b in data["budgets"].items():
        pct = f" ({b['used_percent']:.0f}%)" if b["used_percent"] is not None else ""
        proj = f", projected {money(b['projected'])}" if "projected" in b else ""
        out.append(f"Budget {name}: {money(b['spent'])} of {money(b['budget'])}{pct}{proj}")
    for bal in data["balances"]:
        out.append(f"Balance {bal.get('provider', '?')}: {bal['amount']:,.2f} {bal.get('currency', '')}".rstrip())
    for window, q in sorted(data["quotas"].items()):
        reset = ""
        if "resets_at" in q:
            reset = ", resets " + datetime.fromtimestamp(q["resets_at"]).astimezone().strftime("%a %H:%M")
        out.append(f"Plan quota {window}: {q.get('used_percent', Decimal(0)):.0f}% used{reset}")
    unpriced = data["month"]["total"]["unpriced"]
    if unpriced:
        out.append(
            f"Warning: {unpriced} request(s) or usage row(s) this month have no known price: "
            "their cost is not included."
        )
    for name, h in data["sources"].items():
        if h["consecutive_failures"]:
            out.append(f"Source {name}: failing ({h['last_error_kind']}: {h['last_error']})")
    return "\n".join(out)
