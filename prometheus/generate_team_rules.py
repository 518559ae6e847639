#!/usr/bin/env python3
"""Generate the team server's per-user spend and budget rules, for vmalert reading VictoriaMetrics (docs/team.md).

    python3 prometheus/generate_team_rules.py              # rewrite prometheus/team/rules.yml
    python3 prometheus/generate_team_rules.py --check      # exit 1 if the committed rules.yml is stale
    python3 prometheus/generate_team_rules.py --thresholds [--env-file .env]
                                                           # write prometheus/team/thresholds.yml (budgets, not in git)

VictoriaMetrics single-node evaluates no rules: vmalert does (`-datasource.url` and `-remoteWrite.url` = the
VictoriaMetrics URL, `-notifier.url` = Alertmanager, `-rule=prometheus/team/*.yml`). The expressions are MetricsQL
(`increase_pure`, `@ (expression)`), built from bridge.central.team_query, the count-once-per-user rule of the team
dashboard and `tokenbridge report --central`, so Prometheus' promtool cannot parse them; tests/test_team_rules.py runs
every expression against a real VictoriaMetrics instead (vmalert sends exactly these to its query API).

Periods are UTC calendar days and months, exact: a user's spend this month is each series' all-time total now minus
the same at the month's first midnight. Each rule is self-contained (no rule reads another's output), so the
order vmalert evaluates them in and its write-back delay never matter.

Budgets, per user: `TOKENBRIDGE_TEAM_BUDGET_MONTHLY_USD` / `TOKENBRIDGE_TEAM_BUDGET_DAILY_USD` (every user; unset: no
alert) and `TOKENBRIDGE_TEAM_BUDGETS_MONTHLY_USD="alice=300,bob=50"` (a user's own monthly budget, which wins).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bridge import central  # noqa: E402 - the repository root is put on the path just above

OUT = HERE / "team" / "rules.yml"
THRESHOLDS_OUT = HERE / "team" / "thresholds.yml"
DAY_START = "end() - end() % 86400"
MONTH_START = "end() - (day_of_month() - 1) * 86400 - end() % 86400"
CONFIG = "tokenbridge:team_threshold_config:"
_USER = re.compile(r"[A-Za-z0-9_.@-]+")
_DURATION = re.compile(r"[1-9][0-9]*(ms|s|m|h)")


class _Block(str):
    """A multi-line string dumped as a YAML block scalar (readable MetricsQL)."""


yaml.SafeDumper.add_representer(_Block, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", str(s), style="|"))


def spent(since: str) -> str:
    """Per user, USD spent from ``since`` (a MetricsQL time expression) until the evaluation time."""
    return central.team_query(central.COST, ["user"], "1d", since=since)


def budget(period: str, since: str) -> str:
    """Per user with spend in the period: the user's own budget, else the default for every user."""
    own = f'max by (user) ({CONFIG}budget_{period}_usd{{user!=""}})'
    default = f'({spent(since)}) * 0 + on () group_left () max({CONFIG}budget_{period}_usd{{user=""}})'
    return f"{own}\n  or on (user)\n{default}"


def rules() -> dict[str, Any]:
    rec = []
    for period, since in (("today", DAY_START), ("month", MONTH_START)):
        rec.append({"record": f"user:tokenbridge_cost_usd:{period}", "expr": _Block(spent(since) + "\n")})
    rec.append(
        {
            "record": "tokenbridge:team_threshold:budget_monthly_usd",
            "expr": _Block(budget("monthly", MONTH_START) + "\n"),
        }
    )
    rec.append(
        {"record": "tokenbridge:team_threshold:budget_daily_usd", "expr": _Block(budget("daily", DAY_START) + "\n")}
    )
    rec.append({
        "record": "user:tokenbridge_budget_used:ratio",
        "expr": _Block(f"(\n{spent(MONTH_START)}\n) / on (user) (\n{budget('monthly', MONTH_START)}\n)\n"),
    })  # fmt: skip
    alerts = []
    for name, period, since, sev, when in (
        ("UserDailyBudgetExceeded", "daily", DAY_START, "warning", "today (UTC)"),
        ("UserMonthlyBudgetExceeded", "monthly", MONTH_START, "critical", "this month (UTC)"),
    ):
        alerts.append({
            "alert": name,
            "expr": _Block(f"(\n{spent(since)}\n) > on (user) (\n{budget(period, since)}\n)\n"),
            "for": "0m",
            "labels": {"severity": sev},
            "annotations": {
                "summary": f"{{{{ $labels.user }}}} spent ${{{{ $value | printf \"%.2f\" }}}} {when}, over budget",
                "description": f"{{{{ $labels.user }}}}'s AI usage {when} (client view, each request counted once) "
                f"is above the user's {period} budget (TOKENBRIDGE_TEAM_BUDGET_{period.upper()}_USD or "
                "TOKENBRIDGE_TEAM_BUDGETS_MONTHLY_USD).",
            },
        })  # fmt: skip
    return {
        "groups": [
            {"name": "tokenbridge-team-spend", "interval": "5m", "rules": rec},
            {"name": "tokenbridge-team-budget-alerts", "interval": "5m", "rules": alerts},
        ]
    }


