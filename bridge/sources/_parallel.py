"""Read and parse files in a worker process while this process merges into the ledger.

A cold scan of a large history is half parsing (read, find, JSON) and half ledger work (merge,
SQLite). On a machine with two or more cores the parsing runs in one worker process, a few
files ahead, so both halves overlap. Nothing about exactly-once changes: the worker only reads
and parses; this process commits each file's records together with its cursor, in order. Small
scans (the incremental case) stay in-process, where a worker's start-up would cost more than it
saves.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bridge.record import record_from_tuple
from bridge.sources._base import log
from bridge.sources._tail import ChunkOutcome, ChunkResult, ReadPlan

_AHEAD_BYTES = 256 * 1024 * 1024  # file bytes submitted ahead; results held are ~1% of that

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
    # spawn, not fork: the daemon has threads (exporter, file watcher) and forking them is unsafe.
    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        queue: deque[tuple[list[ReadPlan], Future[list[list[EncodedChunk] | OSError]]]] = deque()
        tasks = _tasks(plans)
        in_flight = 0

        def refill() -> None:
            # Keep the worker busy while this process commits a batch: stay ahead by bytes.
            nonlocal in_flight
            while in_flight < _AHEAD_BYTES:
                task = next(tasks, None)
                if task is None:
                    return
                items = [(p.path, p.start, context(p)) for p in task if not p.touch_only]
                queue.append((task, pool.submit(work, items)))
                in_flight += sum(p.size - p.start for p in task)

        refill()
        if while_starting is not None:
            while_starting()
        while queue:
            task, fut = queue.popleft()
            in_flight -= sum(p.size - p.start for p in task)
            try:
                results = iter(fut.result())
            except BrokenProcessPool:
                # The worker died (e.g. killed for memory). Nothing of these plans was
                # committed: the caller reads them and every later plan in its own process.
                log.warning("parse worker died; reading the remaining files in this process")
                if on_worker_death is not None:
                    on_worker_death()
                for rest in [task, *(t for t, _ in queue), *tasks]:
                    for plan in rest:
                        yield plan, None
                return
            refill()
            for plan in task:
                if plan.touch_only:
                    yield plan, []
                    continue
                got = next(results)
                yield plan, got if isinstance(got, OSError) else _decode(got)
