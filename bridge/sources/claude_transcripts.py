"""Claude Code transcripts: ``<root>/projects/**/*.jsonl``.

Where: ``CLAUDE_CONFIG_DIR`` (comma list; each a config dir or its ``projects/``) replaces the
defaults ``$XDG_CONFIG_HOME/claude`` (else ``~/.config/claude``) and ``~/.claude``. Files are
found recursively, subagent logs (``<session>/subagents/agent-*.jsonl``) included.

How a record parses: only assistant lines that carry ``message.usage`` count. Odd semantics,
all handled here or in the ledger:

* One API response is written as several lines (one per content block) sharing ``message.id``
  and ``requestId``; early lines carry a partial streaming ``output_tokens``. The dedup key is
  ``(message.id, requestId)`` across all files and roots; the ledger keeps the field-wise max,
  so only the increase is counted.
* A resumed or forked session copies earlier lines into a new file: same key, counted once.
* A sidechain (subagent, ``/btw``) file may replay a parent message with the same
  ``message.id`` and a new ``requestId``; ``message.id`` is the group key and the
  non-sidechain line wins.
* ``<synthetic>`` lines are app-made (zero usage) and skipped; lines without usage tokens too.
* Cache writes: when ``usage.cache_creation`` exists, writes are its 5m + 1h parts (the 1h
  part is priced at its own rate); else ``cache_creation_input_tokens``.
* Old (< 1.0.9) lines with ``costUSD`` keep their reported cost.
* A line without ``message.id`` cannot be matched with its copies; it is keyed by its bytes.
  Gateways that reuse one ``message.id`` without ``requestId`` collapse (documented limit).

What it yields: ``UsageRecord(source="claude_transcripts", provider=anthropic or the provider
the model name points to)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.errors import SourceError
from bridge.ledger import CostFunction, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord, collapse, record_to_tuple
from bridge.sources._base import (
    BaseSource,
    ProgressHook,
    ScanStats,
    SourceStatus,
    Watch,
    expand_dir_list,
    infer_provider,
    log,
)
from bridge.sources._claude_session import FileContext, file_context, with_start_cwd
from bridge.sources._registry import SourceSpec
from bridge.sources._tail import (
    SKIPPED_NOTE,
    Batch,
    ChunkOutcome,
    ChunkResult,
    ReadPlan,
    apply_read,
    iter_jsonl,
    needs_read,
    plan_read,
    read_chunks,
)

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.sources._parallel import EncodedChunk

NAME = "claude_transcripts"
# Lines outside these bounds are corrupt (no Claude Code before 2000 or after 2100).
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_MAX_REQUEST_USD = 10_000
UNKNOWN_MODEL = "unknown"  # for lines without message.model
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def default_roots(env: dict[str, str] | None = None) -> tuple[list[Path], bool]:
    """Config roots to read, and whether they were set explicitly by ``CLAUDE_CONFIG_DIR``."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if explicit:
        roots = [p.parent if p.name == "projects" else p for p in expand_dir_list(explicit)]
        return roots, True
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(xdg) / "claude", Path(os.path.expanduser("~")) / ".claude"], False


def _int(usage: dict[str, Any], key: str) -> int:
    v = usage.get(key, 0)
    if type(v) is int and v >= 0:  # the hot path: one type check
        return v
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"usage.{key} is not a non-negative integer: {v!r}")
    return v


def _tokens_checked(usage: dict[str, Any]) -> Tokens:
    """The careful path: every field validated, with the name of the bad one."""
    cache_creation = _int(usage, "cache_creation_input_tokens")
    one_hour = 0
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        five = _int(split, "ephemeral_5m_input_tokens")
        one_hour = _int(split, "ephemeral_1h_input_tokens")
        cache_creation = five + one_hour
    return Tokens(
        _int(usage, "input_tokens"),
        _int(usage, "output_tokens"),
        _int(usage, "cache_read_input_tokens"),
        cache_creation,
        one_hour,
    )


def _tokens(usage: dict[str, Any]) -> Tokens:
    """Token counts of a usage object; the common all-integers case costs a few lookups."""
    g = usage.get
    inp, out, read, write = (
        g("input_tokens", 0),
        g("output_tokens", 0),
        g("cache_read_input_tokens", 0),
        (g("cache_creation_input_tokens", 0)),
    )
    split = g("cache_creation")
    one_hour = 0
    if split is not None:
        if type(split) is not dict:
            return _tokens_checked(usage)
        five, one_hour = split.get("ephemeral_5m_input_tokens", 0), split.get("ephemeral_1h_input_tokens", 0)
        if type(five) is not int or type(one_hour) is not int or five < 0 or one_hour < 0:
            return _tokens_checked(usage)
        write = five + one_hour
    if (
        type(inp) is not int
        or type(out) is not int
        or type(read) is not int
        or type(write) is not int
        or inp < 0
        or out < 0
        or read < 0
        or write < 0
    ):
        return _tokens_checked(usage)
    return Tokens(inp, out, read, write, one_hour)


