"""The application core: one ingest pipeline for every source, used by the CLI, the daemon and
the HTTP view. Nothing here imports the CLI; the CLI and the daemon import this.

A pass is: build the selected sources from the registry, scan each (one failing source never
stops the others), record each source's health in the ledger (readable by other processes),
give a price to rows that waited for one, and save the rate cache.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge import config
from bridge._ratecache import tokens_cost
from bridge.errors import ConfigError, LedgerError, TokenbridgeError
from bridge.ledger import Ledger
from bridge.sources import ScanStats, Source, build_sources
from bridge.sources._tail import SKIPPED_NOTE

log = logging.getLogger("tokenbridge")
_PROGRESS_MIN_BYTES = 64 * 1024 * 1024


class LazyPricer:
    """Prices requests without loading the price table (a 0.2 s import) when it can.

    Rates already resolved in an earlier run come from the state directory's rate cache; the
    table is loaded only for a model seen for the first time (or after prices changed), and in a
    long-lived daemon once at start (``warm``).
    """

    def __init__(self, settings: config.Settings) -> None:
        self._settings = settings
        self._pricer: Any = None
        self._cache: Any = None
        self._surcharges: Any = None
        self._warned: set[tuple[str, str]] = set()
        self._table = ""  # the price table's identity when it was loaded (bridge.price_data)
        self._memo: dict[tuple[str, str], Any] = {}  # rates found in the rate cache, by (provider, model)

    def _get(self) -> Any:
        if self._pricer is None:
            from bridge import price_data
            from bridge.pricing import Pricer

            log.debug("loading the price table")
            self._table = price_data.identity(self._settings.state_dir)
            price_data.install(self._settings.state_dir)  # a refreshed table, else the bundled one
            self._pricer = Pricer(self.overrides_path(), table=self._table)
        return self._pricer

    def reload_if_changed(self) -> bool:
        """Price with the stored table from now on if it changed since it was loaded (a refresh by
        ``tokenbridge run``); returns whether it did."""
        from bridge import price_data

        if self._pricer is None or price_data.identity(self._settings.state_dir) == self._table:
            return False
        self._pricer, self._cache, self._memo = None, None, {}  # the memoised rates were the old table's
        self._get()
        return True

    def _rates(self) -> Any:
        if self._cache is None:
            from bridge._ratecache import RateCache

            self._cache = RateCache(self._settings.state_dir / "rates.json", self.inputs())
        return self._cache

    def overrides_path(self) -> Path:
        return self._settings.prices_path or config.default_overrides_path()

    def warm(self) -> None:
        self._get()

    def cost(self, provider: str, model: str, tokens: Any, at: Any = None, extras: Any = None) -> Any:
        base = self._base_cost(provider, model, tokens, at)
        if extras is None:
            return base
        # Fast mode and server tools on top of the standard cost, the same rule as the price
        # table's own path (the rate cache holds standard rates only).
        if self._surcharges is None:
            from bridge import surcharges

            self._surcharges = surcharges.load(self.overrides_path())
        return self._surcharges.apply(base, model, extras)

    def _base_cost(self, provider: str, model: str, tokens: Any, at: Any) -> Any:
        rates = self._memo.get((provider, model))
        if rates is not None:  # the common case: a model priced a moment ago
            return tokens_cost(rates, tokens)
        hit, rates = self._rates().get(provider, model)
        if hit:
            if rates is not None:
                self._memo[(provider, model)] = rates
                return tokens_cost(rates, tokens)
            if (provider, model) not in self._warned:  # same words as the price table's warning
                self._warned.add((provider, model))
                log.warning(
                    "no price for model %r (provider %r): its cost stays unknown; add a [[model]] entry to %s",
                    model, provider, self.overrides_path(),
                )  # fmt: skip
            return None
        pricer = self._get()
        cost = pricer.cost(provider, model, tokens, at)
        cacheable, plain = pricer.plain_rates(provider, model)
        if cacheable:
            self._rates().put(provider, model, plain)
            if plain is None:
                self._warned.add((provider, model))  # the price table has warned already
        return cost

    def save(self) -> None:
        if self._cache is not None:
            self._cache.save()

    def fingerprint(self) -> str:
        return str(self._get().fingerprint())

    def inputs(self) -> str:
        """What the prices depend on, read without loading the table: the package version, the
        rules version and the override file's identity. Unchanged inputs mean unchanged prices."""
        from bridge._ratecache import RULES_VERSION, package_version

        path = self.overrides_path()
        try:
            st = path.stat()
            file_id = f"{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            file_id = "-"
        from bridge import price_data

        table = price_data.identity(self._settings.state_dir)
        return f"{package_version()}|{RULES_VERSION}|{path}|{file_id}|{table}"


def resolve_selection(only: Sequence[str] | None) -> tuple[str, ...] | None:
    """Source names for ``--source`` values (source or group names); None when not given."""
    if not only:
        return None
    from bridge.sources import _registry

    try:
        return _registry.resolve(tuple(only))
    except ValueError as exc:
        raise ConfigError(
            "--source", f"unknown source {exc.args[0]!r} (known: {', '.join(_registry.selectors())})"
        ) from None


