"""Data sources, one module each, all with the same shape (see ``_base.Source``).

Every public module here is a source module exporting ``SPECS`` (see ``_registry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.sources._base import ScanStats, Source, SourceStatus

if TYPE_CHECKING:
    from bridge.config import Settings

__all__ = ["ScanStats", "Source", "SourceStatus", "build_sources"]


def build_sources(settings: Settings, only: Sequence[str] | None = None) -> list[Source]:
    """The sources to run, in ingest order: ``only`` (names or groups, see
    ``_registry.resolve``) or else the enabled ones."""
    from bridge.sources import _registry

    if only:
        names = set(_registry.resolve(tuple(only)))
    else:
        names = set(settings.enabled_sources) if settings.enabled_sources is not None else None  # type: ignore[assignment]
    out: list[Source] = []
    for spec in _registry.specs():
        if names is None:
            if spec.default_enabled:
                out.append(spec.factory(settings))
        elif spec.name in names:
            out.append(spec.factory(settings))
    return out
