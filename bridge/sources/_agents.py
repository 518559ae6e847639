"""Small parsing helpers shared by the other agents' sources (Gemini CLI, OpenCode, Amp)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.record import MAX_TOKENS

UNKNOWN_MODEL = "unknown"

# Provider ids written by agents (OpenCode's providerID, ...) → bridge provider names.
_PROVIDER_ALIASES = {
    "anthropic": "anthropic",
    "openai": "openai",
    "google": "google",
    "google-vertex": "google",
    "gemini": "google",
    "openrouter": "openrouter",
    "moonshot": "moonshot",
    "moonshotai": "moonshot",
    "kimi": "moonshot",
    "deepseek": "deepseek",
    "xai": "xai",
    "x-ai": "xai",
}


@functools.lru_cache(maxsize=1024)
def provider_for(model: str, declared: str | None = None) -> str:
    """The provider of a model: the agent's own provider id when it names one we know, else a
    guess from the model name (``gemini-*`` → google, ``gpt-*`` → openai, ``claude-*`` →
    anthropic). An unrecognised provider id is kept as written (it prices as unknown)."""
    if declared:
        d = declared.strip().lower()
        if d in _PROVIDER_ALIASES:
            return _PROVIDER_ALIASES[d]
        if d:
            return d
    m = model.lower()
    if "/" in m:
        return "openrouter"
    if m.startswith(("gemini", "gemma")):
        return "google"
    if m.startswith(("gpt-", "o1", "o3", "o4", "codex", "chatgpt")):
        return "openai"
    if m.startswith(("kimi", "moonshot")):
        return "moonshot"
    if m.startswith("deepseek"):
        return "deepseek"
    if m.startswith("grok"):
        return "xai"
    return "anthropic" if m.startswith("claude") else "unknown"


def count(obj: dict[str, Any], key: str, where: str) -> int:
    """A token count: absent or null is 0; anything but a non-negative integer is an error
    naming the field."""
    v = obj.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS:
        raise ValueError(f"{where}.{key} is not a token count: {v!r}")
    return v


def iso_time(value: Any, where: str) -> datetime:
    """An ISO-8601 timestamp with a zone (``Z`` accepted)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} has no timestamp")
    ts = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if ts.tzinfo is None:
        raise ValueError(f"{where}: timestamp without a time zone: {value!r}")
    return ts.astimezone(UTC)


def epoch_ms_time(value: Any, where: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{where} has no epoch-millisecond time: {value!r}")
    return datetime.fromtimestamp(value / 1000, UTC)


def positive_cost(value: Any) -> Decimal | None:
    """A cost the agent wrote, when it is a positive number: 0 means "not computed", never free."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
