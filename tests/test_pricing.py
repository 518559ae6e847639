"""Behaviour of bridge.pricing: exact costs, lookups, unknown models, override files."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, StartDateConstraint, TieredPrices, TimeOfDateConstraint

import bridge.pricing
from bridge.errors import ConfigError
from bridge.pricing import Pricer, default_overrides_path
from bridge.record import Tokens

FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
M = Decimal(1_000_000)
SONNET = "claude-sonnet-4-5-20250929"
# Bridge provider name → genai-prices provider id.
PROVIDERS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openrouter": "openrouter",
    "moonshot": "moonshotai",
    "deepseek": "deepseek",
    "google": "google",
}
PASSED_THROUGH = {"perplexity": "perplexity", "xai": "x-ai"}  # not mapped by the bridge, known to genai-prices


def mtok(**parts: tuple[int, str]) -> Decimal:
    """Sum of count * USD-per-MTok rate, by hand."""
    return sum((count * Decimal(rate) for count, rate in parts.values()), Decimal(0)) / M


def genai_cost(provider_id: str, model: str, t: Tokens, at: datetime) -> Decimal:
    usage = Usage(
        input_tokens=t.input + t.cache_read + t.cache_creation,
        output_tokens=t.output,
        cache_read_tokens=t.cache_read,
        cache_write_tokens=t.cache_creation,
        cache_write_5m_tokens=t.cache_creation - t.cache_creation_1h,
        cache_write_1h_tokens=t.cache_creation_1h,
    )
    return calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=at).total_price


@pytest.fixture
def pricer() -> Pricer:
    return Pricer()


# --- known models, exact --------------------------------------------------------------------------


def test_example_a_tokens_on_sonnet_4_5_cost_the_per_mtok_prices(pricer: Pricer) -> None:
    # local-formats.md §1.3 Example A, final line: 4 input, 1200 5m writes, 48000 reads, 187 output.
    t = Tokens(input=4, output=187, cache_read=48000, cache_creation=1200)
    expected = mtok(i=(4, "3"), o=(187, "15"), r=(48000, "0.3"), w=(1200, "3.75"))
    assert expected == Decimal("0.021717")
    assert pricer.cost("anthropic", SONNET, t) == expected


def test_one_hour_cache_writes_use_the_1h_rate(pricer: Pricer) -> None:
    t = Tokens(input=10, output=20, cache_creation=1000, cache_creation_1h=400)
    expected = mtok(i=(10, "3"), o=(20, "15"), w5=(600, "3.75"), w1h=(400, "6"))
    assert pricer.cost("anthropic", SONNET, t) == expected
    assert expected != pricer.cost("anthropic", SONNET, Tokens(input=10, output=20, cache_creation=1000))


def test_more_1h_writes_than_writes_prices_all_writes_as_1h(pricer: Pricer) -> None:
    t = Tokens(cache_creation=100, cache_creation_1h=500)
    assert pricer.cost("anthropic", SONNET, t) == mtok(w1h=(100, "6"))


def test_input_above_200k_including_cache_reprices_every_token_at_the_tier(pricer: Pricer) -> None:
    at_threshold = Tokens(input=1000, output=500, cache_read=190_000, cache_creation=9000)
    assert pricer.cost("anthropic", SONNET, at_threshold) == mtok(
        i=(1000, "3"), o=(500, "15"), r=(190_000, "0.3"), w=(9000, "3.75")
    )
    above = Tokens(input=1001, output=500, cache_read=190_000, cache_creation=9000, cache_creation_1h=2000)
    assert pricer.cost("anthropic", SONNET, above) == mtok(
        i=(1001, "6"), o=(500, "22.5"), r=(190_000, "0.6"), w5=(7000, "7.5"), w1h=(2000, "12")
    )


def test_start_dated_prices_follow_the_request_time(pricer: Pricer) -> None:
    # claude-opus-4-6: tiered above 200k until 2026-03-12, flat from 2026-03-13 (genai-prices data).
    t = Tokens(input=250_000, output=1000)
    before = datetime(2026, 3, 12, 23, 59, tzinfo=UTC)
    after = datetime(2026, 3, 13, 0, 0, tzinfo=UTC)
    assert pricer.cost("anthropic", "claude-opus-4-6", t, before) == mtok(i=(250_000, "10"), o=(1000, "37.5"))
    assert pricer.cost("anthropic", "claude-opus-4-6", t, after) == mtok(i=(250_000, "5"), o=(1000, "25"))
    naive_utc = datetime(2026, 3, 12, 23, 59)
    assert pricer.cost("anthropic", "claude-opus-4-6", t, naive_utc) == mtok(i=(250_000, "10"), o=(1000, "37.5"))


def test_off_peak_prices_follow_the_time_of_day(pricer: Pricer) -> None:
    t = Tokens(input=1000, output=1000, cache_read=1000)
    day = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    night = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
    assert pricer.cost("deepseek", "deepseek-chat", t, day) == genai_cost("deepseek", "deepseek-chat", t, day)
    assert pricer.cost("deepseek", "deepseek-chat", t, night) == genai_cost("deepseek", "deepseek-chat", t, night)
    assert pricer.cost("deepseek", "deepseek-chat", t, day) != pricer.cost("deepseek", "deepseek-chat", t, night)


# --- cross-check against genai-prices -------------------------------------------------------------


def test_sonnet_4_5_matches_calc_price_for_random_tokens_around_the_tier(pricer: Pricer) -> None:
    rng = random.Random(20250929)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(400):
        cache_creation = rng.choice([0, rng.randrange(60_000)])
        t = Tokens(
            input=rng.choice([0, 1, rng.randrange(150_000)]),
            output=rng.randrange(40_000),
            cache_read=rng.choice([0, rng.randrange(180_000)]),
            cache_creation=cache_creation,
            cache_creation_1h=rng.choice([0, cache_creation, rng.randrange(cache_creation + 1)]),
        )
        assert pricer.cost("anthropic", SONNET, t, at) == genai_cost("anthropic", SONNET, t, at), t


def _tier_starts(prices: list[ModelPrice]) -> set[int]:
    return {tier.start for mp in prices for v in vars(mp).values() if isinstance(v, TieredPrices) for tier in v.tiers}


def _times_for(model: ModelInfo) -> list[datetime]:
    """A default time plus both sides of every price condition's boundary."""
    times = [datetime(2025, 11, 1, 12, tzinfo=UTC)]
    for c in model.prices if isinstance(model.prices, list) else []:
        k = c.constraint
        if isinstance(k, StartDateConstraint):
            start = datetime.combine(k.start_date, time(), UTC)
            times += [start - timedelta(microseconds=1), start]
        elif isinstance(k, TimeOfDateConstraint):
            for edge in (k.start_time, k.end_time):
                at = datetime.combine(datetime(2026, 2, 2).date(), edge.replace(tzinfo=None), UTC)
                times += [at - timedelta(seconds=1), at]
    return times


