"""Resolved per-model rates, kept between runs so a short ``sync`` need not load the price table.

Loading genai-prices' bundled table costs about 0.2 s, more than everything else an incremental
``tokenbridge sync`` does. Once a model's rates are resolved they are plain integer tables; they
are saved in the state directory, keyed by what prices depend on (package version, rules
version, override file identity), and reused until one of those changes. Prices that depend on
the request time are not cached (the full table is loaded for them).

This module must not import genai-prices: that is the point of it.
"""

from __future__ import annotations

import json
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from bridge.record import Tokens

log = logging.getLogger("tokenbridge.pricing")

RULES_VERSION = "2"  # bump when pricing rules change, so cached costs are recomputed (2: fast mode, server tools)
PlainRates = tuple[int, int, tuple[int, ...], tuple[tuple[int, ...], ...]]  # exp, first_tier, thresholds, tables


def tokens_cost(rates: PlainRates, t: Tokens) -> Decimal:
    """Exact USD cost of one request from integer rates (the one formula both paths use).

    ``tables[i]`` holds (input, output, cache_read, cache_write_5m, cache_write_1h, per_request)
    for the i-th tier interval of the request's total input (cache included), in 10**exp USD.
    """
    exp, first_tier, thresholds, tables = rates
    cc = t.cache_creation
    c1h = t.cache_creation_1h if t.cache_creation_1h < cc else cc
    total_in = t.input + t.cache_read + cc
    if total_in <= first_tier:
        r = tables[0]
    else:
        from bisect import bisect_left

        r = tables[bisect_left(thresholds, total_in)]
    units = t.input * r[0] + t.output * r[1] + t.cache_read * r[2] + (cc - c1h) * r[3] + c1h * r[4] + r[5]
    return Decimal(units).scaleb(exp)


def package_version(dist: str = "genai_prices") -> str:
    """An installed package's version from its dist-info folder name (``importlib.metadata`` scans
    every installed distribution and costs ~20 ms; this looks beside the package)."""
    from importlib.util import find_spec

    spec = find_spec(dist)
    if spec is not None and spec.origin:
        site = Path(spec.origin).parent.parent
        for info in site.glob(f"{dist}-*.dist-info"):
            return info.name[len(dist) + 1 : -len(".dist-info")]
    from importlib.metadata import version

    return version(dist.replace("_", "-"))


def _key(provider: str, model: str) -> str:
    return f"{provider}\t{model}"


class RateCache:
    """The saved rates of one state directory; ``None`` entries are models known to have no price."""

    def __init__(self, path: Path, inputs: str) -> None:
        self.path = path
        self.inputs = inputs
        self.entries: dict[str, PlainRates | None] = {}
        self.dirty = False
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(doc, dict) or doc.get("inputs") != inputs:
            return  # other prices: start over
        for key, value in (doc.get("entries") or {}).items():
            self.entries[key] = None if value is None else _plain(value)

    def get(self, provider: str, model: str) -> tuple[bool, PlainRates | None]:
        key = _key(provider, model)
        return (key in self.entries, self.entries.get(key))

    def put(self, provider: str, model: str, rates: PlainRates | None) -> None:
        key = _key(provider, model)
        if key not in self.entries or self.entries[key] != rates:
            self.entries[key] = rates
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"inputs": self.inputs, "entries": self.entries}))
            tmp.replace(self.path)  # atomic: a concurrent reader sees the old or the new file
            self.dirty = False
        except OSError as exc:
            log.debug("cannot save the rate cache %s: %s", self.path, exc)


def _plain(value: Any) -> PlainRates:
    exp, first_tier, thresholds, tables = value
    return (
        int(exp),
        int(first_tier),
        tuple(int(x) for x in thresholds),
        tuple(tuple(int(x) for x in r) for r in tables),
    )
