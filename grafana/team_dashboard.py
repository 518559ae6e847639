"""The "Team usage" dashboard of the team server (grafana/dashboards-team/, docs/team.md): cost and tokens by user, by
machine and by model, top spenders, budget per user, and what the providers billed the organisation.

It reads VictoriaMetrics (MetricsQL: `increase_pure`), not the personal Prometheus. Every token and cost query is
bridge.central.team_query, the expression `tokenbridge report --central --by user` runs, so the dashboard and the
report agree to the cent. Built with grafana/generate_dashboards.py's panel helpers (passed in as `g`).
"""

from __future__ import annotations

from typing import Any

from bridge import central

FILTERS = 'user=~"$user",machine=~"$machine",provider=~"$provider",model=~"$model"'
BILLED_COST = "openai_cost_api|anthropic_cost_api|openrouter_credits_api"
R = "$__range"

TEAM_TEXT = (
    "**Team usage, each request counted once per user.** Every developer's bridge and Claude Code send to the team "
    "collector, which stamps the authenticated `user` (the bridge adds `machine`). Within a user, per model, the "
    "bridge's transcript series are preferred and Claude Code's native telemetry counts only for models that user's "
    "bridge has not seen; other tools are added. Providers' billing APIs are organisation-wide (they carry the user "
    "whose bridge polled them), so they are **not** in the per-user numbers: *Billed cost* shows them alone. Native "
    "telemetry has no `machine`: picking a machine shows that machine's bridge only. Same numbers as "
    "`tokenbridge report daily --central URL --by user`."
)


def q(metric: str, by: list[str], rng: str) -> str:
    return central.team_query(metric, by, rng, filters=FILTERS)


def team(g: Any) -> dict:
    lay = g.Layout()
    p: list[dict] = [g.text(lay, "How these numbers are counted", TEAM_TEXT, h=4)]
    p.append(g.row(lay, "Team totals in the selected time range"))
    p.append(g.stat(lay, "Team cost", q(central.COST, [], R), "currencyUSD", w=6, decimals=2))
    p.append(g.stat(lay, "Team tokens", q(central.TOKENS, [], R), "short", w=6))
    p.append(
        g.stat(
            lay,
            "Active users",
            f"count({q(central.TOKENS, ['user'], R)} > 0) or vector(0)",
            "short",
            w=6,
            desc="Users with any tokens in the range.",
        )
    )
    p.append(
        g.stat(
            lay,
            "Unpriced requests",
            f"{q(central.UNPRICED, [], R)} or vector(0)",
            "short",
            w=6,
            desc="Requests whose model has no known price: their cost is missing from the cost panels.",
        )
    )
    p.append(g.row(lay, "Per user, machine and model"))
    p.append(g.bars(lay, "Cost by user", q(central.COST, ["user"], R), "{{user}}", "currencyUSD"))
    p.append(g.bars(lay, "Tokens by user", q(central.TOKENS, ["user"], R), "{{user}}", "short"))
    p.append(
        g.bars(lay, "Cost by machine", q(central.COST, ["user", "machine"], R), "{{user}} {{machine}}", "currencyUSD")
    )
    p.append(
        g.table(
            lay,
            "Top spenders",
            [
                g.table_target(f"sort_desc(topk(20, {q(central.COST, ['user'], R)}))", "A"),
                g.table_target(q(central.TOKENS, ["user"], R), "B"),
            ],
            units={"Value #A": "currencyUSD", "Value #B": "short"},
            desc="The 20 users who spent most in the range (cost, tokens).",
        )
    )
    p.append(
        g.bars(
            lay,
            "Cost by model",
            q(central.COST, ["provider", "model"], R),
            "{{provider}} {{model}}",
            "currencyUSD",
            w=12,
        )
    )
    p.append(g.row(lay, "Over time"))
    # Not the exact window queries: VictoriaMetrics evaluates `offset` inside range queries differently from instant
    # ones (checked against v1.151.0: wrong per-step values), and a plain increase() per step counts a machine's
    # whole total again at its first point after a gap. vmalert's exact per-user spend is recorded every 5 minutes.
    spend = g.timeseries(
        lay,
        "Spend today per user (UTC day)",
        'max by (user) (max_over_time(user:tokenbridge_cost_usd:today{user=~"$user"}[$__interval]))',
        "{{user}}",
        "currencyUSD",
        w=24,
        draw="line",
        stack=False,
        desc="Each user's spend since the start of the UTC day, as vmalert records it every 5 minutes "
        "(prometheus/team/rules.yml); it returns to zero at midnight UTC. Empty without vmalert.",
    )
    p.append(spend)
    p.append(g.row(lay, "Budgets and billing"))
    budget = g.bars(
        lay,
        "Spent this month by user vs budget",
        'user:tokenbridge_cost_usd:month{user=~"$user"}',
        "{{user}}",
        "currencyUSD",
        w=12,
        desc="This UTC month's spend per user and the user's monthly budget (recording rules of "
        "prometheus/team/rules.yml, evaluated by vmalert; TOKENBRIDGE_TEAM_BUDGET_MONTHLY_USD, "
        "TOKENBRIDGE_TEAM_BUDGETS_MONTHLY_USD).",
    )
    budget["targets"].append(
        g.target(
            'tokenbridge:team_threshold:budget_monthly_usd{user=~"$user"}',
            ref="B",
            legend="{{user}} budget",
            instant=True,
        )
    )
    p.append(budget)
    billed = central.window_increase(central.COST, f'provider=~"$provider",source=~"{BILLED_COST}"', R)
    p.append(
        g.bars(
            lay,
            "Billed cost (organisation)",
            f"sum by (provider) {billed}",
            "{{provider}}",
            "currencyUSD",
            w=12,
            desc="What the providers' cost APIs billed the organisation in the range: not per user, not added above.",
        )
    )
    variables = [g.variable(n, n.capitalize()) for n in ("user", "machine", "provider", "model")]
    return g.dashboard(
        "tokenbridge-team",
        "Team usage",
        "Team server: cost and tokens by user, machine and model, top spenders, budgets per user, billed cost.",
        p,
        ["tokenbridge", "team"],
        variables,
    )
