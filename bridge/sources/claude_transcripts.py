"""Claude Code transcripts: ``<root>/projects/**/*.jsonl``.

Where: ``CLAUDE_CONFIG_DIR`` (comma list; each a config dir or its ``projects/``) replaces the
defaults ``$XDG_CONFIG_HOME/claude`` (else ``~/.config/claude``) and ``~/.claude``. Files are
found recursively, subagent logs (``<session>/subagents/agent-*.jsonl``) included. An entry that
cannot be looked at (no permission, a symlink loop, not a regular file) is skipped and named in
the pass's errors and in ``tokenbridge sources``; such a pass is not complete.

How a line parses: ``_claude_lines``; which session and project a file belongs to:
``_claude_session``. Across lines, all handled in the ledger:

* One API response is written as several lines (one per content block) sharing ``message.id``
  and ``requestId``; early lines carry a partial streaming ``output_tokens``. The dedup key is
  ``cc-req:{requestId}`` (``cc:{message.id}:`` without one) across all files and roots, shared
  with Claude Code's api_request events (``claude_code_events``); the ledger keeps the
  field-wise max, so only the increase is counted.
* A resumed or forked session copies earlier lines into a new file: same key, counted once.
* A sidechain (subagent, ``/btw``) file may replay a parent message with the same
  ``message.id`` and a new ``requestId``; ``message.id`` is the group key and the
  non-sidechain line wins with its own values.
* An ``agent_progress`` line mirrors a subagent's call under the subagent line's key: counted
  once with it, or alone when the subagent's file is gone.
* Gateways that reuse one ``message.id`` without ``requestId`` collapse (documented limit).

What it yields: ``UsageRecord(source="claude_transcripts", provider=anthropic or the provider
the model name points to)``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import SourceError
from bridge.ledger import CostFunction, Ledger
from bridge.record import collapse_tuples
from bridge.sources._base import (
    BaseSource,
    ProgressHook,
    ScanStats,
    SourceStatus,
    Watch,
    expand_dir_list,
    log,
)
from bridge.sources._claude_fast import SOURCE
from bridge.sources._claude_lines import chunk_parser, parse_tuples
from bridge.sources._claude_session import FileContext, file_context, with_start_cwd
from bridge.sources._registry import SourceSpec
from bridge.sources._tail import (
    SKIPPED_NOTE,
    Batch,
    ChunkOutcome,
    ReadPlan,
    apply_read,
    complete_spans,
    jsonl_paths,
    needs_read,
    plan_read,
    read_chunks,
)

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.sources._parallel import EncodedChunk

NAME = SOURCE  # one name: _claude_lines stamps it on every record


def default_roots(env: dict[str, str] | None = None) -> tuple[list[Path], bool]:
    """Config roots to read, and whether they were set explicitly by ``CLAUDE_CONFIG_DIR``."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if explicit:
        roots = [p.parent if p.name == "projects" else p for p in expand_dir_list(explicit)]
        return roots, True
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(xdg) / "claude", Path(os.path.expanduser("~")) / ".claude"], False