def parse_line(obj: Any, ctx: FileContext, line: bytes) -> UsageRecord | None:
    """One transcript line → a record, or None when the line carries no countable usage.

    Raises ``ValueError`` for a line that claims usage but is not well-formed.
    """
    if type(obj) is not dict:
        return None
    entry, sidechain = obj, obj.get("isSidechain") is True
    kind = obj.get("type")
    if kind != "assistant":
        mirrored = _mirrored_call(obj) if kind == "progress" else None
        if mirrored is None:
            return None
        entry, sidechain = mirrored, True  # a subagent's API call
    message = entry.get("message")
    if type(message) is not dict:
        return None
    usage = message.get("usage")
    if type(usage) is not dict:
        return None
    model = message.get("model")
    if model == "<synthetic>":
        return None
    if type(model) is not str or not model:
        # The tokens were still used: count them under a model with no price (cost unknown).
        model = UNKNOWN_MODEL
    tokens = _tokens(usage)
    if tokens.input == tokens.output == tokens.cache_read == tokens.cache_creation == 0:
        return None
    ts_raw = entry.get("timestamp")
    if type(ts_raw) is not str and entry is not obj:
        ts_raw = obj.get("timestamp")
    if type(ts_raw) is not str:
        raise ValueError("assistant line with usage has no timestamp")
    ts = datetime.fromisoformat(ts_raw)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {ts_raw!r}")
    if not _EARLIEST <= ts < _LATEST:
        # A year-1 or year-9999 time would break every later report and export (date overflow
        # in local time, OTLP start times): the line is dropped and counted, never stored.
        raise ValueError(f"timestamp {ts_raw!r} is outside 2000-01-01..2100-01-01")
    msg_id = message.get("id")
    req_id = entry.get("requestId")
    if type(msg_id) is str and msg_id:
        key = f"cc:{msg_id}:{req_id if type(req_id) is str else ''}"
        group: str | None = msg_id
    elif entry is not obj:
        return None  # a mirror without message.id cannot be matched with the subagent's own line
    else:
        key = "cc-line:" + hashlib.sha1(line, usedforsecurity=False).hexdigest()
        group = None
    cost: Decimal | None = None
    origin = CostOrigin.UNKNOWN
    raw_cost = entry.get("costUSD")
    if raw_cost is not None:
        # One request never costs more than this; a negative, NaN or huge amount is corruption
        # that would swamp (or overflow) every total it is added to.
        if type(raw_cost) not in (int, float) or not 0 <= raw_cost <= _MAX_REQUEST_USD:
            raise ValueError(f"costUSD {raw_cost!r} is not an amount between 0 and {_MAX_REQUEST_USD} USD")
        cost, origin = Decimal(str(raw_cost)), CostOrigin.REPORTED
    session = obj.get("sessionId")
    cwd = obj.get("cwd")
    return UsageRecord(
        NAME,
        infer_provider(model),
        model,
        ts,
        key,
        tokens,
        cost,
        origin,
        session if type(session) is str and session else ctx.session_id,
        ctx.start_cwd or (cwd if type(cwd) is str and cwd else ctx.slug),
        group,
        sidechain,
    )


