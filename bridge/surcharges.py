"""What a request costs on top of its tokens: fast mode and server tools.

Both pricing paths (the full price table in ``bridge.pricing`` and the rate cache in
``bridge.app.LazyPricer``) first price the tokens at standard rates, then call ``apply`` here, so
the two can never disagree. This module must not import genai-prices (see ``_ratecache``).

Defaults (source: Anthropic's pricing page, platform.claude.com/docs/en/about-claude/pricing,
"Fast mode" and "Web search" sections, as recorded in issue 9):

- ``usage.speed == "fast"`` bills every token category at a multiple of the standard rate:
  6x on Claude Opus 4.6 and 4.7, 2x on Opus 4.8 and Opus 5. Fast mode on any other model has no
  known multiplier: its cost is unknown (never the standard price, which would under-state it).
- ``usage.server_tool_use.web_search_requests``: $10 per 1,000 searches.
- ``web_fetch_requests``: our references give no price, so a request with web fetches has an
  unknown cost until the prices file states one.

Overrides in the prices file (the same TOML file as the ``[[model]]`` entries)::

    [[fast_mode]]                 # first match wins, before the defaults
    match = "claude-opus-4-6*"    # exact name or fnmatch glob, case-insensitive
    multiplier = "6"

    [server_tools]
    web_search_per_1k = "10"      # USD per 1,000 requests
    web_fetch_per_1k = "0"
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

log = logging.getLogger("tokenbridge.pricing")

FAST = "fast"
# Model name (normalised: lower case, no date suffix, no ``[…]`` suffix, no ``vendor/`` prefix) →
# fast-mode multiplier of every token rate.
FAST_MULTIPLIERS: dict[str, Decimal] = {
    "claude-opus-4-6": Decimal(6),
    "claude-opus-4-7": Decimal(6),
    "claude-opus-4-8": Decimal(2),
    "claude-opus-5": Decimal(2),
}
WEB_SEARCH_PER_1K: Decimal | None = Decimal(10)
WEB_FETCH_PER_1K: Decimal | None = None

_DATE_SUFFIX = re.compile(r"[-@](?:20\d{6}|20\d\d-\d\d-\d\d)$")
_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")
_SERVER_KEYS = ("web_search_per_1k", "web_fetch_per_1k")
TOML_KEYS = ("fast_mode", "server_tools")  # top-level keys of the prices file this module reads


@dataclass(frozen=True, slots=True)
class Extras:
    """A request's priced extras: its speed as written and its server tool request counts."""

    speed: str | None = None
    web_search: int = 0
    web_fetch: int = 0


def normalise(model: str) -> str:
    name = _BRACKET_SUFFIX.sub("", model.strip().lower()).rpartition("/")[2]
    return _DATE_SUFFIX.sub("", name)


class Surcharges:
    """Fast-mode multipliers and server tool prices: defaults, then the prices file's overrides."""

    def __init__(
        self,
        fast: list[tuple[str, Decimal]] | None = None,
        web_search_per_1k: Decimal | None = WEB_SEARCH_PER_1K,
        web_fetch_per_1k: Decimal | None = WEB_FETCH_PER_1K,
        hint: str = "the prices file",
    ) -> None:
        self._fast = fast or []
        self._search = web_search_per_1k
        self._fetch = web_fetch_per_1k
        self._hint = hint
        self._warned: set[str] = set()

    def fast_multiplier(self, model: str) -> Decimal | None:
        name = normalise(model)
        for pattern, mult in self._fast:
            if fnmatchcase(name, pattern):
                return mult
        return FAST_MULTIPLIERS.get(name)

    def apply(self, base: Decimal | None, model: str, extras: Extras | None) -> Decimal | None:
        """The request's cost from its standard token cost; None when any part has no price."""
        if base is None or extras is None:
            return base
        cost = base
        if extras.speed == FAST:
            mult = self.fast_multiplier(model)
            if mult is None:
                self._warn(f"fast:{model}", f"no fast-mode multiplier for model {model!r}: its cost stays unknown")
                return None
            cost = base * mult
        if extras.web_search:
            if self._search is None:
                self._warn("web_search", "no price for web search requests: their cost stays unknown")
                return None
            cost += self._search * extras.web_search / 1000
        if extras.web_fetch:
            if self._fetch is None:
                self._warn("web_fetch", "no price for web fetch requests: their requests' cost stays unknown")
                return None
            cost += self._fetch * extras.web_fetch / 1000
        return cost

    def _warn(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s; set it in %s", msg, self._hint)


def load(path: Path | None) -> Surcharges:
    """The surcharges of a prices file (defaults when it is absent or ``path`` is None)."""
    if path is None:
        return Surcharges()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Surcharges(hint=str(path))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read price overrides: {exc}") from exc
    return parse(path, raw)


def parse(path: Path | None, raw: bytes) -> Surcharges:
    where = str(path)
    try:
        import tomllib  # only with a surcharges file (see config._read_file)

        doc = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(where, f"invalid TOML: {exc}") from exc
    fast: list[tuple[str, Decimal]] = []
    tables = doc.get("fast_mode", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: fast_mode", "must be an array of tables ([[fast_mode]])")
    for i, t in enumerate(tables):
        at = f"{where}: fast_mode[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(at, "must be a table")
        for key in t:
            if key not in ("match", "multiplier"):
                raise ConfigError(f"{at}.{key}", "unknown key (allowed: match, multiplier)")
        match = t.get("match")
        if not isinstance(match, str) or not match.strip():
            raise ConfigError(f"{at}.match", f"must be a non-empty string, got {match!r}")
        if "multiplier" not in t:
            raise ConfigError(at, "missing required key 'multiplier'")
        fast.append((match.strip().lower(), _number(f"{at}.multiplier", t["multiplier"])))
    server = doc.get("server_tools", {})
    if not isinstance(server, dict):
        raise ConfigError(f"{where}: server_tools", "must be a table ([server_tools])")
    for key in server:
        if key not in _SERVER_KEYS:
            raise ConfigError(f"{where}: server_tools.{key}", f"unknown key (allowed: {', '.join(_SERVER_KEYS)})")
    search = WEB_SEARCH_PER_1K
    fetch = WEB_FETCH_PER_1K
    if "web_search_per_1k" in server:
        search = _number(f"{where}: server_tools.web_search_per_1k", server["web_search_per_1k"])
    if "web_fetch_per_1k" in server:
        fetch = _number(f"{where}: server_tools.web_fetch_per_1k", server["web_fetch_per_1k"])
    return Surcharges(fast, search, fetch, hint=where)


def _number(at: str, value: Any) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidOperation
        dec = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(at, f"not a number: {value!r}") from None
    if not dec.is_finite() or dec < 0:
        raise ConfigError(at, f"must be a finite number >= 0, got {value!r}")
    return dec
