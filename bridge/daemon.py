"""``tokenbridge run``: watch the sources' files, ingest on change, export periodically.

Idle cost is near zero: file events (inotify/FSEvents through watchdog) wake the loop; without
events it only wakes for a slow safety rescan. SIGTERM and SIGINT stop it cleanly with a last
ingest and a final export flush.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bridge import backfill
from bridge._rows import EVENTS_SOURCE
from bridge.app import LazyPricer, ingest, reprice_if_needed, scan_one
from bridge.config import Settings
from bridge.errors import TokenbridgeError
from bridge.export import BridgeExporter
from bridge.ledger import Ledger
from bridge.receiver import EventReceiver, check_auth
from bridge.sources import Source, build_sources

log = logging.getLogger("tokenbridge.daemon")

PRICES = "<price table>"  # a wake-up mark: the refreshed price table was stored
POLL_S = 5.0  # when file watches cannot be set up (inotify watch limit): poll instead
DEBOUNCE_S = 0.05  # a streamed response writes its lines in a burst: read them in one pass


class _Wakeup:
    """Collects, per source, which files saw events since the last pass (None = rescan all)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.dirty: dict[str, set[Path] | None] = {}
        self._lock = threading.Lock()

    def mark(self, source: str, path: Path | None = None) -> None:
        with self._lock:
            if path is None:
                self.dirty[source] = None
            elif source not in self.dirty or self.dirty[source] is not None:
                self.dirty.setdefault(source, set()).add(path)  # type: ignore[union-attr]
        self.event.set()

    def take(self) -> dict[str, set[Path] | None]:
        # Clear before swapping, under the lock: a mark() landing after the swap sets the event
        # again (clearing after the swap could erase its wakeup and leave it waiting for the
        # safety rescan).
        with self._lock:
            self.event.clear()
            dirty, self.dirty = self.dirty, {}
        return dirty


# Events that can mean new content. Opens and no-write closes are left out: the bridge's own
# reads produce them, and reacting to them made every read of stats-cache.json wake the next
# read, forever (a busy loop instead of a near-zero idle cost).
_CONTENT_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})


def _observer(sources: list[Source], wake: _Wakeup) -> Any:
    from watchdog import events as ev
    from watchdog.observers import Observer

    wanted: list[type[ev.FileSystemEvent]] = [
        ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileDeletedEvent, ev.FileClosedEvent,
        ev.DirCreatedEvent, ev.DirModifiedEvent, ev.DirMovedEvent, ev.DirDeletedEvent,
    ]  # fmt: skip

    class Handler(ev.FileSystemEventHandler):
        def __init__(self, source: str, suffixes: tuple[str, ...]) -> None:
            self.source, self.suffixes = source, suffixes

        def on_any_event(self, event: ev.FileSystemEvent) -> None:
            if event.event_type not in _CONTENT_EVENTS:
                return
            paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
            if event.is_directory:
                wake.mark(self.source)  # a new or moved directory: rescan this source
                return
            for p in paths:
                if p.endswith(self.suffixes):
                    wake.mark(self.source, Path(p))

    obs = Observer()
    for s in sources:
        for w in s.watches():
            if w.path.is_dir():
                obs.schedule(Handler(s.name, w.suffixes), str(w.path), recursive=w.recursive, event_filter=wanted)
    obs.daemon = True
    obs.start()
    return obs


