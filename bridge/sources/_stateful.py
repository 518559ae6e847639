"""Tailed JSON-lines sources whose parser carries state from line to line.

Some tools write usage that only makes sense against earlier lines of the same file: Codex's
running totals (a turn's usage is the advance of the total), OpenClaw's current model (set by a
``model_change`` line, used by later messages). Reading such a file from a cursor in the middle
needs that state as it was at the cursor, so the state is stored in the ledger (``source_state``,
key ``file:<path>``) in the same transaction as the cursor and the records of the same chunk: a
crash or restart mid-file resumes with exactly the state of the last committed byte.

A file read from byte 0 (new, or rewritten) always starts from a fresh state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from bridge.ledger import CostFunction, Cursor, Ledger
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, log
from bridge.sources._tail import Batch, ChunkResult, apply_read, needs_read, plan_read, read_chunks

_CLOSE = ord("}")


class LineParser(Protocol):
    """Parses complete lines of one file and remembers what later lines need."""

    def parse(self, chunk: bytes) -> ChunkResult: ...

    def state(self) -> str:
        """The state after the last parsed chunk, serialised (JSON)."""
        ...


class StatefulTailSource(BaseSource):
    """A tailed source: ``files()`` lists its files, ``parser()`` builds a file's parser."""

    name: str
    # Dedup-key prefix of records that stand in for sessions without primary rows (Ledger.commit).
    fallback_prefix: str | None = None

    def files(self) -> list[Path]:
        raise NotImplementedError

    def accepts(self, path: Path) -> bool:
        """Whether a path named by a file event is one of this source's files."""
        raise NotImplementedError

    def parser(self, path: Path, state: str | None) -> LineParser:
        """A parser for ``path``; ``state`` is what ``LineParser.state`` returned at the cursor
        (None when the file is read from its start)."""
        raise NotImplementedError

    def state_key(self, path: Path) -> str:
        return f"file:{path}"

    def _todo(
        self, ledger: Ledger, since: datetime | None, paths: Collection[Path] | None
    ) -> tuple[list[tuple[Path, Cursor | None]], int]:
        if paths is not None:
            candidates = sorted(p for p in paths if self.accepts(p))
            cursors = {str(p): ledger.cursor(self.name, str(p)) for p in candidates}
        else:
            candidates = self.files()
            cursors = {c.path: c for c in ledger.cursors(self.name)}
        cutoff = since.timestamp() if since is not None else None
        todo: list[tuple[Path, Cursor | None]] = []
        pending = 0
        for path in candidates:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            # --days skips whole untouched files; their cursors stay put for a later full pass.
            if cutoff is not None and st.st_mtime < cutoff:
                continue
            cur = cursors.get(str(path))
            if needs_read(cur, st):
                todo.append((path, cur))
                same = cur is not None and cur.inode == st.st_ino and st.st_size >= cur.offset
                pending += st.st_size - (cur.offset if same and cur else 0)
        return todo, pending

    def pending_bytes(self, ledger: Ledger, since: datetime | None = None) -> int:
        return self._todo(ledger, since, None)[1]

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        stats = ScanStats(self.name)
        todo, _pending = self._todo(ledger, since, paths)
        stats.files_seen = len(todo)
        batch = Batch(ledger, pricer, self.fallback_prefix)
        for path, cur in todo:
            try:
                plan = plan_read(self.name, path, cur)
                if plan is None:
                    continue
                key = (self.name, self.state_key(path))
                stored = ledger.state(*key) if plan.start > 0 else None
                parser = self.parser(path, stored)
                fs = apply_read(
                    batch,
                    plan,
                    read_chunks(plan.path, plan.start, parser.parse),
                    progress,
                    lambda p=parser, k=key: {k: p.state()},  # type: ignore[misc]
                )
            except OSError as exc:
                stats.errors.append(f"{path}: {exc.strerror or exc}")
                log.warning("cannot read %s: %s", path, exc.strerror or exc)
                continue
            stats.files_read += 1
            stats.bytes_read += fs.bytes_read
            stats.records += fs.records
            stats.malformed += fs.malformed
        batch.flush()
        stats.new_requests = batch.new_requests
        return stats


def walk(base: Path, recursive: bool, keep: Callable[[str], bool]) -> list[Path]:
    """Files below ``base`` (sorted, links not followed) whose name passes ``keep(name)``."""
    out: list[Path] = []
    if not base.is_dir():
        return out
    if not recursive:
        try:
            entries = sorted(base.iterdir())
        except OSError:
            return out
        return [p for p in entries if keep(p.name) and p.is_file()]
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        out.extend(Path(dirpath) / n for n in sorted(filenames) if keep(n))
    return out


def candidate_lines(buf: bytes, needles: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """(start, end) of every line of ``buf`` holding one of ``needles``, in file order.

    Most bytes of agent transcripts are tool output on lines that carry no usage: finding the
    needles with one fast search each skips them without splitting or copying them.
    """
    found: set[tuple[int, int]] = set()
    n = len(buf)
    for needle in needles:
        pos = 0
        while (i := buf.find(needle, pos)) >= 0:
            start = buf.rfind(b"\n", 0, i) + 1
            end = buf.find(b"\n", i)
            end = n if end < 0 else end
            found.add((start, end))
            pos = end + 1
    return sorted(found)


def candidate_lines_while(
    buf: bytes, needles: tuple[bytes, ...], early: tuple[bytes, ...], wanted: Callable[[], bool]
) -> Iterator[tuple[int, int]]:
    """``candidate_lines(buf, needles + early)``, except that lines holding only an ``early``
    needle are looked for only while ``wanted()`` is true (checked before each line is given).

    For needles that matter only until a file's header was read (a session's first line): once
    it was, the rest of the buffer is not searched for them, which saves a whole pass per
    needle. The search for them is bounded by the next ``needles`` line, so lines come out in
    file order and a line holding both kinds comes out once.
    """
    n = len(buf)
    pos = 0
    for start, end in [*candidate_lines(buf, needles), (n, n)]:
        while pos < start and early and wanted():
            found = [(buf.rfind(b"\n", 0, i) + 1, i) for e in early if (i := buf.find(e, pos, start)) >= 0]
            if not found:
                break
            line_start = min(found)[0]
            line_end = buf.find(b"\n", line_start)
            line_end = n if line_end < 0 else line_end
            yield line_start, line_end
            pos = line_end + 1
        if start < n:
            yield start, end
        pos = max(pos, end + 1)


def note_malformed(out: ChunkResult, at: int) -> None:
    if out.first_malformed_at is None or at < out.first_malformed_at:
        out.first_malformed_at = at
    out.malformed += 1


def count_cut_lines(buf: bytes, out: ChunkResult) -> None:
    """Count non-empty lines that cannot be JSON objects because they do not end with ``}`` (a
    crash cut them short), hopping from newline to newline without parsing anything."""
    find = buf.find
    prev, end = 0, find(b"\n")
    while end >= 0:
        last = end - 1
        while last >= prev and buf[last] in b" \t\r":
            last -= 1
        if last >= prev and buf[last] != _CLOSE:
            note_malformed(out, prev)
        prev, end = end + 1, find(b"\n", end + 1)
