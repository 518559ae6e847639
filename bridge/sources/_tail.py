"""Incremental, crash-safe reading of append-only JSON-lines files.

A file is read by byte offset through its last newline only: a partial last line (a response
still streaming) is left for the next pass, never half-parsed. Each chunk's records and the
advanced cursor are committed together, so a crash loses nothing and repeats nothing.

Truncation and replacement are detected from the inode, a shrinking size, a changed head (the
first bytes of the file as last seen) or a changed mark (a hash of the bytes just before the
cursor: an in-place rewrite that keeps the head and grows changes them). The file is then
re-read from the start; the ledger's per-request max-registers make the re-read add only what
is really new.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

try:  # the blake2 module alone: hashlib would start OpenSSL too (2 ms of every one-off sync)
    from _blake2 import blake2b
except ImportError:  # another Python implementation
    from hashlib import blake2b

from bridge.ledger import CostFunction, Cursor, Ledger
from bridge.record import UsageRecord

log = logging.getLogger("tokenbridge.sources")

_HEAD_BYTES = 256
_MARK_BYTES = 4096  # hashed just before the cursor: where a rewrite that keeps the head shows
# A cursor's ``head`` blob: the tag, the mark, then the head bytes. Cursors stored before the mark
# existed hold the bare head (a JSON line never starts with NUL), and still load.
_MARK_TAG = b"\x00mark1"
_MARK_LEN = 16
# source_state key (per source) of the last skipped line's "<path> byte <n>: <why>"; shown in
# `tokenbridge sources` next to the skipped-line count.
SKIPPED_NOTE = "last_skipped"
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class ChunkResult:
    """What a parser found in one chunk of complete lines."""

    records: list[UsageRecord]
    malformed: int = 0
    first_malformed_at: int | None = None  # byte offset inside the chunk
    malformed_reason: str | None = None  # why the first malformed line was skipped


ChunkParser = Callable[[bytes], ChunkResult]


class Batch:
    """Records and the cursors that produced them, committed together in one transaction.

    Committing once per few thousand records (not once per file or chunk) keeps the cost of
    SQLite transactions low on histories made of many small files; a cursor always travels
    with its records, so a crash anywhere loses or repeats nothing.
    """

    MAX_RECORDS = 50_000
    # Larger batches write each index page of a big ledger fewer times (its keys are random);
    # the parse worker works this far ahead (``_parallel._AHEAD_BYTES``) while a batch commits.
    # The first batches are smaller (doubling up to the maximum): a long first scan has its
    # first files in the ledger early.
    MAX_BYTES = 128 * 1024 * 1024
    FIRST_BYTES = 16 * 1024 * 1024

    def __init__(self, ledger: Ledger, pricer: CostFunction, fallback: str | None = None) -> None:
        """``fallback``: the dedup-key prefix of the source's fallback records (``Ledger.commit``)."""
        self.ledger, self.pricer, self.fallback = ledger, pricer, fallback
        self.records: list[UsageRecord] = []
        self.cursors: dict[str, Cursor] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.bytes = 0
        self.new_requests = 0
        self.limit = self.FIRST_BYTES

    def add(
        self,
        records: Sequence[UsageRecord],
        cursor: Cursor,
        nbytes: int,
        state: dict[tuple[str, str], str] | None = None,
    ) -> None:
        """``state``: per-source values that belong to this cursor position (a parser's running
        totals), committed in the same transaction as the cursor."""
        self.records.extend(records)
        self.cursors[cursor.path] = cursor
        if state:
            self.state.update(state)
        self.bytes += nbytes
        if len(self.records) >= self.MAX_RECORDS or self.bytes >= self.limit:
            self.flush()
            self.limit = min(2 * self.limit, self.MAX_BYTES)

    def flush(self) -> None:
        if not self.records and not self.cursors:
            return
        result = self.ledger.commit(
            self.records, self.pricer, list(self.cursors.values()), self.state or None, self.fallback
        )
        self.new_requests += result.new_requests
        self.records, self.cursors, self.state, self.bytes = [], {}, {}, 0


@dataclass(slots=True)
class FileScan:
    """Outcome of reading one file."""

    bytes_read: int = 0
    records: int = 0
    new_requests: int = 0
    malformed: int = 0
    restarted: bool = False
    malformed_note: str | None = None  # "<path> byte <n>: <why>" of the first line skipped


def _head(fh: BinaryIO, size: int) -> bytes:
    fh.seek(0)
    return fh.read(min(size, _HEAD_BYTES))


def fingerprint(before: bytes) -> bytes:
    """The mark of a cursor: a hash of the last ``_MARK_BYTES`` of the bytes before it."""
    return blake2b(before[-_MARK_BYTES:], digest_size=_MARK_LEN).digest()