class ClaudeTranscripts(BaseSource):
    """The Claude Code transcripts source."""

    name = NAME

    def __init__(self, roots: list[Path] | None = None, env: dict[str, str] | None = None) -> None:
        if roots is None:
            roots, explicit = default_roots(env)
        else:
            explicit = True
        self.explicit = explicit
        self.roots = roots

    def existing_roots(self, problems: list[str] | None = None) -> list[Path]:
        """Roots with a ``projects/`` directory. A ``projects/`` that exists but cannot be
        looked at (no permission, a symlink loop) is named in ``problems``, not ignored."""
        found, broken = [], []
        for r in self.roots:
            try:
                st = (r / "projects").stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                broken.append(f"{r / 'projects'}: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                found.append(r)
        if problems is not None:
            problems.extend(broken)
        if self.explicit and not found:
            names = ", ".join(str(r) for r in self.roots)
            why = f" ({'; '.join(broken)})" if broken else ""
            raise SourceError(NAME, f"CLAUDE_CONFIG_DIR has no directory with a projects/ folder: {names}{why}")
        return found

    def walk(self) -> tuple[list[str], list[str]]:
        """Every transcript file, and the entries that could not be looked at (path: reason)."""
        problems: list[str] = []
        roots = self.existing_roots(problems)
        return jsonl_paths(roots, errors=problems), problems

    def files(self) -> list[Path]:
        return [Path(p) for p in self.walk()[0]]

    def watches(self) -> list[Watch]:
        return [Watch(r / "projects", True, (".jsonl",)) for r in self.existing_roots()]

    def status(self) -> SourceStatus:
        notes: list[str] = []
        try:
            roots = self.existing_roots(notes)
        except SourceError as exc:
            roots, notes = [], [str(exc)]
        files = jsonl_paths(roots, errors=notes) if roots else []
        notes.extend(st for st in map(_stat, files) if isinstance(st, str))  # named, not skipped silently
        return SourceStatus(
            name=NAME,
            detected=bool(roots),
            enabled=True,
            roots=[str(r) for r in (roots or self.roots)],
            files=len(files),
            notes=notes,
        )

    def _todo(
        self,
        ledger: Ledger,
        since: datetime | None,
        paths: Collection[Path] | None = None,
        stats: ScanStats | None = None,
    ) -> tuple[list[tuple[Path, Any, Any]], int]:
        """Files with something new, and how many bytes; entries that cannot be looked at go to
        ``stats`` (each named, the pass then incomplete) and the rest goes on."""
        problems: list[str] = []
        candidates: list[str] | list[Path]
        if paths is not None:
            # File events named the changed files: no tree walk (the incremental fast path).
            cursors = {str(p): ledger.cursor(NAME, str(p)) for p in paths}
            candidates = sorted(p for p in paths if p.suffix == ".jsonl" and "projects" in p.parts)
        else:
            cursors = {c.path: c for c in ledger.cursors(NAME)}
            candidates, problems = self.walk()
        todo, pending = [], 0
        cutoff = since.timestamp() if since is not None else None
        for path in candidates:
            st = _stat(path)
            if st is None:
                if stats is not None and paths is None:
                    stats.complete = False  # listed a moment ago: it vanished during the pass
                continue
            if isinstance(st, str):
                problems.append(st)
                continue
            # --days skips whole files not touched since the cutoff; their cursors stay put, so
            # a later full pass still reads them (filtering records instead would lose them).
            if cutoff is not None and st.st_mtime < cutoff:
                continue
            cur = cursors.get(str(path))
            if needs_read(cur, st):
                todo.append((Path(path), cur, st))
                same = cur is not None and cur.inode == st.st_ino and st.st_size >= cur.offset
                pending += st.st_size - (cur.offset if same and cur else 0)
        if stats is not None:
            for problem in problems:
                _problem(stats, problem)
        return todo, pending

    def pending_bytes(self, ledger: Ledger, since: datetime | None = None) -> int:
        return self._todo(ledger, since)[1]

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        stats = ScanStats(NAME)
        todo, pending = self._todo(ledger, since, paths, stats)
        stats.files_seen = len(todo)
        plans = _plans(todo, stats)  # lazy: planning overlaps the parse worker's start-up
        batch = Batch(ledger, pricer)
        if _worth_a_worker(pending):
            from bridge.sources._parallel import read_in_worker  # multiprocessing: only when used

            def worker_died() -> None:
                # Its files are read here instead, but a pass that lost its worker is not
                # trusted as the first complete one: the next pass decides.
                stats.complete = False

            results: Iterable[tuple[ReadPlan, list[ChunkOutcome] | OSError | None]] = read_in_worker(
                plans, _read_files, lambda p: file_context(Path(p.path)), worker_died, getattr(pricer, "warm", None)
            )
        else:
            results = ((p, None) for p in plans)
        skipped: str | None = None
        fast = pending >= _FAST_MIN_BYTES  # the msgspec path pays for its import on big scans only
        for plan, got in results:
            outcome = _read_here(plan, fast) if got is None else got
            if isinstance(outcome, OSError):
                _read_error(stats, Path(plan.path), outcome)
                continue
            fs = apply_read(batch, plan, outcome, progress)
            stats.files_read += 1
            stats.bytes_read += fs.bytes_read
            stats.records += fs.records
            stats.malformed += fs.malformed
            skipped = fs.malformed_note or skipped
        batch.flush()
        stats.new_requests = batch.new_requests
        if skipped is not None:
            ledger.set_state(NAME, SKIPPED_NOTE, skipped, bump=False)  # shown by `tokenbridge sources`
        return stats


_FAST_MIN_BYTES = 16 * 1024 * 1024
_BUFFER = bytearray()  # the parse worker's read buffer, allocated once (a fresh one page-faults)


def _worth_a_worker(pending: int) -> bool:
    """Whether ``pending`` bytes justify the parse worker (see ``_parallel``): big scans only."""
    threshold = int(os.environ.get("TOKENBRIDGE_PARALLEL_MIN_BYTES") or 48 * 1024 * 1024)
    return pending >= threshold and (os.cpu_count() or 1) >= 2


def _plans(todo: list[tuple[Path, Any, Any]], stats: ScanStats) -> Iterator[ReadPlan]:
    for path, cur, _st in todo:
        try:
            plan = plan_read(NAME, path, cur)
        except OSError as exc:
            _read_error(stats, path, exc)
            continue
        if plan is not None:
            yield plan
        elif not path.exists():
            stats.complete = False  # vanished between the walk and its reading


def _stat(path: Path | str) -> os.stat_result | str | None:
    """A listed file's stat; None when it is gone; why it cannot be read (naming it) otherwise."""
    try:
        st = os.stat(path)  # noqa: PTH116 - the walk lists strings: a Path per file costs more
    except FileNotFoundError:
        return None
    except OSError as exc:  # EACCES (a directory without search permission), ELOOP
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"  # opening a FIFO would block the scan
    return st


def _problem(stats: ScanStats, message: str) -> None:
    """One entry skipped: named in the stats (and the source's health), the pass incomplete."""
    stats.errors.append(message)
    stats.complete = False
    log.warning("cannot read %s", message)


def _read_error(stats: ScanStats, path: Path, exc: OSError) -> None:
    _problem(stats, f"{path}: {exc.strerror or exc}")


def _read_here(plan: ReadPlan, fast: bool) -> list[ChunkOutcome] | OSError:
    try:
        ctx = with_start_cwd(file_context(Path(plan.path)), plan.path)
        return list(read_chunks(plan.path, plan.start, chunk_parser(ctx, fast)))
    except OSError as exc:
        return exc


def _read_file(path: str, start: int, ctx: FileContext, buf: bytearray) -> list[EncodedChunk]:
    """Read and parse one file (into ``buf``, reused); records as tuples (the worker's wire format)."""
    ctx = with_start_cwd(ctx, path)
    out: list[EncodedChunk] = []
    for data, end, mark in complete_spans(path, start, buf):
        tuples, res = parse_tuples(data, ctx, fast=True, end=end)
        # Streamed duplicates are merged here, per chunk (a chunk's records travel with its
        # cursor), so the ledger's process decodes and merges about half as many records.
        out.append((end, res.malformed, res.first_malformed_at, res.malformed_reason, mark, collapse_tuples(tuples)))
    return out


def _read_files(items: list[tuple[str, int, FileContext]]) -> list[list[EncodedChunk] | OSError]:
    """Worker-process side of a parallel scan: one task of several files."""
    out: list[list[EncodedChunk] | OSError] = []
    for path, start, ctx in items:
        try:
            out.append(_read_file(path, start, ctx, _BUFFER))
        except OSError as exc:
            out.append(exc)
    return out


def _build(settings: Settings) -> ClaudeTranscripts:
    return ClaudeTranscripts(env=settings.env)


SPECS = (
    SourceSpec(
        NAME,
        "tailed",
        _build,
        "Claude Code transcripts (projects/**/*.jsonl)",
        group="claude",
        settings=("CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME"),
        order=10,
        provider="anthropic",
    ),
)
