"""Exact USD cost of one request from its token counts.

Prices come from a user override file first, then from ``genai-prices``: its bundled data, or the newer table
``tokenbridge run`` fetched through genai-prices' update mechanism (``bridge/price_data.py``).
Rates are resolved once per (provider, model) and cached as integers, so ``Pricer.cost`` is a few
integer multiplications and one ``Decimal``; results equal ``genai_prices.calc_price`` exactly.

Rules:

- Token categories: uncached input, output, cache reads, 5-minute cache writes
  (``cache_creation - cache_creation_1h``) and 1-hour cache writes. A category without its own
  price falls back to its parent, as genai-prices does: cache reads → input rate; 5m writes →
  ``cache_write`` → input; 1h writes → ``cache_write_1h`` → ``cache_write`` → input. Falling back
  to the input rate may over-state the cost of cache tokens, never hide it.
- Tiers (e.g. Claude Sonnet 4.5 above 200k input tokens): the request's total input, cache reads
  and writes included, selects one rate per category for ALL of the request's tokens.
- Date-dependent prices (conditional prices, off-peak windows) are chosen by ``at`` (default: now).
  Service-tier variants (batch, priority, flex) are not applied: standard prices only.
- Model lookup tries the name as written, then without a ``[…]`` suffix, a trailing date
  (``-20250929``, ``@20250929``, ``-2025-09-29``) or a ``vendor/`` prefix. ``<synthetic>`` is never
  priced. A model without a price costs ``None`` (never $0): it is listed in ``unknown_models`` and
  logged once, naming the override file to fix it. A genai-prices model with neither an input nor
  an output token price counts as unknown.

Override file (TOML; first matching entry wins, in file order, before genai-prices)::

    [[model]]
    provider = "anthropic"      # optional; absent = any provider
    match = "my-finetune-*"     # exact name or fnmatch glob, case-insensitive
    input_mtok = "3"            # required, USD per million tokens (string, integer or float)
    output_mtok = "15"          # required
    cache_read_mtok = "0.3"     # optional, default: input_mtok
    cache_write_mtok = "3.75"   # optional (5-minute writes), default: input_mtok
    cache_write_1h_mtok = "6"   # optional, default: cache_write_mtok

Any other key, a missing required key or a bad number raises ``ConfigError`` naming the key as
``<file>: model[<0-based index>].<key>`` and its line. A missing file, or ``overrides_path=None``,
means no overrides (callers pass ``default_overrides_path()`` to read the user's file).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import tomllib
from bisect import bisect_left
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import Usage, calc_price
from genai_prices.types import ConditionalPrice, ModelInfo, ModelPrice, StartDateConstraint, Tier, TieredPrices

from bridge._ratecache import RULES_VERSION, PlainRates, tokens_cost
from bridge.config import default_overrides_path
from bridge.errors import ConfigError
from bridge.record import Tokens
from bridge.surcharges import TOML_KEYS as SURCHARGE_KEYS
from bridge.surcharges import Extras, Surcharges
from bridge.surcharges import parse as parse_surcharges

__all__ = ["Pricer", "default_overrides_path"]

log = logging.getLogger("tokenbridge.pricing")

_RULES_VERSION = RULES_VERSION
_SYNTHETIC = "<synthetic>"
# Bridge provider names → genai-prices provider ids (others are passed through as written).
_PROVIDER_IDS = {
    "anthropic": "anthropic",
    "openai": "openai",
    "openrouter": "openrouter",
    "moonshot": "moonshotai",
    "deepseek": "deepseek",
    "google": "google",
    "xai": "x-ai",
}
_DATE_SUFFIX = re.compile(r"[-@](?:20\d{6}|20\d\d-\d\d-\d\d)$")
_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")
_RATE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
_KEYS = ("provider", "match", *_RATE_KEYS)
_Price = Decimal | TieredPrices | None


class _Rates:
    """Integer rates in units of 10**exp USD per token, one tuple per tier interval.

    A tuple is (input, output, cache_read, cache_write_5m, cache_write_1h, per_request_fee).
    """

    __slots__ = ("exp", "first_tier", "tables", "thresholds")

    def __init__(self, slots: list[_Price]) -> None:
        starts = {t.start for p in slots if isinstance(p, TieredPrices) for t in p.tiers}
        self.thresholds = tuple(sorted(starts))
        self.first_tier = self.thresholds[0] if self.thresholds else 1 << 62
        reps = [0, *(s + 1 for s in self.thresholds)]  # one total-input value inside each interval
        decs = [[_price_at(p, rep) for p in slots] for rep in reps]
        scale = max(0, *(-int(d.as_tuple().exponent) for row in decs for d in row))
        self.exp = -6 - scale
        self.tables = tuple(tuple(int(d.scaleb(scale)) for d in row) for row in decs)

    def at_input(self, total_input: int) -> tuple[int, ...]:
        return self.tables[bisect_left(self.thresholds, total_input)]

    def plain(self) -> PlainRates:
        return (self.exp, self.first_tier, self.thresholds, self.tables)


class _Conditional:
    """A genai-prices model whose prices depend on the request time (later entries win)."""

    __slots__ = ("by_price", "model", "steps")

    def __init__(self, model: ModelInfo, prices: list[ConditionalPrice]) -> None:
        self.model = model
        self.by_price: dict[int, tuple[ModelPrice, _Rates]] = {}
        # Fast path when every condition is a start date: (UTC start instant or None, rates).
        steps: list[tuple[datetime | None, _Rates]] | None = []
        for c in reversed(prices):
            k = c.constraint
            if steps is None or not (k is None or isinstance(k, StartDateConstraint)):
                steps = None
                continue
            start = None if k is None else datetime.combine(k.start_date, time(), UTC)
            steps.append((start, self._rates(c.prices)))
        if steps is not None:
            steps.append((None, self._rates(prices[0].prices)))  # nothing active: the first one
        self.steps = steps

    def _rates(self, price: ModelPrice) -> _Rates:
        hit = self.by_price.get(id(price))
        if hit is None:  # keeps a reference to ``price`` so its id stays unique
            hit = self.by_price[id(price)] = (price, _Rates(_genai_slots(price)))
        return hit[1]

    def rates_at(self, at: datetime | None) -> _Rates:
        if at is None:
            at = datetime.now(UTC)
        elif at.tzinfo is None:
            at = at.replace(tzinfo=UTC)  # genai-prices reads naive times as UTC
        if self.steps is None:
            return self._rates(self.model.get_prices(at))
        for start, rates in self.steps:
            if start is None or at >= start:
                return rates
        raise AssertionError("unreachable: the last step has no start")


def _price_at(price: _Price, total_input: int) -> Decimal:
    """genai-prices' tier rule: the highest tier whose start is below the total input applies."""
    if price is None:
        return Decimal(0)
    if isinstance(price, TieredPrices):
        for tier in reversed(price.tiers):
            if total_input > tier.start:
                return tier.price
        return price.base
    return price