def select_sources(settings: config.Settings, only: Sequence[str] | None = None) -> list[Source]:
    """The sources a command runs: ``only`` (source or group names) or the enabled ones."""
    return build_sources(settings, resolve_selection(only))


def _error_kind(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return str(kind) if kind else type(exc).__name__


def scan_one(
    ledger: Ledger,
    source: Source,
    pricer: Any,
    since: datetime | None = None,
    progress: Any = None,
    paths: Any = None,
) -> ScanStats:
    """One source's pass: never raises for the source's own failures (they are logged, kept in
    the stats and in the source's health); a broken ledger still raises."""
    try:
        stats = source.scan(ledger, pricer, since, progress, paths)
    except LedgerError:
        raise
    except (TokenbridgeError, OSError, ValueError) as exc:
        # Reported by the caller (one line in the CLI, a warning in the daemon).
        ledger.record_health(source.name, _error_kind(exc), str(exc))
        return ScanStats(source.name, errors=[str(exc)], complete=False, failure=exc)
    if not stats.attempted:
        return stats
    if stats.errors:
        ledger.record_health(source.name, "read_error", stats.errors[-1])
    else:
        ledger.record_health(source.name)
    if since is None and paths is None and stats.complete and not stats.errors:
        mark_scanned(ledger, source)
    return stats


def mark_scanned(ledger: Ledger, source: Source) -> None:
    """Remember that ``source`` had one complete pass over everything (state ``scanned``): a
    source whose rule depends on another's coverage waits for it (the stats cache waits for the
    transcripts)."""
    if ledger.state(source.name, "scanned") is None:
        ledger.set_state(source.name, "scanned", "1")


def ingest(
    ledger: Ledger,
    sources: Sequence[Source],
    pricer: Any,
    since: datetime | None = None,
    show_progress: bool = False,
) -> list[ScanStats]:
    """One pass over ``sources``; a progress bar on a terminal when there is a lot to read."""
    results = []
    threshold = int(os.environ.get("TOKENBRIDGE_PROGRESS_MIN_BYTES", _PROGRESS_MIN_BYTES))
    # Sizing the work walks the tree: only worth it when a bar can be shown.
    pending = sum(s.pending_bytes(ledger, since) for s in sources) if show_progress and sys.stderr.isatty() else 0
    if pending and pending >= threshold:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),  # stdout stays clean for scripts
        ) as bar:
            task = bar.add_task("scanning history", total=pending)
            for s in sources:
                results.append(scan_one(ledger, s, pricer, since, lambda n: bar.advance(task, n)))
    else:
        for s in sources:
            results.append(scan_one(ledger, s, pricer, since))
    return results


def reprice_if_needed(ledger: Ledger, pricer: Any) -> None:
    """Give a price to rows stored as unknown once the prices may have changed."""
    if not ledger.unpriced_requests():
        return  # nothing waits for a price: do not even load the price table
    inputs = pricer.inputs()
    if ledger.state("pricing", "inputs") == inputs:
        return  # same package, same override file: same prices (no table load)
    fp = pricer.fingerprint()
    if ledger.state("pricing", "fingerprint") != fp:
        n = ledger.reprice_unknown(pricer)
        if n:
            log.info("priced %d request(s) whose model had no price before", n)
        ledger.set_state("pricing", "fingerprint", fp)
    ledger.set_state("pricing", "inputs", inputs)


@dataclass(slots=True)
class SyncResult:
    """What ``sync`` did."""

    stats: list[ScanStats] = field(default_factory=list)
    exported_to: str | None = None
    export_ok: bool | None = None

    @property
    def new_requests(self) -> int:
        return sum(r.new_requests for r in self.stats)


def sync(
    settings: config.Settings,
    only: Sequence[str] | None = None,
    since: datetime | None = None,
    export: bool = True,
    show_progress: bool = False,
    trigger: str = "cli",
) -> SyncResult:
    """One ingest pass over the selected sources, then one export of the ledger's totals."""
    sources = select_sources(settings, only)
    out = SyncResult()
    started = time.time()
    with Ledger.open(settings.state_dir) as ledger:
        pricer = LazyPricer(settings)
        out.stats = ingest(ledger, sources, pricer, since, show_progress=show_progress)
        reprice_if_needed(ledger, pricer)
        pricer.save()
        if export and settings.otlp:
            out.exported_to, out.export_ok = export_once(settings, ledger)
        record_pass(ledger, trigger, started, out.stats, out.export_ok)
    return out


SYNC_LOG_SIZE = 20


def record_pass(
    ledger: Ledger, trigger: str, started: float, stats: Sequence[ScanStats], export_ok: bool | None = None
) -> None:
    """Keep the last ``SYNC_LOG_SIZE`` passes in the ledger (readable by every process)."""
    entry = {
        "at": datetime.fromtimestamp(started, UTC).isoformat(),
        "trigger": trigger,
        "durationMs": round((time.time() - started) * 1000),
        "sources": [s.source for s in stats],
        "newRequests": sum(s.new_requests for s in stats),
        "errors": [f"{s.source}: {e}" for s in stats for e in s.errors],
        "exported": export_ok,
    }
    log_ = sync_log(ledger)
    log_.insert(0, entry)
    ledger.set_state("app", "sync_log", json.dumps(log_[:SYNC_LOG_SIZE]), bump=False)


