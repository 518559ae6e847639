"""The ``files`` driver: sources whose files are re-parsed whole when they change.

Some agents rewrite a whole JSON document per turn (Amp threads, legacy Gemini sessions), keep
usage in a database (OpenCode), or restate history inside an append-only file (Gemini's
``$set``). A byte cursor cannot follow those, so a changed file is parsed again from the start
and every record it yields goes to the ledger again. That is exactly-once only because each
record's ``dedup_key`` is the message's own id: the ledger's per-request max-register turns a
re-parse into "nothing new", and a message that grew into "only the increase".

A file's state is kept as a cursor row (inode, size, mtime): an unchanged file is not opened.
The records of a file and its cursor are committed in one transaction, so a crash mid-pass
repeats or loses nothing. A file that does not parse (a rewrite caught half-written) is
counted as skipped and re-read when it changes again.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bridge.errors import SourceError
from bridge.ledger import CostFunction, Cursor, Ledger
from bridge.record import UsageRecord
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, SourceStatus, Watch, log


@dataclass(slots=True)
class Parsed:
    """What one file gave: its records and how many of its entries were unreadable."""

    records: list[UsageRecord] = field(default_factory=list)
    malformed: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stamp:
    """What tells a changed file from an unchanged one (a database adds its WAL file)."""

    inode: int
    size: int
    mtime_ns: int


def stat_stamp(path: Path) -> Stamp:
    st = path.stat()
    return Stamp(st.st_ino, st.st_size, st.st_mtime_ns)


class _Batch:
    """Files' records and cursors committed together, a few thousand records at a time.

    One SQLite transaction per file made a history of thousands of small chat files spend more
    time committing than parsing. Each cursor still travels with its file's records in the same
    transaction (a crash loses or repeats nothing), files are merged in ``order``, and
    ``committed`` is called for each file once its transaction is done.
    """

    MAX_RECORDS = 20_000

    def __init__(self, source: WholeFileSource, ledger: Ledger, pricer: CostFunction, stats: ScanStats) -> None:
        self.source, self.ledger, self.pricer, self.stats = source, ledger, pricer, stats
        self.records: list[UsageRecord] = []
        self.cursors: list[Cursor] = []
        self.paths: list[Path] = []

    def add(self, path: Path, records: list[UsageRecord], cursor: Cursor) -> None:
        self.records.extend(records)
        self.cursors.append(cursor)
        self.paths.append(path)
        if len(self.records) >= self.MAX_RECORDS:
            self.flush()

    def flush(self) -> None:
        if not self.cursors:
            return
        result = self.ledger.commit(self.records, self.pricer, self.cursors)
        self.stats.new_requests += result.new_requests
        for path in self.paths:
            self.source.committed(path)
        self.records, self.cursors, self.paths = [], [], []


class WholeFileSource(BaseSource):
    """A source of the ``files`` kind. Subclasses set ``name``, ``env_var`` and ``suffixes``
    and implement ``files`` and ``parse``."""

    name: str
    env_var: str
    suffixes: tuple[str, ...]

    def __init__(self, roots: list[Path], explicit: bool) -> None:
        self.roots = roots
        self.explicit = explicit

    # -- what subclasses provide -------------------------------------------------------------

    def files(self) -> list[Path]:
        raise NotImplementedError

    def parse(self, path: Path) -> Parsed:
        """Every record of one file. Raises ``OSError`` when it cannot be read."""
        raise NotImplementedError

    def stamp(self, path: Path) -> Stamp:
        return stat_stamp(path)

    def relevant(self, path: Path) -> bool:
        """Whether a file named by a file event belongs to this source."""
        return path.name.endswith(self.suffixes) and any(_is_below(path, r) for r in self.roots)

    def committed(self, path: Path) -> None:
        """Called once the records ``parse`` gave for ``path`` are in the ledger."""

    def order(self, files: list[Path]) -> list[Path]:
        """The order files are committed in (a source whose files overlap picks the winner)."""
        return files

    # -- the driver ---------------------------------------------------------------------------

    def existing_roots(self) -> list[Path]:
        found = [r for r in self.roots if r.is_dir()]
        if self.explicit and not found:
            names = ", ".join(str(r) for r in self.roots)
            raise SourceError(self.name, f"{self.env_var} names no existing directory: {names}")
        return found

    def watches(self) -> list[Watch]:
        try:
            roots = self.existing_roots()
        except SourceError:
            return []  # the scan reports the missing root, named
        return [Watch(r, True, self.suffixes) for r in roots]

    def status(self) -> SourceStatus:
        try:
            roots = self.existing_roots()
            notes: list[str] = []
        except SourceError as exc:
            roots, notes = [], [str(exc)]
        return SourceStatus(
            name=self.name,
            detected=bool(roots),
            enabled=True,
            roots=[str(r) for r in (roots or self.roots)],
            files=len(self.files()) if roots else 0,
            notes=notes,
        )

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        stats = ScanStats(self.name)
        self.existing_roots()  # an explicit root that is missing fails the pass, named
        if paths is not None:
            candidates = self.order(sorted({p for p in paths if self.relevant(p)}))
        else:
            candidates = self.order(self.files())
        cursors = {c.path: c for c in ledger.cursors(self.name)}
        cutoff = since.timestamp() if since is not None else None
        batch = _Batch(self, ledger, pricer, stats)
        for path in candidates:
            try:
                stamp = self.stamp(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._error(stats, path, exc)
                continue
            if cutoff is not None and stamp.mtime_ns / 1e9 < cutoff:
                continue
            stats.files_seen += 1
            cur = cursors.get(str(path))
            if cur is not None and (cur.inode, cur.size, cur.mtime_ns) == (stamp.inode, stamp.size, stamp.mtime_ns):
                continue
            try:
                parsed = self.parse(path)
            except OSError as exc:
                self._error(stats, path, exc)
                continue
            if parsed.malformed:
                log.warning("%s: %d unreadable entr(y/ies) in %s skipped", self.name, parsed.malformed, path)
            for note in parsed.notes:
                log.info("%s: %s: %s", self.name, path, note)
            cursor = Cursor(
                self.name, str(path), stamp.inode, stamp.size, stamp.size, b"", parsed.malformed, stamp.mtime_ns
            )
            batch.add(path, parsed.records, cursor)
            stats.files_read += 1
            stats.bytes_read += stamp.size
            stats.records += len(parsed.records)
            stats.malformed += parsed.malformed
            if progress is not None:
                progress(stamp.size)
        batch.flush()
        return stats

    def _error(self, stats: ScanStats, path: Path, exc: OSError) -> None:
        stats.errors.append(f"{path}: {exc.strerror or exc}")
        stats.complete = False
        log.warning("%s: cannot read %s: %s", self.name, path, exc.strerror or exc)


def walk(roots: Iterable[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files below ``roots`` whose name ends with one of ``suffixes``, sorted; a root listed
    twice (or through a link) is walked once, links inside are not followed."""
    seen: set[str] = set()
    out: list[Path] = []
    for root in roots:
        real = os.path.realpath(root)
        if real in seen or not root.is_dir():
            continue
        seen.add(real)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            out.extend(Path(dirpath) / n for n in sorted(filenames) if n.endswith(suffixes))
    return out


def _is_below(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def roots_from_env(env: dict[str, str], var: str, default: str) -> tuple[list[Path], bool]:
    """Directories from a comma-list variable, or the default (``~`` is the env's HOME)."""
    from bridge.sources._base import expand_dir_list

    explicit = env.get(var, "").strip()
    if explicit:
        return expand_dir_list(explicit), True
    home = env.get("HOME") or os.path.expanduser("~")
    return [Path(home) / default], False