def run(settings: Settings, prometheus_host: str = "127.0.0.1", show_progress: bool = True, http: Any = None) -> int:
    """The daemon's loop; ``http`` (a ``bridge.web.WebServer``) is served beside it when given."""
    stop = threading.Event()
    wake = _Wakeup()

    def stop_now(name: str) -> None:
        log.info("received %s: final ingest and export", name)
        stop.set()
        wake.event.set()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Not Event.set() here: the handler runs on the main thread, which may be inside Event.wait() holding that
        # event's lock at this instant; set() would then deadlock on it (seen as a SIGTERM ignored under load).
        name = signal.Signals(signum).name
        threading.Thread(target=stop_now, args=(name,), name="tokenbridge-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sources = build_sources(settings)
    receiving = settings.events_port is not None and any(s.name == EVENTS_SOURCE for s in sources)
    if receiving:
        check_auth(settings.events_host, settings.events_token)  # a receiver open to the network: refuse to start
    auto = backfill.Auto(settings.env, settings.include_session_id)
    with Ledger.open(settings.state_dir, check=True) as ledger:
        pricer = LazyPricer(settings)
        pricer.warm()  # a long-lived process: load the price table now, not on the first new line
        reprice_if_needed(ledger, pricer)
        exporter = BridgeExporter(
            otlp=settings.otlp,
            prometheus_port=settings.prometheus_port,
            prometheus_host=prometheus_host,
            interval_s=settings.interval_s,
            include_session_id=settings.include_session_id,
            include_project=settings.include_project,
            env=settings.env,
            instance_id=ledger.instance_id(),
            ledger_path=ledger.path,
            team=settings.team,
        )
        rescan_s = settings.rescan_s
        if http is not None:
            http.start()
        receiver = _start_receiver(settings, wake) if receiving else None
        prices = _start_price_refresh(settings, wake)
        try:
            observer = _observer(sources, wake)
        except OSError as exc:
            # e.g. fs.inotify.max_user_watches reached: keep working by polling.
            log.warning("cannot watch files (%s); polling every %.0fs instead", exc.strerror or exc, POLL_S)
            observer, rescan_s = None, POLL_S
        try:
            try:
                _report(ingest(ledger, sources, pricer, show_progress=show_progress))
            except Exception as exc:  # keep watching: the next pass retries what failed
                log.warning("first ingest failed: %s; retrying on the next pass", exc)
            # History Prometheus lacks, at its true timestamps, before the first export claims a
            # start time for a new series (bridge/backfill.py: the seam).
            auto.at_start(ledger)
            exporter.refresh(ledger)
            log.info("watching %d source(s); exporting every %gs", len(sources), settings.interval_s)
            last_full = time.monotonic()
            while not stop.is_set():
                timeout = _next_wait(ledger, sources, last_full + rescan_s - time.monotonic())
                woke = wake.event.wait(max(timeout, 0.0))
                if stop.is_set():
                    break
                if woke:
                    stop.wait(DEBOUNCE_S)
                dirty = wake.take()
                pushed = EVENTS_SOURCE in dirty  # committed by the receiver's own connection
                if PRICES in dirty and pricer.reload_if_changed():  # a refreshed price table
                    log.info("pricing new requests with the refreshed price table")
                    reprice_if_needed(ledger, pricer)
                    pushed = True
                full = time.monotonic() - last_full >= rescan_s
                now = time.time()
                if full:
                    last_full = time.monotonic()
                    todo = [s for s in sources if _on_rescan(s.due_in(ledger, now))]
                else:
                    todo = [s for s in sources if s.name in dirty or _is_due(s.due_in(ledger, now))]
                _pass(ledger, todo, pricer, exporter, {} if full else dirty, auto, changed=pushed)
            due = [s for s in sources if _on_rescan(s.due_in(ledger, time.time()))]
            _pass(ledger, due, pricer, exporter, None, auto)
        finally:
            if observer is not None:
                observer.stop()
            if receiver is not None:
                receiver.stop()
            if prices is not None:
                prices.stop()
            if http is not None:
                http.stop()
            exporter.flush()
            exporter.shutdown()
    return 0


def _is_due(due_in: float | None) -> bool:
    return due_in is not None and due_in <= 0


def _on_rescan(due_in: float | None) -> bool:
    """Whether a source joins a full pass: file sources always; a scheduled (polled) source only
    when due, so the safety rescan never polls a provider early or inside its Retry-After."""
    return due_in is None or due_in <= 0


def _next_wait(ledger: Ledger, sources: list[Source], until_rescan: float) -> float:
    """Seconds to sleep: until the safety rescan or the first polled source that is due."""
    wait = until_rescan
    now = time.time()
    for s in sources:
        due = s.due_in(ledger, now)
        if due is not None:
            wait = min(wait, due)
    return wait


def _pass(
    ledger: Ledger,
    sources: list[Source],
    pricer: Any,
    exporter: BridgeExporter,
    paths: dict[str, set[Path] | None] | None = None,
    auto: backfill.Auto | None = None,
    changed: bool = False,
) -> None:
    """Ingest ``sources`` (only the changed files where events named them), then refresh the export
    when this pass changed the ledger or ``changed`` says another connection did."""
    before = ledger.generation
    for s in sources:
        try:
            _report([scan_one(ledger, s, pricer, paths=(paths or {}).get(s.name))])
        except Exception as exc:  # one bad source never stops the others
            log.warning("%s: scan failed: %s", s.name, exc)
    if changed or ledger.generation != before:
        if auto is not None:  # a new series' history at its true time, before its first export
            auto.new_series(ledger)
        exporter.refresh(ledger)
        pricer.save()


def _start_receiver(settings: Settings, wake: _Wakeup) -> EventReceiver | None:
    """The events receiver (bridge/receiver.py), for an enabled claude_code_events source; None when
    off or its port is taken (the rest of the daemon keeps working; the collector retries, then drops
    what it cannot deliver)."""
    if settings.events_port is None:
        return None
    from bridge.web import is_loopback

    try:
        receiver = EventReceiver(
            lambda: Ledger.open(settings.state_dir),
            LazyPricer(settings),  # its own: the daemon's pricer belongs to the main thread
            settings.events_host,
            settings.events_port,
            on_commit=lambda: wake.mark(EVENTS_SOURCE),
            token=settings.events_token,
        )
        receiver.start()
    except TokenbridgeError as exc:
        log.warning("%s; Claude Code's events are not received (set TOKENBRIDGE_EVENTS_PORT)", exc)
        return None
    if not is_loopback(settings.events_host):
        log.info("the events receiver listens on %s and requires its token (TOKENBRIDGE_EVENTS_TOKEN)", receiver.url)
    return receiver


def _start_price_refresh(settings: Settings, wake: _Wakeup) -> Any:
    """genai-prices' updater, storing what it fetches (bridge/price_data.py); None when opted out."""
    if not settings.prices_refresh:
        return None
    from bridge import price_data

    updater = price_data.refresher(settings.state_dir, settings.prices_url, on_update=lambda: wake.mark(PRICES))
    updater.start()  # its own thread: the first fetch never delays the first ingest
    return updater


def _report(results: list[Any]) -> None:
    for r in results:
        if r.failure is not None:
            log.warning("%s: scan failed: %s", r.source, r.failure)