def _mark_at(fh: BinaryIO, offset: int) -> bytes:
    back = max(0, offset - _MARK_BYTES)
    fh.seek(back)
    return fingerprint(fh.read(offset - back))


def _encode_head(head: bytes, mark: bytes | None) -> bytes:
    return head if mark is None else _MARK_TAG + mark + head


def _decode_head(blob: bytes) -> tuple[bytes, bytes | None]:
    """(head, mark) of a stored cursor; mark None for a cursor of the older format."""
    if blob.startswith(_MARK_TAG):
        rest = blob[len(_MARK_TAG) :]
        return rest[_MARK_LEN:], rest[:_MARK_LEN]
    return blob, None


def needs_read(cursor: Cursor | None, st: os.stat_result) -> bool:
    """Cheap check without opening the file: anything new or changed since the cursor?"""
    if cursor is None:
        return st.st_size > 0
    return st.st_ino != cursor.inode or st.st_size != cursor.offset or st.st_mtime_ns != cursor.mtime_ns


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Where to read a file from, decided against its cursor (in the ledger's process)."""

    source: str
    path: str
    start: int
    inode: int
    size: int
    mtime_ns: int
    head: bytes
    malformed: int
    touch_only: bool  # nothing to read, but the cursor must record a rewrite or a new mtime
    mark: bytes | None = None  # fingerprint of the bytes before ``start``

    def cursor(self, offset: int, malformed: int, mark: bytes | None = None) -> Cursor:
        """The cursor at ``offset``; ``mark`` is the fingerprint there (this plan's own at
        ``start``). Without one the cursor only has the head to detect rewrites with."""
        if mark is None and offset == self.start:
            mark = self.mark
        blob = _encode_head(self.head, mark)
        return Cursor(self.source, self.path, self.inode, self.size, offset, blob, malformed, self.mtime_ns)


def plan_read(source: str, path: Path, cursor: Cursor | None) -> ReadPlan | None:
    """Compare the file with its cursor: read on from the cursor, or from 0 after a rewrite."""
    start, malformed, restarted, mark = 0, 0, False, fingerprint(b"")
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            head = _head(fh, st.st_size)
            if cursor is not None:
                old_head, old_mark = _decode_head(cursor.head)
                same_file = (
                    cursor.inode == st.st_ino
                    and st.st_size >= cursor.offset
                    and head[: len(old_head)] == old_head
                    # Same size as when the cursor was stored but touched since: an append always
                    # grows the file, so this is an in-place rewrite (even if a partial last line
                    # was pending).
                    and not (st.st_size == cursor.size and st.st_mtime_ns != cursor.mtime_ns)
                )
                if same_file and cursor.offset > 0:
                    here = _mark_at(fh, cursor.offset)
                    same_file = old_mark is None or here == old_mark  # None: an older cursor
                    mark = here
    except FileNotFoundError:
        return None
    if cursor is not None:
        if same_file:
            start, malformed = cursor.offset, cursor.malformed
        else:
            mark = fingerprint(b"")
            restarted = True
            log.info("%s was truncated or replaced; re-reading it from the start (nothing is counted twice)", path)
    if start >= st.st_size:
        touch = restarted or (cursor is not None and cursor.mtime_ns != st.st_mtime_ns)
        if not touch:
            return None
    else:
        touch = False
    return ReadPlan(source, str(path), start, st.st_ino, st.st_size, st.st_mtime_ns, head, malformed, touch, mark)


def read_chunks(path: str, start: int, parse: ChunkParser, chunk_bytes: int = CHUNK_BYTES) -> Iterator[ChunkOutcome]:
    """Parse complete lines from ``start`` on, chunk by chunk; a partial last line is left unread.
    Each outcome carries the mark (``fingerprint``) of the bytes up to its end."""
    for complete, mark in complete_chunks(path, start, chunk_bytes):
        yield ChunkOutcome(parse(complete), len(complete), mark)


def complete_chunks(path: str, start: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bytes]]:
    """Chunks of complete lines from ``start`` on (a partial last line is left unread), each with
    the mark (``fingerprint``) of the file's bytes up to its end."""
    with open(path, "rb") as fh:  # noqa: PTH123 - plain open: also runs in worker processes
        back = max(0, start - _MARK_BYTES)
        fh.seek(back)
        before = fh.read(start - back)
        fh.seek(start)
        carry = b""
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                return
            data = carry + block if carry else block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            if cut + 1 == len(data):  # the usual end of a file: no copy of the whole chunk
                complete, carry = data, b""
            else:
                complete, carry = data[: cut + 1], data[cut + 1 :]
            before = complete[-_MARK_BYTES:] if len(complete) >= _MARK_BYTES else (before + complete)[-_MARK_BYTES:]
            yield complete, fingerprint(before)