def sync_log(ledger: Ledger) -> list[dict[str, Any]]:
    """The last passes, newest first."""
    raw = ledger.state("app", "sync_log")
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def export_once(settings: config.Settings, ledger: Ledger) -> tuple[str, bool]:
    """Push the ledger's totals once (a one-shot process cannot serve a scrape endpoint)."""
    from bridge.export import BridgeExporter

    exporter = BridgeExporter(
        otlp=True,
        prometheus_port=None,
        interval_s=3600,
        include_session_id=settings.include_session_id,
        include_project=settings.include_project,
        env=settings.env,
        instance_id=ledger.instance_id(),
        ledger_path=ledger.path,
        team=settings.team,
    )
    exporter.refresh(ledger)
    ok = exporter.flush()
    exporter.shutdown()
    return exporter.target, ok


def source_rows(settings: config.Settings, views: bool = True) -> list[dict[str, Any]]:
    """What ``tokenbridge sources`` shows: each registered source's state, from the ledger too.
    ``views``: also each source's other views of its usage (OpenClaw's gateway RPC, read live:
    a network call, left out of the web page)."""
    from bridge.sources import _registry

    rows = []
    enabled = {s.name for s in build_sources(settings)}
    with Ledger.open(settings.state_dir) as ledger:
        health = ledger.health()
        for spec in _registry.specs():
            source = spec.factory(settings)
            st = source.status()
            info = ledger.source_summary(spec.name)
            h = health.get(spec.name)
            notes = list(st.notes)
            skipped = ledger.state(spec.name, SKIPPED_NOTE) if info["skipped"] else None
            if skipped:
                notes.append(f"last skipped line: {skipped}")
            rows.append(
                {
                    "name": st.name,
                    "kind": spec.kind,
                    "group": spec.group,
                    "detected": st.detected,
                    "enabled": spec.name in enabled and st.enabled,
                    "roots": st.roots,
                    "files": st.files,
                    "lastEvent": info["last_event"],
                    "requests": info["requests"],
                    "skippedLines": info["skipped"],
                    "unknownModels": info["unknown_models"],
                    "errors": notes,
                    "health": None
                    if h is None
                    else {
                        "lastAttempt": _iso(h.last_attempt_ms),
                        "lastSuccess": _iso(h.last_success_ms),
                        "lastError": h.last_error,
                        "lastErrorKind": h.last_error_kind,
                        "consecutiveFailures": h.consecutive_failures,
                    },
                }
            )
            poll_info = getattr(source, "poll_info", None)
            if spec.kind == "polled" and poll_info is not None:
                rows[-1]["poll"] = _poll_row(poll_info(ledger), h, ledger, spec.name)
            view_info = getattr(source, "view_info", None)
            if views and view_info is not None:  # other views of the same usage, never added
                rows[-1]["views"] = view_info(ledger)
    return rows


# What a polled source's last error kind means, in the words ``sources`` shows.
_POLL_STATES = {
    "http_401": "auth failed",
    "http_403": "auth failed",
    "bad_key": "auth failed",
    "needs_management_key": "needs management key",
    "http_429": "rate limited",
}


def _poll_row(info: dict[str, Any], h: Any, ledger: Ledger, source: str) -> dict[str, Any]:
    """A polled source's state for ``sources``: configured?, ok or why not, schedule, balances."""
    if not info["configured"]:
        state = "not configured"
    elif h is None:
        state = "not polled yet"
    elif h.consecutive_failures == 0:
        state = "ok"
    else:
        state = _POLL_STATES.get(h.last_error_kind or "", f"failing ({h.last_error_kind})")
    balances = [
        {"provider": g.labels.get("provider"), "currency": g.labels.get("currency"), "amount": str(g.value)}
        for g in ledger.gauges("tokenbridge.balance")
        if g.source == source
    ]
    return {**info, "state": state, "balances": balances}


def where_to_look(settings: config.Settings, only: Sequence[str] | None = None) -> list[str]:
    """One line per selected source that found nothing: where it looked and the settings that
    point it elsewhere (what a first run on a machine without data needs to read)."""
    from bridge.sources import _registry

    wanted = {s.name for s in select_sources(settings, only)}
    lines = []
    for spec in _registry.specs():
        if spec.name not in wanted:
            continue
        st = spec.factory(settings).status()
        if spec.kind == "polled":
            # A provider API has no files: it is configured or not; only worth a line when asked for.
            if not st.detected and only:
                lines.append(f"{spec.name}: {st.notes[0] if st.notes else 'not configured'}")
            continue
        if st.detected and st.files:
            continue
        looked = ", ".join(st.roots) if st.roots else "nowhere configured"
        how = f"; set {' or '.join(spec.settings)}" if spec.settings else ""
        lines.append(f"{spec.name}: no {spec.description} found (looked in {looked}){how}")
    return lines


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