def _every(doc: dict[str, Any], interval: str | None) -> dict[str, Any]:
    """Every group evaluated each ``interval`` instead of its own (scripts/team-server.sh's TEAM_VMALERT_INTERVAL)."""
    if interval:
        if not _DURATION.fullmatch(interval):
            raise ThresholdError(f"TEAM_VMALERT_INTERVAL: expected a duration like 30s or 5m, got {interval!r}")
        for g in doc["groups"]:
            g["interval"] = interval
    return doc


def render(interval: str | None = None) -> str:
    head = (
        "# GENERATED by prometheus/generate_team_rules.py (vmalert + VictoriaMetrics, MetricsQL): edit the generator.\n"
    )
    return head + yaml.safe_dump(_every(rules(), interval), sort_keys=False, width=100_000)


class ThresholdError(ValueError):
    pass


def _usd(key: str, raw: str) -> Decimal:
    try:
        v = Decimal(raw.strip())
    except InvalidOperation:
        raise ThresholdError(f"{key}: not a number: {raw!r}") from None
    if not v.is_finite() or v < 0:
        raise ThresholdError(f"{key}: must be a number >= 0, got {raw!r}")
    return v


def thresholds(env: dict[str, str], interval: str | None = None) -> str:
    """thresholds.yml: the configured budgets as recorded constants (only the configured ones)."""
    out = []
    for period in ("monthly", "daily"):
        key = f"TOKENBRIDGE_TEAM_BUDGET_{period.upper()}_USD"
        if env.get(key, "").strip():
            out.append({"record": f"{CONFIG}budget_{period}_usd", "expr": f"vector({_usd(key, env[key])})"})
    key = "TOKENBRIDGE_TEAM_BUDGETS_MONTHLY_USD"
    for item in filter(None, (x.strip() for x in env.get(key, "").split(","))):
        user, sep, amount = item.partition("=")
        if not sep or not _USER.fullmatch(user.strip()):
            raise ThresholdError(f"{key}: expected user=amount (user: letters, digits, . _ @ -), got {item!r}")
        out.append({"record": f"{CONFIG}budget_monthly_usd", "expr": f"vector({_usd(key, amount)})",
                    "labels": {"user": user.strip()}})  # fmt: skip
    head = "# GENERATED from the environment by prometheus/generate_team_rules.py --thresholds (not in git).\n"
    group = {"name": "tokenbridge-team-threshold-config", "interval": "1m", "rules": out}
    return head + yaml.safe_dump(_every({"groups": [group]}, interval), sort_keys=False)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed rules.yml is stale")
    ap.add_argument("--thresholds", action="store_true", help="write team/thresholds.yml from the environment")
    ap.add_argument("--env-file", type=Path, help="KEY=VALUE lines (the environment wins)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--interval", help="evaluate every group at this interval (e.g. 30s) instead of its own")
    args = ap.parse_args(argv)
    if args.interval is not None and not _DURATION.fullmatch(args.interval):
        print(f"generate_team_rules: config error: TEAM_VMALERT_INTERVAL: expected a duration like 30s or 5m, "
              f"got {args.interval!r}", file=sys.stderr)  # fmt: skip
        return 2
    if args.thresholds:
        env: dict[str, str] = {}
        if args.env_file and args.env_file.exists():
            for line in args.env_file.read_text().splitlines():
                k, sep, v = line.strip().removeprefix("export ").partition("=")
                if sep and not k.startswith("#"):
                    env[k.strip()] = v.strip().strip("'\"")
        env.update({k: v for k, v in os.environ.items() if k.startswith("TOKENBRIDGE_TEAM_")})
        try:
            text = thresholds(env, args.interval)
        except ThresholdError as exc:
            print(f"generate_team_rules: config error: {exc}", file=sys.stderr)
            return 2
        (args.out or THRESHOLDS_OUT).write_text(text)
        return 0
    out, content = args.out or OUT, render(args.interval)
    if args.check:
        if not out.exists() or out.read_text() != content:
            print(f"stale rules (run python3 prometheus/generate_team_rules.py): {out}", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
