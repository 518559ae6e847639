"""--plan: the report's Claude usage at API list prices against a plan's pro-rated monthly price."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from bridge import plans
from bridge.cli import main
from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord


def test_plan_prices_are_the_pricing_pages_and_config_overrides_them():
    assert plans.prices() == {"pro": Decimal(20), "max5": Decimal(100), "max20": Decimal(200), "api": None}
    assert plans.prices({"max5": Decimal("90")})["max5"] == Decimal(90)
    assert "anthropic.com/pricing" in plans.PRICE_SOURCE


def test_prorate_by_day_per_calendar_month():
    # March 5..31 is 27 of 31 days, April 1..10 is 10 of 30 days.
    months = plans.prorate(Decimal(100), date(2026, 3, 5), date(2026, 4, 10))
    assert [(m, d, n) for m, d, n, _usd in months] == [("2026-03", 27, 31), ("2026-04", 10, 30)]
    assert [usd for *_, usd in months] == [Decimal(100) * 27 / 31, Decimal(100) * 10 / 30]
    # A whole February is the whole price; a leap-year February has 29 days.
    assert plans.prorate(Decimal(20), date(2026, 2, 1), date(2026, 2, 28))[0][3] == Decimal(20)
    assert plans.prorate(Decimal(20), date(2028, 2, 1), date(2028, 2, 1))[0][1:3] == (1, 29)


def test_compare_says_which_side_is_cheaper():
    usage = plans.Usage(cost_pusd=150 * 10**12, requests=10, first_day=date(2026, 3, 5))  # $150
    cmp = plans.compare("max5", Decimal(100), usage, None, date(2026, 4, 10), today=date(2026, 12, 1))
    assert cmp.since == date(2026, 3, 5)  # no --since: the first day with Claude usage
    assert cmp.plan_cost == Decimal(100) * 27 / 31 + Decimal(100) * 10 / 30  # 87.0967… + 33.3333… = 120.43
    assert cmp.difference == Decimal(150) - cmp.plan_cost
    text = plans.explain(cmp)
    assert text[1] == (
        "Period 2026-03-05 to 2026-04-10, the plan's price pro-rated by day: "
        "2026-03: 27 of 31 days = $87.10; 2026-04: 10 of 30 days = $33.33; together $120.43."
    )
    assert text[3] == "At API prices this usage would cost $29.57 more than the plan: the plan pays off."
    cheap = plans.compare("max20", Decimal(200), usage, date(2026, 3, 1), date(2026, 5, 31), today=date(2026, 6, 1))
    assert cheap.plan_cost == Decimal(600)
    assert plans.explain(cheap)[1].endswith("3 whole month(s) = $600.00; together $600.00.")
    assert plans.explain(cheap)[3] == "At API prices this usage would cost $450.00 less than the plan."
    with pytest.raises(ConfigError, match="--plan"):
        plans.compare("team", None, usage, None, None, today=date(2026, 6, 1))


def test_unknown_prices_are_never_zero():
    none_priced = plans.Usage(cost_pusd=0, requests=3, unpriced=3, first_day=date(2026, 3, 1))
    cmp = plans.compare("pro", Decimal(20), none_priced, None, date(2026, 3, 31), today=date(2026, 4, 1))
    assert cmp.usage.cost is None and cmp.difference is None
    assert cmp.as_json()["apiCostUsd"] is None and cmp.as_json()["planCostUsd"] == "20"
    assert plans.explain(cmp)[-1] == "No comparison: the usage has no known price."
    some = plans.Usage(cost_pusd=30 * 10**12, requests=3, unpriced=1, priced=True, first_day=date(2026, 3, 1))
    cmp = plans.compare("pro", Decimal(20), some, None, date(2026, 3, 31), today=date(2026, 4, 1))
    assert "(+ 1 request(s) or usage row(s) without a known price, not included)" in plans.explain(cmp)[2]
    assert (
        plans.explain(cmp)[3]
        == "At API prices this usage would cost at least $10.00 more than the plan: the plan pays off."
    )


def _record(key: str, day: str, provider: str, model: str, tokens: int) -> UsageRecord:
    source = "claude_transcripts" if provider == "anthropic" else "codex"
    when = datetime.fromisoformat(f"{day}T12:00:00+00:00")
    return UsageRecord(source, provider, model, when, key, Tokens(input=tokens))


@pytest.fixture
def state(tmp_path, pricer, monkeypatch):
    monkeypatch.delenv("TOKENBRIDGE_CONFIG", raising=False)
    with Ledger.open(tmp_path / "state") as led:  # FlatPricer: $1 per million tokens
        led.commit(
            [
                _record("a", "2026-02-10", "anthropic", "claude-sonnet-4-5", 20_000_000),  # $20
                _record("b", "2026-02-20", "anthropic", "claude-opus-4-1", 10_000_000),  # $10
                _record("o", "2026-02-20", "openai", "gpt-5", 50_000_000),  # not Claude: not compared
            ],
            pricer,
        )
    return tmp_path


def test_cli_plan_json_and_text(state, capsys):
    base = ["--state-dir", str(state / "state"), "--config", str(state / "none.toml"), "report"]
    window = ["--since", "2026-02-01", "--until", "2026-02-28", "-z", "UTC"]
    assert main([*base, "monthly", "--json", "--plan", "pro", *window]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["totalCost"] == "80"  # the report itself still shows every provider
    assert data["plan"] == {
        "plan": "pro",
        "name": "Claude Pro",
        "monthlyUsd": "20",
        "priceSource": plans.PRICE_SOURCE,
        "since": "2026-02-01",
        "until": "2026-02-28",
        "months": [{"month": "2026-02", "days": 28, "daysInMonth": 28, "planUsd": "20"}],
        "planCostUsd": "20",
        "apiCostUsd": "30",
        "requests": 2,
        "unpricedRequests": 0,
        "differenceUsd": "10",
    }
    assert main([*base, "daily", "--plan", "api", *window]) == 0
    out = capsys.readouterr().out
    assert "Plan API, pay as you go: you pay the API list price." in out
    assert "Claude usage at API list prices: $30.00." in out


def test_config_plans_override_the_price_and_bad_ones_name_the_key(state, capsys):
    cfg = state / "config.toml"
    cfg.write_text("[plans]\npro = 25\n")
    args = ["--state-dir", str(state / "state"), "--config", str(cfg), "report", "monthly", "--json", "--plan", "pro"]
    window = ["--since", "2026-02-01", "--until", "2026-02-28", "-z", "UTC"]
    assert main([*args, *window]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["monthlyUsd"], plan["planCostUsd"], plan["differenceUsd"]) == ("25", "25", "5")
    cfg.write_text("[plans]\nmax5 = -100\n")
    assert main([*args, *window]) == 2
    assert f"{cfg}: plans.max5: must be a price in USD per month > 0" in capsys.readouterr().err


def test_without_until_the_plan_runs_to_today(state, capsys):
    args = ["--state-dir", str(state / "state"), "--config", str(state / "none.toml"), "report", "monthly"]
    assert main([*args, "--json", "--plan", "max5", "-z", "UTC"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["since"] == "2026-02-10"  # the first day with Claude usage
    assert plan["until"] == datetime.now(UTC).date().isoformat()


def test_usage_rows_without_a_request_count_are_usage_to_compare():
    # Anthropic's usage report carries no request count: its priced rows are still Claude usage.
    buckets = plans.Usage(cost_pusd=30 * 10**12, requests=0, priced=True, first_day=date(2026, 3, 1))
    cmp = plans.compare("pro", Decimal(20), buckets, None, date(2026, 3, 31), today=date(2026, 4, 1))
    assert plans.explain(cmp)[-1] == "At API prices this usage would cost $10.00 more than the plan: the plan pays off."
    unknown = plans.Usage(requests=0, unpriced=1, first_day=date(2026, 3, 1))
    cmp = plans.compare("pro", Decimal(20), unknown, None, date(2026, 3, 31), today=date(2026, 4, 1))
    assert cmp.usage.cost is None and plans.explain(cmp)[-1] == "No comparison: the usage has no known price."
