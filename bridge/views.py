"""The single-count rule between billing views and client views.

The same request can reach the ledger twice: as a Claude Code transcript line (the client's
view, with sessions and projects) and inside the provider's usage and cost reports (the billing
view, which also holds every other client of the same organization). Default totals must count
it once. The rule, per provider:

* When a **billing source** of the provider (its usage or cost API: ``SourceSpec.extra["view"]
  == "billing"``) has rows in the ledger, the billing sources are that provider's total from
  their first row on. The rows of the provider's **local sources** (transcripts, stats cache,
  other tools' files) from that time on become an attribution view: left out of default totals,
  shown when selected with ``--source``.
* Before the billing sources' first row, and for providers without a billing source, local
  sources are the total, as before.

**Attribution views** (``SourceSpec.extra["view"] == "attribution"``, e.g. Anthropic's Claude
Code analytics report: another view of the usage report's requests) are never in default totals
and never exported under Claude Code's metric names; ``--source`` shows them.

Within the billing view, tokens come from the usage API and cost from the cost API (usage rows
carry ``cost_origin=external`` while the cost source is enabled), so billed cost is never added
to an estimate of itself.
"""

from __future__ import annotations

import functools

from bridge.ledger import Ledger

# The bridge's own views of tools that also send native telemetry (Claude Code's transcripts, the events it forwards,
# its stats cache; the Codex and Gemini CLI files). Where one of them has a series for a model, that model's native
# telemetry is the same requests again and is not counted: the rule of the dashboards
# (grafana/generate_dashboards.py) and of `report --central` (bridge/central.py), kept here once.
NATIVE_PREFERRED = ("claude_transcripts", "claude_code_events", "claude_stats_cache", "codex", "gemini_cli")


@functools.cache
def attribution_sources() -> frozenset[str]:
    """Sources that only re-describe usage another source counts (never totals, never exported)."""
    from bridge.sources import _registry

    return frozenset(s.name for s in _registry.specs() if s.extra.get("view") == "attribution")


def billing_sources() -> dict[str, str]:
    """Billing source name → its provider, from the registry."""
    from bridge.sources import _registry

    return {s.name: s.provider or "" for s in _registry.specs() if s.extra.get("view") == "billing"}


def default_exclusions(ledger: Ledger) -> list[tuple[str, str, int]]:
    """(source, provider, from ms) of local rows that a billing source covers (see above)."""
    from bridge.sources import _registry

    billing = billing_sources()
    polled = {s.name for s in _registry.specs() if s.kind == "polled"}
    pairs = ledger.source_providers()
    out = [(s, p, 0) for s, p in sorted(pairs) if s in attribution_sources()]
    for provider in sorted({p for s, p in pairs if s in billing}):
        start = ledger.first_ms([s for s, p in pairs if p == provider and s in billing], provider)
        if start is None:
            continue
        for source, p in sorted(pairs):
            if p == provider and source not in billing and source not in polled and source not in attribution_sources():
                out.append((source, provider, start))
    return out
