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
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
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
from bridge.sources._registry import SourceSpec
from bridge.sources._tail import (
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


@dataclass(frozen=True, slots=True)
class _FileContext:
    session_id: str | None
    project: str | None


def _context(path: Path) -> _FileContext:
    """Session and project from the path: ``projects/<slug>/<session>.jsonl`` or
    ``projects/<slug>/<session>/subagents/agent-*.jsonl``."""
    parts = path.parts
    try:
        i = len(parts) - 1 - parts[::-1].index("projects")
    except ValueError:
        return _FileContext(None, None)
    rel = parts[i + 1 :]
    project = rel[0] if len(rel) > 1 else None
    session = None
    if len(rel) == 2:
        session = Path(rel[1]).stem
    elif len(rel) > 2:
        session = rel[1]
    return _FileContext(session, project)


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


def parse_line(obj: Any, ctx: _FileContext, line: bytes) -> UsageRecord | None:
    """One transcript line → a record, or None when the line carries no countable usage.

    Raises ``ValueError`` for a line that claims usage but is not well-formed.
    """
    if type(obj) is not dict or obj.get("type") != "assistant":
        return None
    message = obj.get("message")
    if type(message) is not dict:
        return None
    usage = message.get("usage")
    if type(usage) is not dict:
        return None
    model = message.get("model")
    if model == "<synthetic>":
        return None
    if type(model) is not str or not model:
        raise ValueError("assistant line with usage has no message.model")
    tokens = _tokens(usage)
    if tokens.input == tokens.output == tokens.cache_read == tokens.cache_creation == 0:
        return None
    ts_raw = obj.get("timestamp")
    if type(ts_raw) is not str:
        raise ValueError("assistant line with usage has no timestamp")
    ts = datetime.fromisoformat(ts_raw)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {ts_raw!r}")
    msg_id = message.get("id")
    req_id = obj.get("requestId")
    if type(msg_id) is str and msg_id:
        key = f"cc:{msg_id}:{req_id if type(req_id) is str else ''}"
        group: str | None = msg_id
    else:
        key = "cc-line:" + hashlib.sha1(line, usedforsecurity=False).hexdigest()
        group = None
    cost: Decimal | None = None
    origin = CostOrigin.UNKNOWN
    raw_cost = obj.get("costUSD")
    if raw_cost is not None and type(raw_cost) in (int, float) and raw_cost >= 0:
        try:
            cost, origin = Decimal(str(raw_cost)), CostOrigin.REPORTED
        except InvalidOperation:
            cost = None
    session = obj.get("sessionId")
    cwd = obj.get("cwd")
    speed = usage.get("speed")
    search, fetch = _server_tools(usage.get("server_tool_use"))
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
        cwd if type(cwd) is str and cwd else ctx.project,
        group,
        obj.get("isSidechain") is True,
        speed=speed if type(speed) is str and speed else None,
        web_search_requests=search,
        web_fetch_requests=fetch,
    )


def _server_tools(stu: Any) -> tuple[int, int]:
    """(web search, web fetch) request counts of ``usage.server_tool_use``; a count that is not a
    non-negative integer makes the line malformed (it would be priced)."""
    if stu is None:
        return 0, 0
    if type(stu) is not dict:
        raise ValueError("usage.server_tool_use is not an object")
    out = []
    for name in ("web_search_requests", "web_fetch_requests"):
        n = stu.get(name, 0)
        if n is None:
            n = 0
        if type(n) is not int or n < 0:
            raise ValueError(f"usage.server_tool_use.{name} is not a count: {n!r}")
        out.append(n)
    return out[0], out[1]


# Every usage object has "output_tokens"; a 15-byte needle is found several times faster than
# '"usage"' by CPython's fast search, and the hit lands inside the line we want.
_NEEDLE = b'"output_tokens"'
_CLOSE = ord("}")


