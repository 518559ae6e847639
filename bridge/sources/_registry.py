"""The source registry: every module in ``bridge/sources/`` that does not start with ``_`` is a
source module and exports ``SPECS``, a tuple of ``SourceSpec`` (usually one; a provider module
has one per API endpoint family).

Adding a source is adding one module (and its tests): the CLI's ``--source`` choices, the config
file's ``sources.enabled`` check, ``tokenbridge sources``, the daemon's watches and polls all read
this registry. Modules are imported when the registry is first used; a source module keeps its
heavy imports (HTTP clients, SQLite readers) inside functions so that importing it is cheap.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.sources._base import Source

Kind = Literal["tailed", "files", "snapshot", "polled", "push"]


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What the application needs to know about one source before building it.

    ``kind`` names the driver: ``tailed`` (append-only files read from a cursor), ``files``
    (files re-parsed whole when they change), ``snapshot`` (one aggregate file), ``polled``
    (an HTTP API on a schedule) or ``push`` (data sent to ``tokenbridge run``).
    ``group`` is the name ``--source`` also accepts for every source of that group (e.g.
    ``openai`` selects ``openai_usage_api`` and ``openai_cost_api``). ``settings`` lists the
    environment variables and config keys the source reads (shown by ``tokenbridge sources``;
    secrets are named, never shown). ``order`` sorts ingest passes: a source whose rule depends
    on another's result (the stats cache on the transcripts) comes later.
    """

    name: str
    kind: Kind
    factory: Callable[[Settings], Source]
    description: str
    group: str | None = None
    settings: tuple[str, ...] = ()
    default_enabled: bool = True
    order: int = 50
    provider: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@functools.cache
def specs() -> tuple[SourceSpec, ...]:
    """Every registered source, in ingest order."""
    import bridge.sources as package

    found: list[SourceSpec] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bridge.sources.{info.name}")
        module_specs = getattr(module, "SPECS", None)
        if module_specs is None:
            raise RuntimeError(f"bridge.sources.{info.name} is a source module without SPECS")
        found.extend(module_specs)
    names = [s.name for s in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuntimeError(f"source names registered twice: {', '.join(dupes)}")
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


def names() -> tuple[str, ...]:
    return tuple(s.name for s in specs())


def groups() -> dict[str, tuple[str, ...]]:
    """Group name → its sources' names (only groups with a name of their own)."""
    out: dict[str, list[str]] = {}
    for s in specs():
        if s.group and s.group != s.name:
            out.setdefault(s.group, []).append(s.name)
    return {g: tuple(v) for g, v in out.items()}


def selectors() -> tuple[str, ...]:
    """What ``--source`` accepts: every source name and every group name."""
    return tuple(sorted({*names(), *groups()}))


def resolve(selected: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Source names for ``--source`` values (a group expands to its members), in ingest order.

    Raises ``ValueError`` naming the first unknown value.
    """
    by_group = groups()
    known = set(names())
    wanted: set[str] = set()
    for value in selected:
        if value in by_group:
            wanted.update(by_group[value])
        elif value in known:
            wanted.add(value)
        else:
            raise ValueError(value)
    return tuple(n for n in names() if n in wanted)


def get(name: str) -> SourceSpec:
    for s in specs():
        if s.name == name:
            return s
    raise KeyError(name)