def _combos(starts: set[int]) -> list[Tokens]:
    combos = [
        Tokens(),
        Tokens(input=10, output=5),
        Tokens(input=4, output=187, cache_read=48000, cache_creation=1200),
        Tokens(input=3, output=900, cache_read=150_000, cache_creation=30_000, cache_creation_1h=12_000),
        Tokens(input=7, output=3, cache_creation=500, cache_creation_1h=500),
    ]
    for s in sorted(starts):
        for extra in (0, 1):  # total input exactly at, then just above, the threshold
            combos.append(
                Tokens(input=s - 1500 + extra, output=77, cache_read=1000, cache_creation=500, cache_creation_1h=200)
            )
    return combos


@pytest.mark.parametrize("provider", sorted(PROVIDERS | PASSED_THROUGH))
def test_every_bundled_model_matches_calc_price(pricer: Pricer, provider: str) -> None:
    provider_id = (PROVIDERS | PASSED_THROUGH)[provider]
    data = next(p for p in get_snapshot().providers if p.id == provider_id)
    compared = 0
    for model in data.models:
        try:
            found = calc_price(Usage(), model.id, provider_id=provider_id).model
        except LookupError:
            continue
        prices = [model.prices] if isinstance(model.prices, ModelPrice) else [c.prices for c in model.prices]
        priced = any(mp.input_mtok is not None or mp.output_mtok is not None for mp in prices)
        for at in _times_for(found):
            for t in _combos(_tier_starts(prices)):
                ours = pricer.cost(provider, model.id, t, at)
                if found is not model or not priced:
                    continue
                assert ours == genai_cost(provider_id, model.id, t, at), (model.id, t, at)
                compared += 1
        if not priced and found is model:
            assert pricer.cost(provider, model.id, Tokens(input=1)) is None
    assert compared > 20