def _mirrored_call(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The subagent line an ``agent_progress`` line of the parent session mirrors, or None.

    local-formats.md does not describe these lines; this is Claude Code's own shape as observed:
    ``{"type": "progress", "data": {"type": "agent_progress", "agentId": …, "message": {"type":
    "assistant", "message": {"id", "model", "usage", …}, "requestId", "uuid", "timestamp"}}}``.
    The mirrored call has the subagent line's key (message.id + requestId): it counts once
    with that line, and alone when the subagent's file is gone.
    """
    data = obj.get("data")
    if type(data) is not dict or data.get("type") != "agent_progress":
        return None
    inner = data.get("message")
    if type(inner) is not dict or inner.get("type") != "assistant":
        return None
    return inner


# Every usage object has "output_tokens"; a 15-byte needle is found several times faster than
# '"usage"' by CPython's fast search, and the hit lands inside the line we want.
_NEEDLE = b'"output_tokens"'
_CLOSE = ord("}")


def _chunk_parser(ctx: FileContext) -> Any:
    def parse(buf: bytes) -> ChunkResult:
        out = ChunkResult(records=[])
        find, rfind = buf.find, buf.rfind
        pos, n = 0, len(buf)
        while True:
            # Only lines that carry usage can count; most bytes (tool results) are skipped at
            # fast-search speed without being parsed.
            i = find(_NEEDLE, pos)
            if i < 0:
                break
            start = rfind(b"\n", 0, i) + 1
            end = find(b"\n", i)
            end = n if end < 0 else end
            pos = end + 1
            line = buf[start:end]
            if b'"assistant"' not in line:
                continue
            try:
                rec = parse_line(orjson.loads(line), ctx, line)
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                log.debug("malformed transcript line at chunk byte %d: %s", start, exc)
                if line.rstrip().endswith(b"}"):  # cut lines are counted by _count_cut_lines
                    _note_malformed(out, start, str(exc))
                continue
            if rec is not None:
                out.records.append(rec)
        _count_cut_lines(buf, out)
        return out

    return parse


def _note_malformed(out: ChunkResult, at: int, reason: str) -> None:
    if out.first_malformed_at is None or at < out.first_malformed_at:
        out.first_malformed_at, out.malformed_reason = at, reason[:200]
    out.malformed += 1


def _count_cut_lines(buf: bytes, out: ChunkResult) -> None:
    """Count lines that cannot be JSON objects because they do not end with ``}`` (a crash cut
    them short), without parsing the lines that carry no usage.

    Lines are long (tool results), so hopping from newline to newline with ``find`` (memchr)
    and looking at one byte costs little.
    """
    find = buf.find
    prev, end = 0, find(b"\n")
    while end >= 0:
        last = end - 1
        while last >= prev and buf[last] in b" \t\r":
            last -= 1
        if last >= prev and buf[last] != _CLOSE:
            _note_malformed(out, prev, "line cut short (not a whole JSON object)")
        prev, end = end + 1, find(b"\n", end + 1)


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
        found = []
        for r in self.roots:
            try:
                st = (r / "projects").stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if problems is not None:
                    problems.append(f"{r / 'projects'}: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                found.append(r)
        if self.explicit and not found:
            names = ", ".join(str(r) for r in self.roots)
            raise SourceError(NAME, f"CLAUDE_CONFIG_DIR has no directory with a projects/ folder: {names}")
        return found

    def walk(self) -> tuple[list[Path], list[str]]:
        """Every transcript file, and the entries that could not be looked at (path: reason)."""
        problems: list[str] = []
        roots = self.existing_roots(problems)
        return iter_jsonl(roots, errors=problems), problems

    def files(self) -> list[Path]:
        return self.walk()[0]

    def watches(self) -> list[Watch]:
        return [Watch(r / "projects", True, (".jsonl",)) for r in self.existing_roots()]

    def status(self) -> SourceStatus:
        try:
            files, notes = self.walk()
            roots = self.existing_roots()
        except SourceError as exc:
            roots, files, notes = [], [], [str(exc)]
        notes.extend(st for st in map(_stat, files) if isinstance(st, str))
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
                todo.append((path, cur, st))
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
                plans, _read_files, lambda p: file_context(Path(p.path)), worker_died
            )
        else:
            results = ((p, None) for p in plans)
        skipped: str | None = None
        for plan, got in results:
            outcome = _read_here(plan) if got is None else got
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
            ledger.set_state(NAME, SKIPPED_NOTE, skipped)  # shown by `tokenbridge sources`
        return stats


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


def _stat(path: Path) -> os.stat_result | str | None:
    """A listed file's stat; None when it is gone; why it cannot be read (naming it) otherwise."""
    try:
        st = path.stat()
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


def _read_here(plan: ReadPlan) -> list[ChunkOutcome] | OSError:
    try:
        ctx = with_start_cwd(file_context(Path(plan.path)), plan.path)
        return list(read_chunks(plan.path, plan.start, _chunk_parser(ctx)))
    except OSError as exc:
        return exc


def _read_file(path: str, start: int, ctx: FileContext) -> list[EncodedChunk]:
    """Read and parse one file; records as tuples (the worker's wire format)."""
    parse = _chunk_parser(with_start_cwd(ctx, path))
    # Streamed duplicates are merged here, per chunk (a chunk's records travel with its cursor),
    # so the ledger's process decodes and merges about half as many records.
    return [
        (
            o.consumed,
            o.result.malformed,
            o.result.first_malformed_at,
            o.result.malformed_reason,
            o.mark,
            [record_to_tuple(r) for r in collapse(o.result.records).values()],
        )
        for o in read_chunks(path, start, parse)
    ]


def _read_files(items: list[tuple[str, int, FileContext]]) -> list[list[EncodedChunk] | OSError]:
    """Worker-process side of a parallel scan: one task of several files."""
    out: list[list[EncodedChunk] | OSError] = []
    for path, start, ctx in items:
        try:
            out.append(_read_file(path, start, ctx))
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
