"""The rate cache: same costs as the price table, without loading it on short syncs."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from bridge._ratecache import RateCache, package_version, tokens_cost
from bridge.pricing import Pricer
from bridge.record import Tokens
from tests.conftest import ClaudeHome, assistant_line

CASES = [
    Tokens(4, 187, 48000, 1200, 0),
    Tokens(10, 40, 9000, 0, 0),
    Tokens(1200, 350, 0, 2000, 2000),
    Tokens(250_000, 900, 10_000, 3000, 1000),  # above the 200k tier
    Tokens(0, 1, 0, 0, 0),
]


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001", "gpt-5"]
)
def test_cached_rates_give_the_price_tables_exact_cost(model):
    provider = "openai" if model.startswith("gpt") else "anthropic"
    pricer = Pricer(None)
    expected = [pricer.cost(provider, model, t) for t in CASES]
    cacheable, plain = pricer.plain_rates(provider, model)
    assert cacheable and plain is not None
    assert [tokens_cost(plain, t) for t in CASES] == expected


def test_unknown_models_are_cached_as_unknown_and_time_dependent_prices_are_not_cached():
    pricer = Pricer(None)
    assert pricer.cost("anthropic", "claude-experimental-x", CASES[0]) is None
    assert pricer.plain_rates("anthropic", "claude-experimental-x") == (True, None)
    assert pricer.plain_rates("anthropic", "never-priced") == (False, None)


def test_cache_file_round_trip_and_invalidation(tmp_path):
    path = tmp_path / "rates.json"
    pricer = Pricer(None)
    pricer.cost("anthropic", "claude-sonnet-4-5", CASES[0])
    cache = RateCache(path, "v1")
    cache.put("anthropic", "claude-sonnet-4-5", pricer.plain_rates("anthropic", "claude-sonnet-4-5")[1])
    cache.put("anthropic", "mystery", None)
    cache.save()
    again = RateCache(path, "v1")
    assert again.get("anthropic", "mystery") == (True, None)
    hit, rates = again.get("anthropic", "claude-sonnet-4-5")
    assert (
        hit
        and rates is not None
        and tokens_cost(rates, CASES[0]) == pricer.cost("anthropic", "claude-sonnet-4-5", CASES[0])
    )
    assert RateCache(path, "v2").get("anthropic", "mystery") == (False, None), "other inputs: start over"
    path.write_text("{not json")
    assert RateCache(path, "v1").entries == {}


def test_package_version_matches_importlib_metadata():
    from importlib.metadata import version

    assert package_version() == version("genai-prices")


def _sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", "--debug", "sync", "--no-export"], env=env, capture_output=True, text=True
    )


def _cost(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "report", "models", "--json"], env=env, capture_output=True, text=True
    )
    return str(json.loads(out.stdout)["totals"]["totalCost"])


def test_incremental_sync_prices_from_the_cache_without_loading_the_table(cli_env, claude_home: ClaudeHome, tmp_path):
    f = claude_home.session_file()
    claude_home.append(f, assistant_line("msg_A", "req_A"))
    first = _sync(cli_env)
    assert first.returncode == 0 and "loading the price table" in first.stderr
    claude_home.append(f, assistant_line("msg_B", "req_B", input=250_000))
    second = _sync(cli_env)
    assert second.returncode == 0 and "loading the price table" not in second.stderr
    fresh = {**cli_env, "TOKENBRIDGE_STATE_DIR": str(tmp_path / "fresh")}
    assert _sync(fresh).returncode == 0
    assert _cost(cli_env) == _cost(fresh), "cached rates price exactly as the table"
    # A new override file changes what prices depend on: the table is loaded again.
    prices = tmp_path / "prices.toml"
    prices.write_text('[[model]]\nmatch = "claude-sonnet-4-5*"\ninput_mtok = "1"\noutput_mtok = "1"\n')
    claude_home.append(f, assistant_line("msg_C", "req_C"))
    third = _sync({**cli_env, "TOKENBRIDGE_PRICES_FILE": str(prices)})
    assert "loading the price table" in third.stderr


def test_fast_mode_and_web_search_are_priced_the_same_from_the_cache(cli_env, claude_home: ClaudeHome, tmp_path):
    # Opus 4.5 ($5 / $25 / $0.50 per MTok) has fixed prices, so its rates are cached (Opus 4.6's depend on the
    # date and are not); its fast multiplier comes from the prices file, which the cached path must read too.
    prices = tmp_path / "prices.toml"
    prices.write_text('[[fast_mode]]\nmatch = "claude-opus-4-5*"\nmultiplier = "6"\n')
    cli_env = {**cli_env, "TOKENBRIDGE_PRICES_FILE": str(prices)}
    f = claude_home.session_file()
    opus = {"model": "claude-opus-4-5-20251101", "input": 1000, "output": 2000, "cache_read": 10_000, "cache_5m": 0}
    claude_home.append(f, assistant_line("msg_A", "req_A", **opus))  # $0.06, resolves the model's rates
    assert _sync(cli_env).returncode == 0
    claude_home.append(
        f,
        assistant_line("msg_B", "req_B", speed="fast", **opus),  # x6 = $0.36
        assistant_line("msg_C", "req_C", server_tool_use={"web_search_requests": 4}, **opus),  # + $0.04 = $0.10
    )
    second = _sync(cli_env)
    assert second.returncode == 0 and "loading the price table" not in second.stderr
    assert Decimal(_cost(cli_env)) == Decimal("0.52")
    fresh = {**cli_env, "TOKENBRIDGE_STATE_DIR": str(tmp_path / "fresh")}
    assert _sync(fresh).returncode == 0
    assert Decimal(_cost(fresh)) == Decimal("0.52"), "the price table's path gives the same"