def _first(*prices: _Price) -> _Price:
    return next((p for p in prices if p is not None), None)


def _genai_slots(mp: ModelPrice) -> list[_Price]:
    inp, cw, fee = mp.input_mtok, mp.cache_write_mtok, mp.requests_kcount
    if isinstance(fee, TieredPrices):
        fee = TieredPrices(fee.base * 1000, [Tier(t.start, t.price * 1000) for t in fee.tiers])
    elif fee is not None:
        fee = fee * 1000  # per 1000 requests → the per-million scale of the other slots, count 1
    cw5, cw1h = _first(mp.cache_write_5m_mtok, cw, inp), _first(mp.cache_write_1h_mtok, cw, inp)
    return [inp, mp.output_mtok, _first(mp.cache_read_mtok, inp), cw5, cw1h, fee]


def _has_token_price(mp: ModelPrice) -> bool:
    return mp.input_mtok is not None or mp.output_mtok is not None


class Pricer:
    """Prices requests; see the module docstring for the rules."""

    def __init__(self, overrides_path: Path | None = None, table: str = "bundled") -> None:
        """``table``: the identity of the price data in use (``bridge.price_data``), part of the fingerprint."""
        self._hint = overrides_path or default_overrides_path()
        self._entries: dict[tuple[str, str], _Rates | _Conditional | None] = {}
        self._unknown: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        raw = b""
        if overrides_path is not None:
            try:
                raw = overrides_path.read_bytes()
            except FileNotFoundError:
                raw = b""
            except OSError as exc:
                raise ConfigError(str(overrides_path), f"cannot read price overrides: {exc}") from exc
        self._overrides = _parse_overrides(overrides_path, raw) if raw else []
        self._surcharges = parse_surcharges(overrides_path, raw) if raw else Surcharges(hint=str(self._hint))
        digest = hashlib.sha256(f"{genai_prices.__version__}\0{_RULES_VERSION}\0{table}\0".encode() + raw)
        self._fingerprint = digest.hexdigest()[:16]

    def cost(
        self, provider: str, model: str, tokens: Tokens, at: datetime | None = None, extras: Extras | None = None
    ) -> Decimal | None:
        """USD cost, exact Decimal; None when the model has no known price (never 0 for unknown).
        ``extras`` (fast mode, server tools) are priced on top by ``bridge.surcharges``."""
        try:
            entry = self._entries[(provider, model)]
        except KeyError:
            entry = self._resolve(provider, model)
        if entry is None:
            return None
        rates = entry.rates_at(at) if isinstance(entry, _Conditional) else entry
        base = tokens_cost((rates.exp, rates.first_tier, rates.thresholds, rates.tables), tokens)
        return base if extras is None else self._surcharges.apply(base, model, extras)

    def plain_rates(self, provider: str, model: str) -> tuple[bool, PlainRates | None]:
        """(cacheable, rates) of an already priced model: time-dependent prices are not cacheable."""
        key = (provider, model)
        if key not in self._entries or model == _SYNTHETIC:
            return False, None
        entry = self._entries[key]
        if isinstance(entry, _Conditional):
            return False, None
        return True, None if entry is None else entry.plain()

    @property
    def unknown_models(self) -> frozenset[tuple[str, str]]:
        """(provider, model) pairs seen without a price."""
        return frozenset(self._unknown)

    def fingerprint(self) -> str:
        """Changes when the override file content, the genai-prices version or the rules change."""
        return self._fingerprint

    def _resolve(self, provider: str, model: str) -> _Rates | _Conditional | None:
        with self._lock:
            key = (provider, model)
            if key in self._entries:
                return self._entries[key]
            entry = None if model == _SYNTHETIC else self._lookup(provider, model)
            if entry is None and model != _SYNTHETIC:
                self._unknown.add(key)
                log.warning(
                    "no price for model %r (provider %r): its cost stays unknown; add a [[model]] entry to %s",
                    model,
                    provider,
                    self._hint,
                )
            self._entries[key] = entry
            return entry

    def _lookup(self, provider: str, model: str) -> _Rates | _Conditional | None:
        names = _candidate_names(model)
        prov = provider.lower()
        gid = _PROVIDER_IDS.get(prov)
        for name in names:
            for o_provider, o_match, o_rates in self._overrides:
                if o_provider in (None, prov, gid) and fnmatchcase(name, o_match):
                    return o_rates
        pids: list[str | None] = [gid] if gid else [prov, None]
        tries = [(pid, name) for name in names for pid in pids]
        for name in names:  # "anthropic/claude-…" also under the vendor's own prices
            vendor, _, rest = name.partition("/")
            if rest and _PROVIDER_IDS.get(vendor) not in (None, gid):
                tries.append((_PROVIDER_IDS[vendor], rest))
        for pid, name in tries:
            try:
                info = calc_price(Usage(), name, provider_id=pid).model
            except LookupError:
                continue
            if isinstance(info.prices, ModelPrice):
                return _Rates(_genai_slots(info.prices)) if _has_token_price(info.prices) else None
            if all(_has_token_price(c.prices) for c in info.prices):
                return _Conditional(info, info.prices)
            return None
        return None


