"""`tokenbridge status`: today / this week / this month per provider, burn rate, projection, budgets, balances,
quotas and source health from known ledger contents."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.ledger import Gauge, Ledger
from bridge.record import Tokens, UsageRecord
from bridge.status import budgets, build, render, to_json

# Wednesday 2026-03-11 12:00 UTC: the week began on Monday 03-09, the month on 03-01 (31 days).
NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class _Price:
    def cost(self, provider, model, tokens, at=None):
        return None if model == "mystery-1" else Decimal("0.5")


def _rec(key: str, when: datetime, provider: str = "anthropic", model: str = "claude-sonnet-4-5") -> UsageRecord:
    source = "claude_transcripts" if provider == "anthropic" else "openai_api"
    return UsageRecord(source, provider, model, when, key, Tokens(input=10, output=5))


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path) as led:
        led.commit(
            [
                _rec("a", datetime(2026, 3, 11, 11, 50, tzinfo=UTC)),  # today, last hour
                _rec("u", datetime(2026, 3, 11, 9, 0, tzinfo=UTC), model="mystery-1"),  # today, no price
                _rec("b", datetime(2026, 3, 10, 13, 0, tzinfo=UTC)),  # this week, last 24 h
                _rec("c", datetime(2026, 3, 9, 8, 0, tzinfo=UTC), provider="openai", model="gpt-5"),  # Monday
                _rec("d", datetime(2026, 3, 8, 20, 0, tzinfo=UTC), provider="openai", model="gpt-5"),  # last week
                _rec("e", datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),  # last month
                _rec("f", datetime(2026, 3, 12, 0, 5, tzinfo=UTC)),  # tomorrow: not counted (whole local days)
            ],
            _Price(),
        )
        led.set_gauges(
            "openrouter_api",
            [Gauge("tokenbridge.balance", {"provider": "openrouter", "currency": "USD"}, Decimal("7.25"))],
        )
        labels = {"provider": "anthropic", "window": "five_hour"}
        led.set_gauges(
            "claude_statusline",
            [
                Gauge("tokenbridge.quota.used_percent", labels, Decimal("42.5")),
                Gauge("tokenbridge.quota.resets_at", labels, Decimal(int(NOW.timestamp()) + 7200)),
            ],
        )
        led.record_health("openai_api", "http_401", "HTTP 401 from the usage API")
        led.record_health("claude_transcripts")
        yield led


ENV = {"TOKENBRIDGE_BUDGET_DAILY_USD": "2", "TOKENBRIDGE_BUDGET_MONTHLY_USD": "20"}


def test_periods_per_provider_from_the_ledger(ledger):
    data = to_json(build(ledger, ENV, now=NOW.timestamp()))
    assert data["today"] == {
        "anthropic": {"cost": "0.5", "tokens": 30, "requests": 2, "unpriced": 1},
        "total": {"cost": "0.5", "tokens": 30, "requests": 2, "unpriced": 1},
    }
    assert data["week"]["anthropic"]["cost"] == "1" and data["week"]["openai"]["cost"] == "0.5"
    assert data["week"]["total"] == {"cost": "1.5", "tokens": 60, "requests": 4, "unpriced": 1}
    assert data["month"]["anthropic"]["cost"] == "1" and data["month"]["openai"]["cost"] == "1"
    assert data["month"]["total"]["cost"] == "2"


def test_burn_rate_projection_and_budgets(ledger):
    data = to_json(build(ledger, ENV, now=NOW.timestamp()))
    assert data["burn_rate_usd_per_hour"] == "0.5"
    # $2 so far + (a and b in the last 24 h: $1 / 24 h) * 492 hours left in March = 22.5
    assert Decimal(data["projected_month_usd"]).quantize(Decimal("0.000001")) == Decimal("22.5")
    assert data["budgets"]["daily"] == {"budget": "2", "spent": "0.5", "used_percent": "25"}
    monthly = data["budgets"]["monthly"]
    assert monthly["spent"] == "2" and monthly["used_percent"] == "10"
    assert Decimal(monthly["projected"]).quantize(Decimal("0.01")) == Decimal("22.50")


def test_balances_quotas_and_source_health(ledger):
    data = to_json(build(ledger, {}, now=NOW.timestamp()))
    assert data["budgets"] == {}
    (bal,) = data["balances"]
    assert bal["provider"] == "openrouter" and bal["currency"] == "USD" and bal["amount"] == "7.25"
    assert data["quotas"] == {"five_hour": {"used_percent": "42.5", "resets_at": int(NOW.timestamp()) + 7200}}
    assert data["sources"]["openai_api"]["consecutive_failures"] == 1
    assert data["sources"]["openai_api"]["last_error_kind"] == "http_401"
    assert data["sources"]["claude_transcripts"]["consecutive_failures"] == 0


def test_text_view_answers_in_one_screen(ledger):
    text = render(build(ledger, ENV, now=NOW.timestamp()))
    lines = text.splitlines()
    assert lines[1:5] == [
        "                       today   this week  this month",
        "  anthropic          $0.50+?     $1.00+?     $1.00+?",  # +?: a request without a known price
        "  openai                   -       $0.50       $1.00",
        "  total              $0.50+?     $1.50+?     $2.00+?",
    ]
    assert "Burn rate: $0.50/h (last hour)" in text
    assert "Budget daily: $0.50 of $2.00 (25%)" in text
    assert "Budget monthly: $2.00 of $20.00 (10%), projected $22.50" in text
    assert "Balance openrouter: 7.25 USD" in text
    assert "Plan quota five_hour: 42% used" in text
    assert "Warning: 1 request(s) or usage row(s) this month have no known price" in text
    assert "Source openai_api: failing (http_401: HTTP 401 from the usage API)" in text
    assert len(text.splitlines()) <= 24


@pytest.mark.parametrize("value", ["twenty", "-1", "inf"])
def test_a_bad_budget_is_a_config_error_naming_the_variable(value):
    with pytest.raises(ConfigError) as exc:
        budgets({"TOKENBRIDGE_BUDGET_MONTHLY_USD": value})
    assert exc.value.key == "TOKENBRIDGE_BUDGET_MONTHLY_USD"


def test_cli_status_json_and_bad_budget(tmp_path, capsys, monkeypatch):
    with Ledger.open(tmp_path) as led:
        led.commit([_rec("now", datetime.now(UTC))], _Price())
    assert main(["--state-dir", str(tmp_path), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"today", "week", "month", "balances", "quotas", "budgets", "sources"}
    assert data["today"]["total"]["cost"] == "0.5"
    monkeypatch.setenv("TOKENBRIDGE_BUDGET_DAILY_USD", "lots")
    assert main(["--state-dir", str(tmp_path), "status"]) == 2
    assert "TOKENBRIDGE_BUDGET_DAILY_USD" in capsys.readouterr().err


def test_status_agrees_with_report_for_whole_days_across_a_dst_change(tmp_path):
    """Periods are local days with the zone's rules (Berlin moved to summer time on 2026-03-29): the month
    and the week equal `report daily` over the same days, to the token and the cent."""
    from zoneinfo import ZoneInfo

    from bridge import report
    from bridge._rows import from_pusd

    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 31, 12, 0, tzinfo=berlin)
    times = [  # around both local midnights of the DST day and of the week's and month's first days
        datetime(2026, 2, 28, 22, 30, tzinfo=UTC),  # 02-28 23:30 in Berlin (winter time): last month
        datetime(2026, 2, 28, 23, 30, tzinfo=UTC),  # 03-01 00:30 in Berlin: this month
        datetime(2026, 3, 28, 23, 30, tzinfo=UTC),  # 03-29 00:30 in Berlin
        datetime(2026, 3, 29, 22, 30, tzinfo=UTC),  # 03-30 00:30 (summer time): this week
        datetime(2026, 3, 29, 21, 30, tzinfo=UTC),  # 03-29 23:30: last week
        datetime(2026, 3, 31, 9, 0, tzinfo=UTC),  # today
    ]
    with Ledger.open(tmp_path) as led:
        led.commit([_rec(f"k{i}", t) for i, t in enumerate(times)], _Price())
        data = build(led, {}, now=now.timestamp(), tz=berlin)
        for period, first in (("month", "2026-03-01"), ("week", "2026-03-30"), ("today", "2026-03-31")):
            rep = report.build(led, "daily", berlin, datetime.fromisoformat(first).date(), now.date())
            got = data[period]["total"]
            assert (got["tokens"], got["requests"]) == (rep.totals.total, rep.totals.requests), period
            assert got["cost"] == from_pusd(rep.totals.cost_pusd), period
        assert data["month"]["total"]["requests"] == 5
        assert data["week"]["total"]["requests"] == 2
