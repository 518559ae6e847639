"""Usage recorded by commands rather than read from files: ``terminal`` (``tokenbridge wrap``
and ``capture``, see ``bridge.terminal``) and ``manual`` (``tokenbridge log``, see
``bridge.manual``).

These sources have nothing to scan: their rows are committed by the command that saw them.
They are registered so that ``tokenbridge sources`` lists them, ``report --source terminal``
selects them and the dashboards' source variable offers them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.ledger import CostFunction, Ledger
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, SourceStatus
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from bridge.config import Settings


class _Pushed(BaseSource):
    def __init__(self, name: str) -> None:
        self.name = name

    def status(self) -> SourceStatus:
        return SourceStatus(self.name, True, True, [], 0, [])

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        return ScanStats(self.name)  # rows arrive through their command, already committed


def _terminal(_settings: Settings) -> _Pushed:
    return _Pushed("terminal")


def _manual(_settings: Settings) -> _Pushed:
    return _Pushed("manual")


SPECS = (
    SourceSpec("terminal", "push", _terminal, "Usage printed in a terminal (tokenbridge wrap, capture)", order=90),
    SourceSpec("manual", "push", _manual, "Manual entries (tokenbridge log)", order=90),
)