def test_pricing_a_known_model_calls_genai_prices_only_to_resolve_it(
    pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return calc_price(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bridge.pricing, "calc_price", counting)
    for i in range(2000):
        pricer.cost("anthropic", SONNET, Tokens(input=i, output=i, cache_read=i * 150))
    assert 1 <= len(calls) <= 3


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "same_as"),
    [
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-5-20250929[1m]", "claude-sonnet-4-5"),
        ("anthropic", "anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4-0"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("openai", "gpt-5.1-codex-20251113", "gpt-5.1-codex"),
        ("openai", "GPT-5", "gpt-5"),
        ("moonshot", "moonshot-v1-8k", "moonshot-v1-8k"),
        ("moonshot", "kimi-k2-0905-preview", "kimi-k2-0905-preview"),
        ("deepseek", "deepseek-chat", "deepseek-chat"),
        ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4.5"),
    ],
)
def test_written_model_names_resolve_to_their_price(pricer: Pricer, provider: str, model: str, same_as: str) -> None:
    t = Tokens(input=1234, output=567, cache_read=8900)
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    expected = genai_cost(PROVIDERS[provider], same_as, t, at)
    assert expected > 0
    assert pricer.cost(provider, model, t, at) == expected
    assert pricer.unknown_models == frozenset()


def test_provider_names_outside_the_map_are_passed_to_genai_prices(pricer: Pricer) -> None:
    t = Tokens(input=1000, output=1000)
    assert pricer.cost("xai", "grok-4", t) == pricer.cost("x-ai", "grok-4", t)
    assert pricer.cost("xai", "grok-4", t) is not None


def test_per_request_fees_are_charged_once_per_request(pricer: Pricer) -> None:
    # perplexity sonar: $1/MTok in and out plus $12 per 1000 requests.
    assert pricer.cost("perplexity", "sonar", Tokens(input=1000, output=1000)) == Decimal("0.014")


# --- unknown and synthetic ------------------------------------------------------------------------


