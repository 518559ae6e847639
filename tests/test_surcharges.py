"""Fast mode and server tools priced on top of the tokens (bridge.surcharges), through the price table's path.

Costs are checked by hand against Anthropic's per-MTok prices: Opus 4.6/4.7/4.8/5 $5 in, $25 out, $0.50 cache
read, $6.25 5-minute cache write; Sonnet 4.6 $3 / $15; fast mode 6x (Opus 4.6, 4.7) or 2x (Opus 4.8, 5); web
search $10 per 1,000.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.pricing import Pricer
from bridge.record import Tokens
from bridge.surcharges import Extras, Surcharges, load

# 1,000 input + 2,000 output + 10,000 cache reads on Opus = $0.005 + $0.05 + $0.005 = $0.06 standard.
OPUS_TOKENS = Tokens(input=1000, output=2000, cache_read=10_000)
FAST = Extras(speed="fast")


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-6", Decimal("0.36")),
        ("claude-opus-4-7", Decimal("0.36")),
        ("claude-opus-4-8", Decimal("0.12")),
        ("claude-opus-5", Decimal("0.12")),
        ("claude-opus-4-6-20260205", Decimal("0.36")),  # dated and [1m] names: the same model
        ("claude-opus-4-6[1m]", Decimal("0.36")),
    ],
)
def test_fast_mode_costs_the_models_multiple_of_the_standard_price(pricer, model, expected):
    assert pricer.cost("anthropic", model, OPUS_TOKENS) == Decimal("0.06")
    assert pricer.cost("anthropic", model, OPUS_TOKENS, extras=FAST) == expected


def test_standard_speed_costs_the_standard_price(pricer):
    assert pricer.cost("anthropic", "claude-opus-4-6", OPUS_TOKENS, extras=Extras(speed="standard")) == Decimal("0.06")


def test_fast_mode_without_a_known_multiplier_is_unknown_never_standard(pricer, caplog):
    caplog.set_level(logging.WARNING, "tokenbridge.pricing")
    assert pricer.cost("anthropic", "claude-sonnet-4-6", Tokens(input=100), extras=FAST) is None
    assert "no fast-mode multiplier for model 'claude-sonnet-4-6'" in caplog.text


def test_web_searches_cost_ten_dollars_per_thousand(pricer):
    # 100 input ($0.0003) + 500 output ($0.0075) on Sonnet 4.6 + 3 searches ($0.03) = $0.0378.
    t = Tokens(input=100, output=500)
    assert pricer.cost("anthropic", "claude-sonnet-4-6", t, extras=Extras(web_search=3)) == Decimal("0.0378")


def test_fast_multiplier_applies_to_tokens_not_to_web_searches(pricer):
    # Opus 4.6 fast: $0.06 * 6 + 2 searches * $0.01 = $0.38.
    cost = pricer.cost("anthropic", "claude-opus-4-6", OPUS_TOKENS, extras=Extras(speed="fast", web_search=2))
    assert cost == Decimal("0.38")


def test_web_fetch_without_a_price_is_unknown_never_zero(pricer, caplog):
    caplog.set_level(logging.WARNING, "tokenbridge.pricing")
    assert pricer.cost("anthropic", "claude-sonnet-4-6", Tokens(input=100), extras=Extras(web_fetch=1)) is None
    assert "no price for web fetch requests" in caplog.text


def test_unknown_model_stays_unknown_with_extras(pricer):
    assert pricer.cost("anthropic", "no-such-model-x", Tokens(input=100), extras=Extras(web_search=1)) is None


def test_prices_file_overrides_multipliers_and_server_tool_prices(tmp_path: Path):
    f = tmp_path / "prices.toml"
    f.write_text(
        '[[fast_mode]]\nmatch = "claude-sonnet-4-6*"\nmultiplier = "3"\n\n'
        '[[fast_mode]]\nmatch = "claude-opus-4-6"\nmultiplier = 5\n\n'
        '[server_tools]\nweb_search_per_1k = "12.5"\nweb_fetch_per_1k = "0"\n'
    )
    p = Pricer(f)
    # Sonnet 4.6: 100 input = $0.0003, x3 fast.
    assert p.cost("anthropic", "claude-sonnet-4-6", Tokens(input=100), extras=FAST) == Decimal("0.0009")
    assert p.cost("anthropic", "claude-opus-4-6", OPUS_TOKENS, extras=FAST) == Decimal("0.30")
    assert p.cost("anthropic", "claude-opus-5", OPUS_TOKENS, extras=FAST) == Decimal("0.12")  # default kept
    searches = Extras(web_search=4, web_fetch=7)
    assert p.cost("anthropic", "claude-sonnet-4-6", Tokens(input=100), extras=searches) == Decimal("0.0503")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[fast_mode]]\nmatch = "x"\n', "fast_mode[0]"),
        ('[[fast_mode]]\nmatch = "x"\nmultiplier = "-2"\n', "fast_mode[0].multiplier"),
        ('[[fast_mode]]\nmatch = "x"\nmultiplier = "2"\nfactor = 3\n', "fast_mode[0].factor"),
        ('[server_tools]\nweb_search_per_1k = "ten"\n', "server_tools.web_search_per_1k"),
        ('[server_tools]\ncode_execution = "1"\n', "server_tools.code_execution"),
        ("fast_mode = 3\n", "fast_mode"),
    ],
)
def test_bad_surcharge_entries_raise_config_error_naming_the_key(tmp_path: Path, text: str, where: str):
    f = tmp_path / "prices.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        Pricer(f)
    assert f"{f}: {where}" in str(exc.value)
    with pytest.raises(ConfigError):
        load(f)


def test_no_extras_is_the_plain_cost():
    assert Surcharges().apply(Decimal("1.5"), "claude-opus-4-6", None) == Decimal("1.5")
    assert Surcharges().apply(None, "claude-opus-4-6", FAST) is None
