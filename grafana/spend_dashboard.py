"""The "Spend control" dashboard: burn rate, calendar spend against budgets, the month-end projection, prepaid
balances with their alert levels, Claude plan quota windows and firing alerts.

It reads the recording rules of prometheus/rules/spend.yml (generated from the same count-once rule as the other
dashboards) and the gauges the bridge exports, so it shows nothing until Prometheus has evaluated the rules.
Built with grafana/generate_dashboards.py's panel helpers (passed in as `g`).
"""

from __future__ import annotations

from typing import Any

PROV = 'provider=~"$provider"'


def spend(g: Any) -> dict:
    lay = g.Layout()
    p: list[dict] = []
    p.append(
        g.text(
            lay,
            "How these numbers are counted",
            g.DEDUP_TEXT + "\n\nThese panels read Prometheus recording rules (`prometheus/rules/spend.yml`): "
            "today / this week / this month are **UTC** calendar periods, burn rates are USD per hour. Budgets and "
            "alert levels come from the config file's `[budgets]`/`[alerts]` or `.env` (`TOKENBRIDGE_BUDGET_*`, "
            "`TOKENBRIDGE_BALANCE_LOW*`).",
            h=5,
        )
    )
    p.append(g.row(lay, "Now"))
    p.append(g.stat(lay, "Burn rate (last hour)", "tokenbridge:cost_usd_per_hour:rate1h", "currencyUSD", decimals=2))
    p.append(g.stat(lay, "Spent today (UTC)", "tokenbridge:cost_usd:today", "currencyUSD", decimals=2))
    p.append(g.stat(lay, "Spent this week", "tokenbridge:cost_usd:week", "currencyUSD", decimals=2))
    p.append(g.stat(lay, "Spent this month", "tokenbridge:cost_usd:month", "currencyUSD", decimals=2))
    proj = g.stat(
        lay,
        "Projected month end vs budget",
        "tokenbridge:cost_usd:month_end_projected",
        "currencyUSD",
        w=8,
        decimals=2,
        legend="projected",
        desc="This month so far plus the last day's burn rate until the month ends; B is the monthly budget "
        "(TOKENBRIDGE_BUDGET_MONTHLY_USD), absent when none is set.",
    )
    proj["targets"].append(g.target("tokenbridge:threshold:budget_monthly_usd", ref="B", legend="budget", instant=True))
    p.append(proj)
    p.append(g.row(lay, "Over time"))
    burn = g.timeseries(
        lay,
        "Burn rate by provider (USD/h)",
        f"provider:tokenbridge_cost_usd_per_hour:rate1h{{{PROV}}}",
        "{{provider}}",
        "currencyUSD",
        draw="line",
        stack=False,
        desc="Last hour's cost per hour; dashed: the 7-day average the BurnRateSpike alert compares with.",
    )
    burn["targets"].append(
        g.target(f"provider:tokenbridge_cost_usd_per_hour:avg7d{{{PROV}}}", ref="B", legend="{{provider}} normal")
    )
    p.append(burn)
    p.append(
        g.timeseries(
            lay,
            "Tokens per minute by provider",
            f"provider:tokenbridge_tokens_per_minute:rate5m{{{PROV}}}",
            "{{provider}}",
            "short",
            draw="line",
            stack=False,
        )
    )
    bal = g.timeseries(
        lay,
        "Prepaid balances and alert levels",
        f"tokenbridge_balance{{{PROV}}}",
        "{{provider}} {{currency}}",
        "short",
        draw="line",
        stack=False,
        desc="Each provider's balance in its currency; B: the level below which ProviderBalanceLow fires.",
    )
    bal["targets"].append(
        g.target(f"tokenbridge:threshold:balance_low{{{PROV}}}", ref="B", legend="{{provider}} alert level")
    )
    p.append(bal)
    quota = g.timeseries(
        lay,
        "Claude plan quota windows (% used)",
        "tokenbridge_quota_used_percent",
        "{{provider}} {{window}}",
        "percent",
        draw="line",
        stack=False,
        desc="The 5-hour and 7-day windows as Claude Code reports them to `tokenbridge statusline`.",
    )
    quota["fieldConfig"]["defaults"]["max"] = 100
    p.append(quota)
    p.append(g.row(lay, "Alerts"))
    p.append(
        g.table(
            lay,
            "Firing alerts",
            [g.table_target('ALERTS{alertstate="firing"}', "A")],
            w=24,
            desc="Alerts Prometheus is firing now (sent to Alertmanager and its webhook).",
        )
    )
    return g.dashboard(
        "tokenbridge-spend",
        "Spend control",
        "Burn rate, budgets, projection, balances, plan quotas and firing alerts.",
        p,
        ["tokenbridge", "spend"],
    )