def test_unknown_model_costs_none_warns_once_and_is_listed(pricer: Pricer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tokenbridge.pricing")
    t = Tokens(input=100, output=100)
    assert pricer.cost("anthropic", "claude-nonexistent-9", t) is None
    assert pricer.cost("anthropic", "claude-nonexistent-9", t) is None
    assert pricer.cost("openai", "claude-nonexistent-9", t) is None
    assert pricer.unknown_models == {("anthropic", "claude-nonexistent-9"), ("openai", "claude-nonexistent-9")}
    warnings = [r for r in caplog.records if r.name == "tokenbridge.pricing"]
    assert len(warnings) == 2
    assert "claude-nonexistent-9" in warnings[0].getMessage()
    assert str(default_overrides_path()) in warnings[0].getMessage()


def test_unknown_model_warning_names_the_configured_override_file(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tokenbridge.pricing")
    path = FIXTURES / "overrides.toml"
    assert Pricer(path).cost("openai", "gpt-99-ultra", Tokens(input=1)) is None
    assert str(path) in caplog.records[0].getMessage()


def test_synthetic_model_is_never_priced_nor_unknown(pricer: Pricer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tokenbridge.pricing")
    assert pricer.cost("anthropic", "<synthetic>", Tokens()) is None
    assert pricer.cost("anthropic", "<synthetic>", Tokens(input=5, output=5)) is None
    assert pricer.unknown_models == frozenset()
    assert caplog.records == []


# --- override file --------------------------------------------------------------------------------


def test_override_entry_wins_over_genai_prices_for_its_provider() -> None:
    pricer = Pricer(FIXTURES / "overrides.toml")
    t = Tokens(input=1, output=2, cache_read=30, cache_creation=400, cache_creation_1h=100)
    assert pricer.cost("anthropic", SONNET, t) == mtok(
        i=(1, "2"), o=(2, "10"), r=(30, "0.2"), w5=(300, "2.5"), w1h=(100, "4")
    )
    # No tier in an override: the same rates above 200k.
    big = Tokens(input=300_000)
    assert pricer.cost("anthropic", SONNET, big) == mtok(i=(300_000, "2"))
    # The entry names provider "anthropic": other providers keep genai-prices.
    assert pricer.cost("google", SONNET, t) == Pricer().cost("google", SONNET, t)


def test_override_adds_models_with_cache_rates_defaulting_to_input() -> None:
    pricer = Pricer(FIXTURES / "overrides.toml")
    t = Tokens(input=10, output=20, cache_read=30, cache_creation=40, cache_creation_1h=15)
    expected = mtok(i=(10 + 30 + 40, "1.5"), o=(20, "7"))
    assert pricer.cost("openrouter", "my-finetune-v2", t) == expected  # first matching entry wins
    assert pricer.cost("anthropic", "My-Finetune-X-20250101", t) == expected
    assert pricer.unknown_models == frozenset()


def test_override_1h_writes_default_to_the_cache_write_rate_and_providers_match_by_genai_id() -> None:
    pricer = Pricer(FIXTURES / "overrides.toml")
    t = Tokens(input=10, output=20, cache_read=30, cache_creation=40, cache_creation_1h=15)
    assert pricer.cost("moonshot", "kimi-custom", t) == mtok(i=(40, "1"), o=(20, "4"), w=(40, "1.25"))
    assert pricer.cost("deepseek", "kimi-custom", t) is None


def test_missing_override_file_means_no_overrides(tmp_path: Path) -> None:
    t = Tokens(input=100, output=100)
    assert Pricer(tmp_path / "absent.toml").cost("anthropic", SONNET, t) == Pricer().cost("anthropic", SONNET, t)


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("bad_number.toml", "bad_number.toml: model[1].input_mtok: not a number: 'abc' (line 9)"),
        ("bad_unknown_key.toml", "bad_unknown_key.toml: model[0].cache_reed_mtok: unknown key"),
        ("bad_missing_output.toml", "bad_missing_output.toml: model[0]: missing required key 'output_mtok'"),
        ("bad_negative.toml", "bad_negative.toml: model[0].input_mtok: must be a finite number >= 0"),
        ("bad_bool.toml", "bad_bool.toml: model[0].input_mtok: not a number: True (line 3)"),
        ("bad_provider.toml", "bad_provider.toml: model[0].provider: must be a non-empty string"),
        ("bad_top_level.toml", "bad_top_level.toml: prices: unknown key"),
        ("bad_toml.toml", "bad_toml.toml: invalid TOML"),
    ],
)
def test_bad_override_file_raises_config_error_naming_the_key(fixture: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Pricer(FIXTURES / fixture)
    assert message in str(info.value)
    assert str(info.value.key).startswith(str(FIXTURES / fixture))


def test_fingerprint_changes_with_the_override_file_and_genai_prices_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.toml"
    absent = Pricer(path).fingerprint()
    assert absent == Pricer().fingerprint()
    path.write_text('[[model]]\nmatch = "x"\ninput_mtok = "1"\noutput_mtok = "2"\n')
    first = Pricer(path).fingerprint()
    assert first != absent
    assert Pricer(path).fingerprint() == first
    path.write_text('[[model]]\nmatch = "x"\ninput_mtok = "1"\noutput_mtok = "3"\n')
    assert Pricer(path).fingerprint() not in (first, absent)
    monkeypatch.setattr(genai_prices, "__version__", "9.9.9")
    assert Pricer().fingerprint() != absent


def test_default_overrides_path_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOKENBRIDGE_PRICES_FILE", raising=False)
    default = default_overrides_path()
    assert default.name == "prices.toml"
    assert default.parent.name == "tokenbridge"
    monkeypatch.setenv("TOKENBRIDGE_PRICES_FILE", str(tmp_path / "mine.toml"))
    assert default_overrides_path() == tmp_path / "mine.toml"
