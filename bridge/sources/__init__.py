"""Data sources, one module each, all with the same shape (see ``_base.Source``)."""

from __future__ import annotations

from bridge.config import Settings
from bridge.sources._base import ScanStats, Source, SourceStatus

__all__ = ["ScanStats", "Source", "SourceStatus", "build_sources"]


def build_sources(settings: Settings, only: str | None = None) -> list[Source]:
    """The enabled sources, in ingest order (transcripts before the stats cache, whose rule
    depends on what the transcripts cover)."""
    from bridge.sources.claude_stats_cache import ClaudeStatsCache
    from bridge.sources.claude_transcripts import ClaudeTranscripts

    transcripts = ClaudeTranscripts(env=settings.env)
    available: dict[str, Source] = {
        "claude_transcripts": transcripts,
        "claude_stats_cache": ClaudeStatsCache(transcripts.roots, explicit=transcripts.explicit),
    }
    names = [only] if only else [n for n in available if n in settings.enabled_sources]
    return [available[n] for n in names]
