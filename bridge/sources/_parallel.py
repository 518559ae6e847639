"""Read and parse files in a worker process while this process merges into the ledger.

A cold scan of a large history is half parsing (read, find, JSON) and half ledger work (merge,
SQLite). On a machine with two or more cores the parsing runs in one worker process, a few
files ahead, so both halves overlap. Nothing about exactly-once changes: the worker only reads
and parses; this process commits each file's records together with its cursor, in order. Small
scans (the incremental case) stay in-process, where a worker's start-up would cost more than it
saves.

The worker is a plain child process (``sys.executable``) fed over its stdin and answering on its
stdout, one pickled frame per task, in order. multiprocessing is not used: its pool needs a
resource-tracker process (13 MB more for the scan's process tree) and re-imports the CLI in the
child. Tasks are small (file names) and results are read in order, so neither side can block
the other on a full pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from bridge.record import record_from_tuple
from bridge.sources._base import log
from bridge.sources._tail import ChunkOutcome, ChunkResult, ReadPlan

_AHEAD_BYTES = 192 * 1024 * 1024  # file bytes submitted ahead (> a batch: see Batch.MAX_BYTES)

# What a worker returns per chunk: consumed bytes, malformed count, first malformed offset and
# why, the mark at the chunk's end, records as tuples (tuples pickle several times faster than
# dataclasses).
EncodedChunk = tuple[int, int, int | None, str | None, bytes | None, list[tuple[Any, ...]]]
# A worker reads a task of several files: (path, start, context) each; it returns, per file,
# its encoded chunks or the OSError that reading it raised.
Worker = Callable[[list[tuple[str, int, Any]]], list[list[EncodedChunk] | OSError]]
_TASK_BYTES = 16 * 1024 * 1024  # files per task: few round trips, the worker never starves
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCH_SECONDS = 1.0


def _die_with_parent(parent: int) -> None:
    """Worker start-up: end this worker when the process that started it dies, even by SIGKILL.

    A killed ``sync`` or ``run`` would otherwise leave the worker blocked for ever (writing
    results into a pipe nobody reads) and, through the descriptor it holds, multiprocessing's
    resource tracker too. Linux delivers SIGKILL on the parent's death (prctl); a watchdog
    thread covers other systems and the moment before the prctl took effect.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog alone
            pass
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(_WATCH_SECONDS)
        if os.getppid() != parent:  # re-parented: the parent is gone
            os._exit(1)


def _decode(chunks: list[EncodedChunk]) -> list[ChunkOutcome]:
    return [
        ChunkOutcome(ChunkResult([record_from_tuple(t) for t in recs], malformed, first, reason), consumed, mark)
        for consumed, malformed, first, reason, mark, recs in chunks
    ]


def _tasks(plans: Iterable[ReadPlan]) -> Iterator[list[ReadPlan]]:
    """Consecutive plans grouped into tasks of about ``_TASK_BYTES`` (order kept)."""
    task: list[ReadPlan] = []
    size = 0
    for plan in plans:
        task.append(plan)
        size += plan.size - plan.start
        if size >= _TASK_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task


class WorkerGone(RuntimeError):
    """The worker process ended (killed, out of memory) before answering a task."""


_FRAME = struct.Struct("<Q")
# The child's first frame is the parent's sys.path (so it imports the same code, tests included);
# then it serves tasks until its stdin closes.
_BOOT = (
    "import pickle,struct,sys;r=sys.stdin.buffer;(n,)=struct.unpack('<Q',r.read(8));"
    "sys.path[:]=pickle.loads(r.read(n));from bridge.sources._parallel import serve;serve()"
)


def _send(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)) + data)
    out.flush()


def _receive(inp: IO[bytes]) -> Any:
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (n,) = _FRAME.unpack(head)
    data = inp.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child's answers


def serve() -> None:
    """The worker's loop: each frame is (function, argument); the answer is ("ok", result) or
    ("error", exception)."""
    _die_with_parent(os.getppid())
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    while True:
        try:
            work, arg = _receive(inp)
        except EOFError:
            return
        try:
            answer: tuple[str, Any] = ("ok", work(arg))
        except Exception as exc:
            answer = ("error", exc)
        _send(out, answer)