def _chunk_parser(ctx: _FileContext) -> Any:
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
                    _note_malformed(out, start)
                continue
            if rec is not None:
                out.records.append(rec)
        _count_cut_lines(buf, out)
        return out

    return parse


def _note_malformed(out: ChunkResult, at: int) -> None:
    if out.first_malformed_at is None or at < out.first_malformed_at:
        out.first_malformed_at = at
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
            _note_malformed(out, prev)
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

    def existing_roots(self) -> list[Path]:
        found = [r for r in self.roots if (r / "projects").is_dir()]
        if self.explicit and not found:
            names = ", ".join(str(r) for r in self.roots)
            raise SourceError(NAME, f"CLAUDE_CONFIG_DIR has no directory with a projects/ folder: {names}")
        return found

    def files(self) -> list[Path]:
        return iter_jsonl(self.existing_roots())

    def watches(self) -> list[Watch]:
        return [Watch(r / "projects", True, (".jsonl",)) for r in self.existing_roots()]

    def status(self) -> SourceStatus:
        try:
            roots = self.existing_roots()
            notes: list[str] = []
        except SourceError as exc:
            roots, notes = [], [str(exc)]
        return SourceStatus(
            name=NAME,
            detected=bool(roots),
            enabled=True,
            roots=[str(r) for r in (roots or self.roots)],
            files=len(iter_jsonl(roots)) if roots else 0,
            notes=notes,
        )

    def _todo(
        self, ledger: Ledger, since: datetime | None, paths: Collection[Path] | None = None
    ) -> tuple[list[tuple[Path, Any, Any]], int]:
        if paths is not None:
            # File events named the changed files: no tree walk (the incremental fast path).
            cursors = {str(p): ledger.cursor(NAME, str(p)) for p in paths}
            candidates = sorted(p for p in paths if p.suffix == ".jsonl" and "projects" in p.parts)
        else:
            cursors = {c.path: c for c in ledger.cursors(NAME)}
            candidates = self.files()
        todo, pending = [], 0
        cutoff = since.timestamp() if since is not None else None
        for path in candidates:
            try:
                st = path.stat()
            except FileNotFoundError:
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
        todo, pending = self._todo(ledger, since, paths)
        stats.files_seen = len(todo)
        plans = _plans(todo, stats)  # lazy: planning overlaps the parse worker's start-up
        batch = Batch(ledger, pricer)
        if _worth_a_worker(pending):
            from bridge.sources._parallel import read_in_worker  # multiprocessing: only when used

            results: Iterable[tuple[ReadPlan, list[ChunkOutcome] | OSError | None]] = read_in_worker(
                plans, _read_files, lambda p: _context(Path(p.path))
            )
        else:
            results = ((p, None) for p in plans)
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
        batch.flush()
        stats.new_requests = batch.new_requests
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


def _read_error(stats: ScanStats, path: Path, exc: OSError) -> None:
    stats.errors.append(f"{path}: {exc.strerror or exc}")
    log.warning("cannot read %s: %s", path, exc.strerror or exc)


def _read_here(plan: ReadPlan) -> list[ChunkOutcome] | OSError:
    try:
        return list(read_chunks(plan.path, plan.start, _chunk_parser(_context(Path(plan.path)))))
    except OSError as exc:
        return exc


def _read_file(path: str, start: int, ctx: _FileContext) -> list[EncodedChunk]:
    """Read and parse one file; records as tuples (the worker's wire format)."""
    parse = _chunk_parser(ctx)
    # Streamed duplicates are merged here, per chunk (a chunk's records travel with its cursor),
    # so the ledger's process decodes and merges about half as many records.
    return [
        (
            o.consumed,
            o.result.malformed,
            o.result.first_malformed_at,
            [record_to_tuple(r) for r in collapse(o.result.records).values()],
        )
        for o in read_chunks(path, start, parse)
    ]


def _read_files(items: list[tuple[str, int, _FileContext]]) -> list[list[EncodedChunk] | OSError]:
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