def _candidate_names(model: str) -> list[str]:
    """The name as written, then without a ``[…]`` suffix, a trailing date, a ``vendor/`` prefix."""
    name = model.strip().lower()
    plain = _BRACKET_SUFFIX.sub("", name)
    tail = plain.rpartition("/")[2]
    out: list[str] = []
    for n in (name, plain, _DATE_SUFFIX.sub("", plain), tail, _DATE_SUFFIX.sub("", tail)):
        if n and n not in out:
            out.append(n)
    return out


_Override = tuple[str | None, str, _Rates]  # provider (lower case, or any), glob, rates


def _parse_overrides(path: Path | None, raw: bytes) -> list[_Override]:
    where = str(path)
    try:
        text = raw.decode()
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(where, f"invalid TOML: {exc}") from exc
    for key in doc:
        if key != "model" and key not in SURCHARGE_KEYS:  # fast_mode / server_tools: bridge.surcharges
            raise ConfigError(f"{where}: {key}", "unknown key (expected [[model]], [[fast_mode]] or [server_tools])")
    tables = doc.get("model", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: model", "must be an array of tables ([[model]])")
    lines = text.splitlines()
    heads = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*model\s*\]\]", ln)]
    return [_parse_entry(where, i, t, lines, heads) for i, t in enumerate(tables)]