class _Worker:
    """The child process. Tasks are written and answers read by threads of their own: the child
    never waits on a full pipe while this process merges a batch (it works ahead, as far as the
    tasks submitted), and a task frame larger than the pipe's buffer cannot block this process.
    Answers are unpickled here, in order, when asked for."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.inp, self.out = self.proc.stdin, self.proc.stdout
        self.tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.tasks.put(list(sys.path))
        self.answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.writer = threading.Thread(target=self._write, name="parse-worker-feed", daemon=True)
        self.reader = threading.Thread(target=self._read, name="parse-worker-answers", daemon=True)
        self.writer.start()
        self.reader.start()

    def _read(self) -> None:
        while True:
            head = self.out.read(_FRAME.size)
            data = self.out.read(_FRAME.unpack(head)[0]) if len(head) == _FRAME.size else b""
            if not data:
                self.answers.put(None)  # end of the child's output: it is gone
                return
            self.answers.put(data)

    def _write(self) -> None:
        while (item := self.tasks.get()) is not _STOP:
            try:
                _send(self.inp, item)
            except OSError:  # the child is gone: result() says so
                return

    def submit(self, work: Worker, items: list[tuple[str, int, Any]]) -> None:
        self.tasks.put((work, items))

    def result(self) -> list[list[EncodedChunk] | OSError]:
        data = self.answers.get()
        if data is None:
            raise WorkerGone(f"the parse worker ended ({self.proc.poll()})")
        kind, value = pickle.loads(data)  # noqa: S301 - our own child's answers
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self.tasks.put(_STOP)
        self.writer.join(5)
        with contextlib.suppress(OSError):
            self.inp.close()  # the child exits when its stdin closes
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)  # it ends at the end of the child's output
        with contextlib.suppress(OSError):
            self.out.close()


_STOP = object()


def read_in_worker(
    plans: Iterable[ReadPlan],
    work: Worker,
    context: Callable[[ReadPlan], Any],
    on_worker_death: Callable[[], None] | None = None,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[tuple[ReadPlan, list[ChunkOutcome] | OSError | None]]:
    """Yield each plan with its parsed chunks, the OSError reading it raised, or None when the
    worker is gone and the caller must read the plan itself; in order. ``on_worker_death`` is
    called once if the worker dies; ``while_starting`` once while the worker starts up (this
    process would only wait: e.g. load the price table meanwhile)."""
    log.debug("parsing files in a worker process")
    worker = _Worker()
    try:
        queue: deque[list[ReadPlan]] = deque()
        tasks = _tasks(plans)
        in_flight = 0

        def refill() -> None:
            # Keep the worker busy while this process commits a batch: stay ahead by bytes.
            nonlocal in_flight
            while in_flight < _AHEAD_BYTES:
                task = next(tasks, None)
                if task is None:
                    return
                queue.append(task)
                in_flight += sum(p.size - p.start for p in task)
                worker.submit(work, [(p.path, p.start, context(p)) for p in task if not p.touch_only])

        try:
            refill()
            if while_starting is not None:
                while_starting()
            while queue:
                task = queue[0]
                results = iter(worker.result())
                queue.popleft()
                in_flight -= sum(p.size - p.start for p in task)
                refill()
                for plan in task:
                    if plan.touch_only:
                        yield plan, []
                        continue
                    got = next(results)
                    yield plan, got if isinstance(got, OSError) else _decode(got)
        except WorkerGone:
            # The worker died (e.g. killed for memory). Nothing of the plans not yet yielded was
            # committed: the caller reads them and every later plan in its own process.
            log.warning("parse worker died; reading the remaining files in this process")
            if on_worker_death is not None:
                on_worker_death()
            for rest in [*queue, *tasks]:
                for plan in rest:
                    yield plan, None
    finally:
        worker.close()