def complete_spans(
    path: str, start: int, buf: bytearray, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[bytearray, int, bytes]]:
    """``complete_chunks`` read into one reused buffer: (buffer, end, mark), the chunk being
    ``buffer[:end]``, valid until the next item. A fresh 8 MB buffer per chunk costs a page
    fault per 4 KB: reading into the same one is a third cheaper (the parse worker's path)."""
    with open(path, "rb") as fh:  # noqa: PTH123 - plain open: also runs in worker processes
        back = max(0, start - _MARK_BYTES)
        fh.seek(back)
        before = fh.read(start - back)
        fh.seek(start)
        have = 0  # bytes of a partial line kept at the buffer's start
        while True:
            if len(buf) < have + chunk_bytes:  # a line longer than a chunk, or a new buffer
                buf.extend(bytes(have + chunk_bytes - len(buf)))
            with memoryview(buf) as view:
                n = fh.readinto(view[have : have + chunk_bytes])
            if not n:
                return
            total = have + n
            cut = buf.rfind(b"\n", 0, total)
            if cut < 0:
                have = total
                continue
            end = cut + 1
            before = bytes(buf[end - _MARK_BYTES : end]) if end >= _MARK_BYTES else (before + buf[:end])[-_MARK_BYTES:]
            yield buf, end, fingerprint(before)
            buf[: total - end] = buf[end:total]  # the partial line moves to the front
            have = total - end


@dataclass(slots=True)
class ChunkOutcome:
    result: ChunkResult
    consumed: int
    mark: bytes | None = None  # fingerprint of the file's bytes up to the end of this chunk


def apply_read(
    batch: Batch,
    plan: ReadPlan,
    outcomes: Iterable[ChunkOutcome],
    on_bytes: Callable[[int], None] | None = None,
    state_of: Callable[[], dict[tuple[str, str], str]] | None = None,
) -> FileScan:
    """Add each chunk's records with the cursor just past it, in order. ``state_of`` (a stateful
    parser's state after the chunk it just parsed) travels with that cursor."""
    scan = FileScan(restarted=plan.touch_only)
    if plan.touch_only:
        batch.add([], plan.cursor(plan.start, plan.malformed), 0)
        return scan
    offset, malformed = plan.start, plan.malformed
    for out in outcomes:
        result = out.result
        if result.malformed:
            if scan.malformed_note is None:
                at = offset + (result.first_malformed_at or 0)
                scan.malformed_note = f"{plan.path} byte {at}: {result.malformed_reason or 'malformed'}"
                if malformed == 0:  # once per file, not once per pass
                    log.warning("malformed line(s) skipped, first: %s", scan.malformed_note)
            malformed += result.malformed
            scan.malformed += result.malformed
        offset += out.consumed
        batch.add(
            result.records, plan.cursor(offset, malformed, out.mark), out.consumed, state_of() if state_of else None
        )
        scan.records += len(result.records)
        scan.bytes_read += out.consumed
        if on_bytes is not None:
            on_bytes(out.consumed)
    return scan


def iter_jsonl(roots: Sequence[Path], pattern_dir: str = "projects", errors: list[str] | None = None) -> list[Path]:
    """``jsonl_paths`` as ``Path`` objects."""
    return [Path(p) for p in jsonl_paths(roots, pattern_dir, errors)]


def jsonl_paths(roots: Sequence[Path], pattern_dir: str = "projects", errors: list[str] | None = None) -> list[str]:
    """Every ``*.jsonl`` below ``root/pattern_dir`` for each root, recursively.

    Roots that are the same directory (a symlink, or listed twice) are walked once; the walk
    does not follow links, so no file is listed twice within a root. A directory that cannot be
    listed (no permission, a symlink loop) is skipped and named in ``errors``, never silently;
    one that vanished during the walk held nothing left to read.
    """

    def unlistable(exc: OSError) -> None:
        if errors is not None and not isinstance(exc, FileNotFoundError):
            errors.append(f"{exc.filename}: {exc.strerror or exc}")

    seen_roots: set[str] = set()
    out: list[str] = []  # strings: a Path per file costs more than the walk (an incremental sync)
    for root in roots:
        base = root / pattern_dir
        real = os.path.realpath(base)
        if real in seen_roots:
            continue
        seen_roots.add(real)
        for dirpath, dirnames, filenames in os.walk(base, onerror=unlistable, followlinks=False):
            dirnames.sort()
            out.extend(os.path.join(dirpath, name) for name in sorted(filenames) if name.endswith(".jsonl"))
    return out
