"""OpenClaw's usage objects, shared by its transcripts and its gateway log: the token names its
own ``normalizeUsage`` accepts, its stored cost, its provider names (local-formats.md §4.1)."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.record import Tokens

# normalizeUsage's accepted names, first match wins (local-formats.md §4.1).
_INPUT = ("input", "inputTokens", "input_tokens", "promptTokens", "prompt_tokens")
_OUTPUT = ("output", "outputTokens", "output_tokens", "completionTokens", "completion_tokens")
_CACHE_READ = ("cacheRead", "cache_read", "cache_read_input_tokens", "cached_tokens")
_CACHE_WRITE = ("cacheWrite", "cache_write", "cache_creation_input_tokens")
_PROVIDER_ALIASES = {
    "kimi": "moonshot",
    "kimi-coding": "moonshot",
    "moonshotai": "moonshot",
    "google-gemini": "google",
    "google-gemini-cli": "google",
    "google-vertex": "google",
    "gemini": "google",
    "vertex": "google",
    "openai-codex": "openai",
    "x-ai": "xai",
    "grok": "xai",
    "anthropic-vertex": "anthropic",
    "claude": "anthropic",
}


def provider_for(provider: Any, model: str) -> str:
    if isinstance(provider, str) and provider.strip():
        p = provider.strip().lower()
        return _PROVIDER_ALIASES.get(p, p)
    m = model.lower()
    if m.startswith("claude"):
        return "anthropic"
    if m.startswith(("gpt-", "o1", "o3", "o4", "codex")):
        return "openai"
    if m.startswith(("gemini", "gemma")):
        return "google"
    if m.startswith(("kimi", "moonshot")):
        return "moonshot"
    if m.startswith("deepseek"):
        return "deepseek"
    if m.startswith("grok"):
        return "xai"
    if "/" in m:
        return "openrouter"
    return "unknown"


def _first_count(usage: dict[str, Any], names: tuple[str, ...], clamp: bool = False) -> int:
    for name in names:
        if name in usage and usage[name] is not None:
            v = usage[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
                raise ValueError(f"usage.{name} is not a number: {v!r}")
            if v < 0:
                if clamp:
                    return 0
                raise ValueError(f"usage.{name} is negative: {v!r}")
            return int(v)
    return 0


def tokens_of(usage: dict[str, Any]) -> Tokens:
    """Token counts of one usage object; input and cache are separate counts in OpenClaw."""
    cache_read = _first_count(usage, _CACHE_READ)
    details = usage.get("prompt_tokens_details")
    if not cache_read and isinstance(details, dict):
        cache_read = _first_count(details, ("cached_tokens",))
    return Tokens(
        _first_count(usage, _INPUT, clamp=True),
        _first_count(usage, _OUTPUT),
        cache_read,
        _first_count(usage, _CACHE_WRITE),
        0,
    )


def cost_of(usage: dict[str, Any]) -> Decimal | None:
    """The stored cost when positive; 0, absent or odd means unknown (estimated later)."""
    cost = usage.get("cost")
    total = cost.get("total") if isinstance(cost, dict) else cost
    if isinstance(total, bool) or not isinstance(total, int | float) or not total > 0:
        return None
    try:
        return Decimal(str(total))
    except InvalidOperation:
        return None
