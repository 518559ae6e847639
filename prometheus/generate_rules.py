#!/usr/bin/env python3
"""Generate tokenbridge's spend recording and alerting rules, and the alert thresholds file.

    python3 prometheus/generate_rules.py               # rewrite prometheus/rules/spend.yml
    python3 prometheus/generate_rules.py --check       # exit 1 if the committed spend.yml is stale
    python3 prometheus/generate_rules.py --thresholds [--env-file .env] [--config PATH]
                                                       # write prometheus/rules/thresholds.yml from the settings

Why generated: the PromQL that counts Claude Code usage once (bridge transcripts/stats cache preferred per model,
native telemetry as fallback, every other source added) lives in grafana/generate_dashboards.py; the rules import
it so dashboards and rules can never disagree.

Thresholds: every alert compares against a recorded series ``tokenbridge:threshold:<name>``. Its value is the
configured one (``tokenbridge:threshold_config:<name>``, recorded by the generated, git-ignored thresholds.yml) or
the default written into spend.yml, so the alerts work with no configuration at all. The configured values come
from the config file's [budgets]/[alerts], then .env, then the environment (bridge/alerts.py, shared with
`tokenbridge status` and scripts/alertmanager_config.py). Budgets have no default: no
budget configured, no budget alert. Prometheus has no time zones: today/week/month are UTC calendar periods (weeks
start on Monday); they lag the present by at most one 5-minute step.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # bridge.alerts, with the system Python too (standard library only)

from bridge import alerts  # noqa: E402
from bridge.errors import ConfigError  # noqa: E402

OUT = HERE / "rules" / "spend.yml"
THRESHOLDS_OUT = HERE / "rules" / "thresholds.yml"


def _dashboards() -> Any:
    spec = importlib.util.spec_from_file_location("_tb_dashboards", REPO / "grafana" / "generate_dashboards.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_D = _dashboards()
COST, TOKENS = _D.COST, _D.TOKENS

# Metrics other parts of tokenbridge export (gauges from the ledger): names after Prometheus translation.
BALANCE = "tokenbridge_balance"  # labels provider, currency
QUOTA_USED = "tokenbridge_quota_used_percent"  # labels provider, window (five_hour, seven_day)
QUOTA_RESETS = "tokenbridge_quota_resets_at"  # unix seconds; labels provider, window
# Source health, exported from the ledger's health table: tokenbridge.source.consecutive_failures (labels source,
# last_error_kind) and tokenbridge.source.last_success (unit s: Unix time, label source).
SOURCE_FAILURES = "tokenbridge_source_consecutive_failures"
SOURCE_LAST_SUCCESS = "tokenbridge_source_last_success_seconds"


# name -> (env var, default or None, help). Values are plain non-negative numbers (checked by bridge.alerts).
THRESHOLDS: dict[str, tuple[str, str | None, str]] = {
    "budget_daily_usd": ("TOKENBRIDGE_BUDGET_DAILY_USD", None, "daily budget in USD (UTC day); unset: no alert"),
    "budget_monthly_usd": ("TOKENBRIDGE_BUDGET_MONTHLY_USD", None, "monthly budget in USD; unset: no alert"),
    "balance_low_default": ("TOKENBRIDGE_BALANCE_LOW", "5", "prepaid balance alert level, provider's currency"),
    "quota_used_percent": ("TOKENBRIDGE_QUOTA_ALERT_PERCENT", "80", "plan quota window alert level, percent"),
    "burn_rate_spike_factor": ("TOKENBRIDGE_BURN_SPIKE_FACTOR", "3", "last hour's burn rate vs the 7-day average"),
    "burn_rate_spike_min_usd_per_hour": ("TOKENBRIDGE_BURN_SPIKE_MIN_USD_PER_HOUR", "1", "ignore spikes below"),
    "source_silent_seconds": ("TOKENBRIDGE_SOURCE_SILENT_HOURS", "6", "hours without a successful pass"),
    "source_failures": ("TOKENBRIDGE_SOURCE_FAILURES", "3", "consecutive failed passes"),
}
BALANCE_PREFIX = alerts.BALANCE_PREFIX  # TOKENBRIDGE_BALANCE_LOW_OPENROUTER=10: per provider


class _Block(str):
    """A multi-line string dumped as a YAML block scalar (readable PromQL)."""


def _block_representer(dumper: yaml.SafeDumper, data: _Block) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


yaml.SafeDumper.add_representer(_Block, _block_representer)


def _expr(text: str) -> str:
    text = text.strip()
    return _Block(text + "\n") if "\n" in text else text


def rec(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"record": name, "expr": _expr(expr)}
    if labels:
        r["labels"] = labels
    return r


def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": _expr(expr),
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def unified(metric: str, rng: str, fn: str) -> str:
    """Per provider, Claude Code usage counted once (the dashboards' rule, no dashboard variables)."""
    return str(_D.dedup(metric, ["provider"], rng, fn=fn, filters="", exact=False))


def _q(expr: str, fmt: str = 'printf "%.2f"') -> str:
    """Template: the value of a one-sample query (used in annotations to show thresholds and totals)."""
    return f'{{{{ with query "{expr}" }}}}{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}'


def _qp(metric: str, fmt: str = 'printf "%.2f"') -> str:
    """Template: `metric` for the alert's provider (PromQL accepts single-quoted label values)."""
    sel = f"{metric}{{provider='%s'}}"
    return f'{{{{ with printf "{sel}" $labels.provider | query }}}}{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}'


def _qpw(metric: str, then: str) -> str:
    """Template: `then` with `metric` for the alert's provider and window, or nothing when there is none."""
    sel = f"{metric}{{provider='%s',window='%s'}}"
    return f'{{{{ with printf "{sel}" $labels.provider $labels.window | query }}}}{then}{{{{ end }}}}'


# ------------------------------------------------------------------ the rules

# The evaluation time, recorded first in the calendar group: inside a subquery time() is the inner step, and
# `NOW @ end()` reads this sample back (rules of a group see the samples of the rules before them).
NOW = "tokenbridge:calendar:now_seconds"
_NOW_AT = f"({NOW} @ end())"
# A subquery step at τ stands for the increase over (τ-step, τ], which lies in the period of τ-1s: a step exactly
# at midnight still belongs to the day before. Subquery steps are aligned to multiples of the step since the epoch,
# so 1d steps fall on UTC midnights and complete days tile exactly.
_DAY = "floor(({t}) / 86400)"
# Weeks start on Monday: the Unix epoch was a Thursday, so (days + 3) / 7 counts weeks from a Monday.
_WEEK = "floor((floor(({t}) / 86400) + 3) / 7)"
# A 31-day window cannot hold two different months with the same number.
_MONTH = "month({t})"


def _same(period: str) -> str:
    return f"{period.format(t='vector(time()) - 1')} == {period.format(t=_NOW_AT)}"


def thresholds_group() -> dict[str, Any]:
    rules = []
    for name, (_env, default, _help) in THRESHOLDS.items():
        if name == "balance_low_default":
            continue
        cfg = f"tokenbridge:threshold_config:{name}"
        value = default
        if value is not None and name == "source_silent_seconds":
            value = str(Decimal(value) * 3600)  # configured in hours, recorded in seconds
        rules.append(rec(f"tokenbridge:threshold:{name}", cfg if value is None else f"{cfg} or vector({value})"))
    # One balance threshold per provider that reports a balance: its own, else the default.
    default = THRESHOLDS["balance_low_default"][1]
    rules.append(
        rec(
            "tokenbridge:threshold:balance_low",
            f"""
max by (provider) (tokenbridge:threshold_config:balance_low)
  or on (provider)
max by (provider) ({BALANCE}) * 0
  + scalar(tokenbridge:threshold_config:balance_low_default or vector({default}))
""",
        )
    )
    return {"name": "tokenbridge-thresholds", "interval": "1m", "rules": rules}


def rates_group() -> dict[str, Any]:
    rules = []
    for rng in ("1h", "1d"):
        per = f"provider:tokenbridge_cost_usd_per_hour:rate{rng}"
        rules.append(rec(per, f"3600 * (\n{unified(COST, rng, 'rate')}\n)"))
        rules.append(rec(f"tokenbridge:cost_usd_per_hour:rate{rng}", f"sum({per})"))
    # The normal burn rate: the average hourly rate over the last 7 days of recorded values. Not rate(...[7d]),
    # which divides by 7 days even when the data is a day old, so every new install would look like a spike.
    per = "provider:tokenbridge_cost_usd_per_hour"
    rules.append(rec(f"{per}:avg7d", f"avg_over_time({per}:rate1h[7d])"))
    rules.append(rec("tokenbridge:cost_usd_per_hour:avg7d", "avg_over_time(tokenbridge:cost_usd_per_hour:rate1h[7d])"))
    per = "provider:tokenbridge_tokens_per_minute:rate5m"
    rules.append(rec(per, f"60 * (\n{unified(TOKENS, '5m', 'rate')}\n)"))
    rules.append(rec("tokenbridge:tokens_per_minute:rate5m", f"sum({per})"))
    return {"name": "tokenbridge-spend-rates", "interval": "1m", "rules": rules}


def calendar_group() -> dict[str, Any]:
    """Spend in the current UTC day, ISO week and month: increases over exactly tiling windows (5-minute steps
    today, whole days before), so counter resets are handled by increase() and backfilled history counts."""
    rules = [rec(NOW, "vector(time())")]
    today = "provider:tokenbridge_cost_usd:today"
    inc5m = unified(COST, "5m", "increase")
    rules.append(rec(today, f"sum_over_time((\n{inc5m}\n  and on () ({_same(_DAY)})\n)[1d:5m])"))
    rules.append(rec("tokenbridge:cost_usd:today", f"sum({today})"))
    inc1d = unified(COST, "1d", "increase")
    for period, rng, cond in (("week", "7d", _same(_WEEK)), ("month", "31d", _same(_MONTH))):
        per = f"provider:tokenbridge_cost_usd:{period}"
        days = f"sum_over_time((\n{inc1d}\n  and on () ({cond})\n)[{rng}:1d])"
        # A provider may have spent on earlier days only, or today only: keep either side alone.
        rules.append(rec(per, f"(\n{days}\n) + {today}\nor\n{days}\nor {today}"))
        rules.append(rec(f"tokenbridge:cost_usd:{period}", f"sum({per})"))
    # Seconds left in the UTC month; the projection assumes the last day's average burn rate continues.
    left = "scalar(days_in_month() * 86400 - ((day_of_month() - 1) * 86400 + time() % 86400))"
    rules.append(
        rec(
            "provider:tokenbridge_cost_usd:month_end_projected",
            f"provider:tokenbridge_cost_usd:month\n  + provider:tokenbridge_cost_usd_per_hour:rate1d * {left} / 3600",
        )
    )
    rules.append(
        rec(
            "tokenbridge:cost_usd:month_end_projected",
            f"tokenbridge:cost_usd:month\n  + tokenbridge:cost_usd_per_hour:rate1d * {left} / 3600",
        )
    )
    return {"name": "tokenbridge-spend-calendar", "interval": "5m", "rules": rules}


def alerts_group() -> dict[str, Any]:
    th = "tokenbridge:threshold:"
    rules = [
        alert(
            "ProviderBalanceLow",
            f"{BALANCE} < on (provider) group_left () {th}balance_low",
            "10m",
            "warning",
            '{{ $labels.provider }} prepaid balance is low: {{ $value | printf "%.2f" }} {{ $labels.currency }}',
            'The {{ $labels.provider }} balance is {{ $value | printf "%.2f" }} {{ $labels.currency }}, below the '
            "alert level of "
            + _qp(th + "balance_low")
            + " {{ $labels.currency }} (TOKENBRIDGE_BALANCE_LOW_<PROVIDER>). Top up before requests start failing.",
        ),
        alert(
            "DailyBudgetExceeded",
            f"tokenbridge:cost_usd:today > on () {th}budget_daily_usd",
            "0m",
            "warning",
            'Today\'s AI spend ${{ $value | printf "%.2f" }} is over the daily budget',
            'All providers together spent ${{ $value | printf "%.2f" }} today (UTC), above the daily budget of $'
            + _q(th + "budget_daily_usd")
            + " (TOKENBRIDGE_BUDGET_DAILY_USD). Current burn rate: $"
            + _q("tokenbridge:cost_usd_per_hour:rate1h")
            + "/h.",
        ),
        alert(
            "MonthlyBudgetExceeded",
            f"tokenbridge:cost_usd:month > on () {th}budget_monthly_usd",
            "0m",
            "critical",
            'This month\'s AI spend ${{ $value | printf "%.2f" }} is over the monthly budget',
            'All providers together spent ${{ $value | printf "%.2f" }} this month (UTC), above the monthly budget '
            "of $" + _q(th + "budget_monthly_usd") + " (TOKENBRIDGE_BUDGET_MONTHLY_USD).",
        ),
        alert(
            "MonthlyBudgetProjectedOver",
            f"tokenbridge:cost_usd:month_end_projected > on () {th}budget_monthly_usd",
            "15m",
            "warning",
            'Month-end AI spend projected at ${{ $value | printf "%.2f" }}, over the monthly budget',
            "At the last day's burn rate ($"
            + _q("tokenbridge:cost_usd_per_hour:rate1d")
            + '/h) all providers together reach ${{ $value | printf "%.2f" }} by the end of the month (UTC); $'
            + _q("tokenbridge:cost_usd:month")
            + " spent so far, monthly budget $"
            + _q(th + "budget_monthly_usd")
            + " (TOKENBRIDGE_BUDGET_MONTHLY_USD).",
        ),
        alert(
            "BurnRateSpike",
            f"""
provider:tokenbridge_cost_usd_per_hour:rate1h
  > scalar({th}burn_rate_spike_factor) * provider:tokenbridge_cost_usd_per_hour:avg7d
and
provider:tokenbridge_cost_usd_per_hour:rate1h > scalar({th}burn_rate_spike_min_usd_per_hour)
""",
            "15m",
            "warning",
            '{{ $labels.provider }} is burning ${{ $value | printf "%.2f" }}/h, far above its normal rate',
            '{{ $labels.provider }} spent ${{ $value | printf "%.2f" }}/h over the last hour, more than '
            + _q(th + "burn_rate_spike_factor", 'printf "%g"')
            + " times its 7-day average of $"
            + _qp("provider:tokenbridge_cost_usd_per_hour:avg7d")
            + "/h (TOKENBRIDGE_BURN_SPIKE_FACTOR).",
        ),
        alert(
            "PlanQuotaHigh",
            f"{QUOTA_USED} > scalar({th}quota_used_percent)",
            "0m",
            "warning",
            '{{ $labels.provider }} plan quota {{ $labels.window }} window at {{ $value | printf "%.0f" }}%',
            'The {{ $labels.provider }} plan\'s {{ $labels.window }} usage window is {{ $value | printf "%.0f" }}% '
            "used, above the alert level of "
            + _q(th + "quota_used_percent", 'printf "%.0f"')
            + "% (TOKENBRIDGE_QUOTA_ALERT_PERCENT)."
            + _qpw(QUOTA_RESETS, " It resets at {{ . | first | value | humanizeTimestamp }}."),
        ),
        alert(
            "SourceFailing",
            f"{SOURCE_FAILURES} >= scalar({th}source_failures)",
            "10m",
            "warning",
            "tokenbridge source {{ $labels.source }} is failing",
            'The last {{ $value | printf "%.0f" }} passes of source {{ $labels.source }} failed '
            "({{ $labels.last_error_kind }}); its usage is not being counted. See `tokenbridge sources` for the error.",
        ),
        alert(
            "SourceSilent",
            f"time() - {SOURCE_LAST_SUCCESS} > scalar({th}source_silent_seconds)",
            "0m",
            "warning",
            "tokenbridge source {{ $labels.source }} has not succeeded for {{ $value | humanizeDuration }}",
            "Source {{ $labels.source }} last completed a pass {{ $value | humanizeDuration }} ago, longer than "
            + _q(th + "source_silent_seconds", "humanizeDuration")
            + " (TOKENBRIDGE_SOURCE_SILENT_HOURS).",
        ),
    ]
    return {"name": "tokenbridge-spend-alerts", "rules": rules}


def render() -> str:
    groups = [thresholds_group(), rates_group(), calendar_group(), alerts_group()]
    header = "# GENERATED by prometheus/generate_rules.py: edit the generator, not this file.\n"
    return header + yaml.safe_dump({"groups": groups}, sort_keys=False, width=100_000, allow_unicode=True)


# ------------------------------------------------------------------ thresholds from the environment


def thresholds(env: dict[str, str]) -> str:
    """The thresholds.yml recording the configured values (only the configured ones)."""
    rules = []
    for name, (key, _default, _help) in THRESHOLDS.items():
        raw = env.get(key, "").strip()
        if not raw:
            continue
        v = alerts.number(key, raw)
        if name == "source_silent_seconds":
            v = v * 3600
        rules.append(rec(f"tokenbridge:threshold_config:{name}", f"vector({v})"))
    for key in sorted(env):
        if not key.startswith(BALANCE_PREFIX) or not env[key].strip():
            continue
        alerts.check(key, env[key])  # the provider part, then the number
        provider = key.removeprefix(BALANCE_PREFIX).lower()
        v = alerts.number(key, env[key])
        rules.append(rec("tokenbridge:threshold_config:balance_low", f"vector({v})", {"provider": provider}))
    header = "# GENERATED from config.toml / .env / the environment by generate_rules.py --thresholds (not in git).\n"
    return header + yaml.safe_dump(
        {"groups": [{"name": "tokenbridge-threshold-config", "interval": "1m", "rules": rules}]}, sort_keys=False
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed spend.yml is stale")
    ap.add_argument("--thresholds", action="store_true", help="write rules/thresholds.yml from the settings")
    ap.add_argument("--env-file", type=Path, help="read KEY=VALUE lines from this file (the environment wins)")
    ap.add_argument("--config", type=Path, help="tokenbridge config file (default: $TOKENBRIDGE_CONFIG or the user's)")
    ap.add_argument("--out", type=Path, help="output path (default: prometheus/rules/spend.yml or thresholds.yml)")
    args = ap.parse_args(argv)
    if args.thresholds:
        try:
            text = thresholds(alerts.for_scripts(os.environ, args.env_file, args.config))
        except ConfigError as exc:
            print(f"generate_rules: config error: {exc}", file=sys.stderr)
            return 2
        (args.out or THRESHOLDS_OUT).write_text(text)
        return 0
    out = args.out or OUT
    content = render()
    if args.check:
        if not out.exists() or out.read_text() != content:
            print("stale rules (run python3 prometheus/generate_rules.py): " + str(out), file=sys.stderr)
            return 1
        return 0
    out.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