def _parse_entry(where: str, i: int, table: Any, lines: list[str], heads: list[int]) -> _Override:
    def fail(key: str | None, msg: str) -> ConfigError:
        line = _line_of(key, i, lines, heads)
        path = f"{where}: model[{i}]" + (f".{key}" if key else "")
        return ConfigError(path, msg + (f" (line {line})" if line else ""))

    if not isinstance(table, dict):
        raise fail(None, "must be a table")
    for key in table:
        if key not in _KEYS:
            raise fail(key, f"unknown key (allowed: {', '.join(_KEYS)})")
    for key in ("match", "input_mtok", "output_mtok"):
        if key not in table:
            raise fail(None, f"missing required key {key!r}")
    for key in ("provider", "match"):
        value = table.get(key)
        if key in table and (not isinstance(value, str) or not value.strip()):
            raise fail(key, f"must be a non-empty string, got {value!r}")
    rates: dict[str, Decimal | None] = dict.fromkeys(_RATE_KEYS)
    for key in _RATE_KEYS:
        value = table.get(key)
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float | None):
                raise InvalidOperation
            rates[key] = dec = None if value is None else Decimal(str(value).strip())
        except InvalidOperation:
            raise fail(key, f"not a number: {value!r}") from None
        if dec is not None and (not dec.is_finite() or dec < 0):
            raise fail(key, f"must be a finite number >= 0, got {value!r}")
    inp, cw = rates["input_mtok"], rates["cache_write_mtok"]
    slots: list[_Price] = [inp, rates["output_mtok"], _first(rates["cache_read_mtok"], inp)]
    slots += [_first(cw, inp), _first(rates["cache_write_1h_mtok"], cw, inp), None]
    provider = table.get("provider")
    return (provider.strip().lower() if provider else None, table["match"].strip().lower(), _Rates(slots))


def _line_of(key: str | None, i: int, lines: list[str], heads: list[int]) -> int | None:
    """1-based line of ``key`` in the i-th ``[[model]]`` table (or of its header), if found."""
    if i >= len(heads):
        return None
    end = heads[i + 1] if i + 1 < len(heads) else len(lines)
    if key:
        for n in range(heads[i] + 1, end):
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
                return n + 1
    return heads[i] + 1
