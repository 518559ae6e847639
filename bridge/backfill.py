"""``tokenbridge backfill``: the ledger's history into Prometheus at its true timestamps.

Every series the live export sends (bridge/series.py: same metric names, same labels) gets one
sample every 5 minutes from its first usage (an explicit 0 at the step it starts) or from the
start of the window, and a last sample at the time of the backfill holding the ledger's total:
exactly the value the live export continues from. The sample at step boundary ``B`` holds
``series.values()`` of the ledger's rows with ``ts_ms < B``, so the increase between two
boundaries (two whole hours, two midnights) is the ledger's sum over that interval, to the token
and the cent.

Delivery: Prometheus' remote-write receiver (``/api/v1/write``, remote write 1.0), which takes
samples older than its head within ``out_of_order_time_window``. Why not the OTLP receiver or
promtool: docs/backfill.md.

**The seam** (why history and live data are one counter): Prometheus writes a zero sample at a
counter's start (created) timestamp when that is newer than the series' last sample. The backfill
stores each series' start in the ledger (``series`` table) as the time of its first backfilled
sample, *before* sending, under the export lock; the live export reuses that start, which is
older than the backfilled samples, so no zero (no fake reset) is ever written at the seam.

**Idempotent**: a series Prometheus already holds (any sample in its retention) is never written
again, so a second run, a restart, or a run beside the daemon adds nothing. Each request carries
whole series, and Prometheus commits a request at once, so an interrupted run leaves every series
either complete or absent.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import re
import struct
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from bridge import __version__
from bridge.errors import ConfigError, TokenbridgeError
from bridge.ledger import Ledger, SeriesTotal
from bridge.series import COST_METRIC, TOKEN_METRIC, UNPRICED_METRIC, Attrs, export_lock, series_key, values

log = logging.getLogger("tokenbridge.backfill")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# One sample every 5 minutes, Prometheus' default lookback delta: an `anchored` range (the
# dashboards' exact increase) needs a sample at most that far before its start, whatever the
# range's alignment. Usage inside a step counts at the step's end.
STEP_MS = 300_000
DEFAULT_DAYS = 30
DEFAULT_URL = "http://localhost:9090"
# Prometheus' default retention when none is configured (``--storage.tsdb.retention.time``).
_DEFAULT_RETENTION_MS = 15 * DAY_MS
# A stored start newer than this could still get Prometheus' zero sample on the next scrape (it
# writes one only within about an hour of its newest sample): such a series is left out.
_ZERO_SAMPLE_REACH_MS = 2 * HOUR_MS
_SAMPLES_PER_REQUEST = 200_000  # about 4 MB of protobuf

# Collector-style names (UnderscoreEscapingWithSuffixes) of the bridge's instruments.
PROM_NAMES = {
    TOKEN_METRIC: "claude_code_token_usage_tokens_total",
    COST_METRIC: "claude_code_cost_usage_USD_total",
    UNPRICED_METRIC: "tokenbridge_unpriced_requests_total",
}


class BackfillError(TokenbridgeError):
    """Prometheus could not be read or written (names the URL, never credentials)."""


@dataclass(slots=True)
class Series:
    """One series' history as change points; ``samples()`` expands it to one sample per step.

    Change points keep memory small (30 days at 5 minutes is 8,641 samples per series, most of
    them repeating the previous value); the samples are produced only while encoding a request.
    """

    metric: str
    attrs: Attrs
    start_ms: int  # the first sample (a step boundary)
    end_ms: int  # the last sample: the time of the backfill, holding the ledger's total
    step_ms: int
    points: list[tuple[int, Decimal]] = field(default_factory=list)  # (from ts_ms, value), oldest first

    @property
    def key(self) -> str:
        return series_key(self.metric, self.attrs)

    @property
    def total(self) -> Decimal:
        return self.points[-1][1]

    def count(self) -> int:
        span = self.end_ms - self.start_ms
        return span // self.step_ms + 1 + (1 if span % self.step_ms else 0)

    def samples(self) -> Iterator[tuple[int, Decimal]]:
        """A sample at every step from ``start_ms``, and one at ``end_ms``."""
        pts, i, t = self.points, 0, self.start_ms
        while t <= self.end_ms:
            while i + 1 < len(pts) and pts[i + 1][0] <= t:
                i += 1
            yield t, pts[i][1]
            t += self.step_ms
        if (self.end_ms - self.start_ms) % self.step_ms:
            yield self.end_ms, pts[-1][1]


@dataclass(slots=True)
class Summary:
    series: int = 0
    samples: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    present: int = 0  # already in Prometheus: not written
    deferred: int = 0  # exported live moments ago: left for a later run (see _ZERO_SAMPLE_REACH_MS)
    days: float = 0.0
    limited_by: str | None = None

    def line(self) -> str:
        span = ""
        if self.first_ms is not None and self.last_ms is not None:
            span = f" from {_iso(self.first_ms)} to {_iso(self.last_ms)}"
        text = f"backfilled {self.series} series, {self.samples} samples, {self.days:.1f} day(s){span}"
        if self.present:
            text += f"; {self.present} series already in Prometheus (left as they are)"
        if self.deferred:
            text += f"; {self.deferred} series first exported live under 2 hours ago (left out: docs/backfill.md)"
        if self.limited_by:
            text += f"; window limited by {self.limited_by}"
        return text


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ms / 1000))


# ------------------------------------------------------------------ history from the ledger


def _add(a: SeriesTotal, b: SeriesTotal) -> SeriesTotal:
    tokens = {k: a.tokens[k] + b.tokens[k] for k in a.tokens}
    return replace(a, tokens=tokens, cost=a.cost + b.cost, requests=a.requests + b.requests,
                   unpriced=a.unpriced + b.unpriced, priced=a.priced + b.priced)  # fmt: skip


def history(
    rows: Iterable[tuple[int, SeriesTotal]],
    include_session_id: bool,
    since_ms: int,
    now_ms: int,
    step_ms: int = STEP_MS,
) -> list[Series]:
    """Cumulative history per series from ``Ledger.history(step_ms)`` rows (oldest bucket first).

    The value at step boundary ``B`` is ``series.values()`` of every row with ``ts_ms < B`` (the
    live export's function applied to the ledger as of ``B``); the last sample, at ``now_ms``, is
    ``values()`` of every row: the ledger's totals. A series first seen inside the window starts
    with an explicit 0 at the boundary before its first row. ``since_ms`` must be step-aligned.
    """
    # One group per set of series (the session only when it is a label; rows without it come
    # from ``Ledger.history(by_session=False)``): values() of one group is exactly its series,
    # so a step only recomputes the groups its rows touched.
    groups: dict[tuple[str, str, str, str], SeriesTotal] = {}

    def apply(bucket_rows: Iterable[SeriesTotal]) -> set[tuple[str, str, str, str]]:
        touched = set()
        for t in bucket_rows:
            k = (t.source, t.provider, t.model, t.session_id if include_session_id else "")
            groups[k] = t if k not in groups else _add(groups[k], t)
            touched.add(k)
        return touched

    out: dict[str, Series] = {}

    def snapshot(ts_ms: int, keys: Iterable[tuple[str, str, str, str]], first: bool = False) -> None:
        for m, a, v in values([groups[k] for k in keys], include_session_id):
            key = series_key(m, a)
            s = out.get(key)
            if s is None:
                zero_at = (ts_ms - 1) // step_ms * step_ms
                if first or zero_at < since_ms:  # older history: the first sample already holds it
                    s = out[key] = Series(m, a, ts_ms, now_ms, step_ms)
                else:
                    s = out[key] = Series(m, a, zero_at, now_ms, step_ms, [(zero_at, Decimal(0))])
            if not s.points or s.points[-1][1] != v:
                s.points.append((ts_ms, v))

    first_bucket, last_bucket = since_ms // step_ms, now_ms // step_ms
    started = False  # the window's first sample is taken (older rows are only summed into it)
    touched: set[tuple[str, str, str, str]] = set()  # groups of the current step and later rows
    for bucket, bucket_rows in itertools.groupby(rows, key=lambda r: r[0]):  # oldest bucket first
        if bucket >= first_bucket and not started:
            snapshot(since_ms, list(groups), first=True)
            started = True
        keys = apply(t for _, t in bucket_rows)
        if first_bucket <= bucket < last_bucket:
            snapshot((bucket + 1) * step_ms, keys)
        elif bucket >= last_bucket:
            touched |= keys
    if not started:
        snapshot(since_ms, list(groups), first=True)
    snapshot(now_ms, touched)
    return list(out.values())


# ------------------------------------------------------------------ remote write 1.0 encoding


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


_VALUE = struct.Struct("<Bd")  # Sample.value: field 1, fixed64 double


def write_request(series: Sequence[tuple[dict[str, str], Iterable[tuple[int, Decimal]]]]) -> bytes:
    """A ``prometheus.WriteRequest`` (remote write 1.0) protobuf: labels sorted by name."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name in sorted(labels):
            ts += _field(1, _field(1, name.encode()) + _field(2, labels[name].encode()))
        last: Decimal | None = None
        packed = b""
        for ts_ms, value in samples:
            if value != last:  # values repeat for hours: pack each once
                last, packed = value, _VALUE.pack(0x09, float(value))
            body = packed + b"\x10" + _varint(ts_ms)  # Sample.timestamp: field 2, varint
            ts += b"\x12" + bytes((len(body),)) + body  # TimeSeries.samples: field 2 (a body < 128 bytes)
        out += _field(1, bytes(ts))
    return bytes(out)


def snappy_block(data: bytes) -> bytes:
    """Snappy block format made of literals only: valid input for any snappy decoder, without a
    compression dependency (a backfill request is a few hundred kB at most)."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i : i + 65536]
        out += bytes([61 << 2]) + (len(chunk) - 1).to_bytes(2, "little") + chunk
    return bytes(out)


# ------------------------------------------------------------------ Prometheus


_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS, "y": 365 * DAY_MS}


def parse_duration_ms(text: str) -> int:
    """A Prometheus duration (``90d``, ``1h30m``, ``2w``) in milliseconds."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


class Prometheus:
    """The few calls the backfill makes: limits, which series exist, remote write."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        # Shown in messages and used for requests: never user:password from the URL, which goes
        # into an Authorization header instead (a Prometheus behind basic auth).
        self.shown = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("TOKENBRIDGE_PROMETHEUS_URL", f"not an http(s) URL: {self.shown}")
        self.url = self.shown
        self._auth: dict[str, str] = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            secret = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            self._auth = {"Authorization": f"Basic {token}"}

    def _request(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        import urllib.error  # here, not at the top: the CLI imports this module for every command
        import urllib.request

        req = urllib.request.Request(self.url + path, data=data, headers={**self._auth, **(headers or {})})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310 - http(s) checked
                return bytes(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace").strip()
            raise BackfillError(f"Prometheus at {self.shown} answered HTTP {exc.code} to {path}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackfillError(f"cannot reach Prometheus at {self.shown}: {reason}") from None

    def _api(self, path: str, params: Sequence[tuple[str, str]] | None = None) -> Any:
        body = urllib.parse.urlencode(params).encode() if params is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        try:
            data = json.loads(self._request(path, body, headers))
        except ValueError:
            raise BackfillError(f"Prometheus at {self.shown}: {path} did not answer JSON") from None
        if not isinstance(data, dict) or data.get("status") != "success":
            raise BackfillError(
                f"Prometheus at {self.shown}: {path}: {data.get('error') if isinstance(data, dict) else data}"
            )
        return data.get("data")

    def limits_ms(self) -> tuple[int, int]:
        """(retention, out-of-order window) in milliseconds."""
        flags = self._api("/api/v1/status/flags") or {}
        retention = parse_duration_ms(str(flags.get("storage.tsdb.retention.time") or "0s"))
        yaml_text = str((self._api("/api/v1/status/config") or {}).get("yaml", ""))
        m = re.search(r"out_of_order_time_window:\s*(\S+)", yaml_text)
        window = parse_duration_ms(m.group(1)) if m else 0
        return retention or _DEFAULT_RETENTION_MS, window

    def present(
        self, names: Iterable[str], job: str, instance: str, start_ms: int, end_ms: int
    ) -> set[frozenset[tuple[str, str]]]:
        """Label sets (``__name__`` included) of the bridge's series with any sample in the range."""
        sel = "|".join(names)
        matcher = f'{{__name__=~"{sel}",job="{_esc(job)}",instance="{_esc(instance)}"}}'
        params = [("match[]", matcher), ("start", f"{start_ms / 1000:.3f}"), ("end", f"{end_ms / 1000:.3f}")]
        found = self._api("/api/v1/series", params) or []
        return {frozenset((str(k), str(v)) for k, v in d.items()) for d in found}

    def write(self, payload: bytes) -> None:
        headers = {
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        self._request("/api/v1/write", snappy_block(payload), headers)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# ------------------------------------------------------------------ the command


def labels_of(metric: str, attrs: Attrs, job: str, instance: str) -> dict[str, str]:
    """The Prometheus labels of a bridge series as the live path produces them (collector
    Prometheus exporter, scraped with honor_labels): attribute names with ``.`` become ``_``,
    ``service.name`` → ``job``, ``service.instance.id`` → ``instance``, plus the scope labels."""
    labels = {k.replace(".", "_"): v for k, v in attrs}
    labels.update(
        {
            "__name__": PROM_NAMES[metric],
            "job": job,
            "instance": instance,
            "otel_scope_name": "tokenbridge",
            "otel_scope_version": __version__,
        }
    )
    return labels


def identity(env: dict[str, str], ledger: Ledger) -> tuple[str, str]:
    """(job, instance) of the live series: from the same OTLP resource the exporter uses."""
    from bridge.export import bridge_resource

    attrs = bridge_resource(env, ledger.instance_id()).attributes
    name = str(attrs.get("service.name", "tokenbridge"))
    ns = attrs.get("service.namespace")
    return (f"{ns}/{name}" if ns else name), str(attrs.get("service.instance.id", ""))


Progress = Callable[[int, int], None]


def backfill(
    ledger: Ledger,
    prom: Prometheus,
    *,
    env: dict[str, str],
    days: float = DEFAULT_DAYS,
    sources: Sequence[str] | None = None,
    include_session_id: bool = False,
    now_ms: int | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Write what Prometheus lacks of the ledger's history (see the module docstring)."""
    if not days > 0:
        raise BackfillError(f"--days must be > 0, got {days}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    summary = Summary()
    retention_ms, window_ms = prom.limits_ms()
    reach = days * DAY_MS
    # The out-of-order window counts back from Prometheus' newest sample (about now); an hour of
    # margin keeps the first sample inside it.
    for limit, what in ((retention_ms, "the retention"), (window_ms, "out_of_order_time_window")):
        if limit - HOUR_MS < reach:
            reach, summary.limited_by = max(limit - HOUR_MS, 0), f"{what} ({limit / DAY_MS:g} days)"
    if reach <= 0:
        raise BackfillError(
            f"Prometheus at {prom.shown} takes no samples older than its newest one "
            "(storage.tsdb.out_of_order_time_window is 0): set it as in the shipped prometheus.yml"
        )
    # From the step boundary at or before the reach: inside the hour of margin above.
    since_ms = (now_ms - int(reach)) // STEP_MS * STEP_MS
    summary.days = (now_ms - since_ms) / DAY_MS
    job, instance = identity(env, ledger)
    with export_lock(ledger.path):
        rows = ledger.history(STEP_MS, sources, by_session=include_session_id)
        all_series = history(rows, include_session_id, since_ms, now_ms)
        present = prom.present(PROM_NAMES.values(), job, instance, now_ms - retention_ms, now_ms + HOUR_MS)
        known = ledger.all_series()
        todo: list[tuple[Series, dict[str, str]]] = []
        for s in all_series:
            labels = labels_of(s.metric, s.attrs, job, instance)
            if frozenset(labels.items()) in present:
                summary.present += 1
            elif s.key in known and known[s.key][0] > (now_ms - _ZERO_SAMPLE_REACH_MS) * 1_000_000:
                summary.deferred += 1
            else:
                todo.append((s, labels))
        done = 0
        for batch in _batches(todo):
            _deliver(ledger, prom, batch, known)
            done += len(batch)
            for s, _ in batch:
                summary.series += 1
                summary.samples += s.count()
                first = s.start_ms if summary.first_ms is None else min(summary.first_ms, s.start_ms)
                summary.first_ms, summary.last_ms = first, s.end_ms
            if progress is not None:
                progress(done, len(todo))
    return summary


def _batches(todo: list[tuple[Series, dict[str, str]]]) -> Iterator[list[tuple[Series, dict[str, str]]]]:
    """Whole series per request (Prometheus commits a request at once), about
    ``_SAMPLES_PER_REQUEST`` samples each."""
    batch: list[tuple[Series, dict[str, str]]] = []
    size = 0
    for item in todo:
        batch.append(item)
        size += item[0].count()
        if size >= _SAMPLES_PER_REQUEST:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _deliver(
    ledger: Ledger, prom: Prometheus, batch: list[tuple[Series, dict[str, str]]], known: dict[str, tuple[int, str]]
) -> None:
    """Claim the series' starts in the ledger, then send them; undo the claim if the send fails.

    Ledger first: a crash after the send leaves a series in Prometheus whose start the live
    export already knows (never a fresh start after the history, which would read as a reset).
    """
    claims: dict[str, tuple[int, str]] = {}
    for s, _ in batch:
        first_ns = s.start_ms * 1_000_000
        start = min(first_ns, known[s.key][0]) if s.key in known else first_ns
        last = Decimal(known[s.key][1]) if s.key in known else Decimal(0)
        claims[s.key] = (start, str(max(last, s.total)))
    ledger.record_series(claims)
    try:
        prom.write(write_request([(labels, s.samples()) for s, labels in batch]))
    except BackfillError:
        new = [k for k in claims if k not in known]
        ledger.forget_series(new)
        ledger.record_series({k: known[k] for k in claims if k in known})
        raise


class Auto:
    """The daemon's backfill: at start (before its first export), and when series appear later
    (history found later: an old transcript, a new model or source), before they are exported.

    On when ``TOKENBRIDGE_PROMETHEUS_URL`` names the Prometheus the stack feeds (set by
    docker-compose.yml and scripts/start.sh) and ``TOKENBRIDGE_BACKFILL`` is not ``0``. At start it
    waits up to ``TOKENBRIDGE_BACKFILL_WAIT`` seconds (default 60) for Prometheus. A failure is
    one warning and the bridge goes on exporting.
    """

    def __init__(self, env: dict[str, str], include_session_id: bool) -> None:
        url = env.get("TOKENBRIDGE_PROMETHEUS_URL", "").strip()
        off = env.get("TOKENBRIDGE_BACKFILL", "1").strip().lower() in ("0", "false", "no", "off")
        self.prom = Prometheus(url) if url and not off else None
        self.env = env
        self.include_session_id = include_session_id
        self.days = _positive_env(env, "TOKENBRIDGE_BACKFILL_DAYS", DEFAULT_DAYS)
        self.wait_s = _positive_env(env, "TOKENBRIDGE_BACKFILL_WAIT", 60.0)

    def _run(self, ledger: Ledger, wait_s: float) -> Summary | None:
        if self.prom is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                summary = backfill(ledger, self.prom, env=self.env, days=self.days,
                                   include_session_id=self.include_session_id)  # fmt: skip
            except BackfillError as exc:
                if time.monotonic() < deadline and "cannot reach" in str(exc):
                    time.sleep(2.0)
                    continue
                log.warning("history backfill skipped: %s", exc)
                return None
            if summary.series or summary.present or summary.deferred:
                log.info("%s", summary.line())
            return summary

    def at_start(self, ledger: Ledger) -> Summary | None:
        return self._run(ledger, self.wait_s)

    def new_series(self, ledger: Ledger) -> Summary | None:
        """Backfill when the ledger has a series no export has claimed yet (cheap otherwise).

        Not with ``session.id`` labels: every new session is a new series, and a whole backfill
        per session would cost more than it brings (their history is written at the next start).
        """
        if self.prom is None or self.include_session_id:
            return None
        known = ledger.all_series()
        current = {series_key(m, a) for m, a, _ in values(ledger.totals(), self.include_session_id)}
        if current <= known.keys():
            return None
        return self._run(ledger, 0.0)


def on_start(ledger: Ledger, env: dict[str, str], include_session_id: bool) -> Summary | None:
    """The daemon's backfill at start (see ``Auto``)."""
    return Auto(env, include_session_id).at_start(ledger)


def _positive_env(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(key, f"not a number: {raw!r}") from None
    if not value > 0:
        raise ConfigError(key, f"must be > 0, got {raw!r}")
    return value


def run_command(
    ledger: Ledger,
    url: str,
    env: dict[str, str],
    days: float,
    sources: Sequence[str] | None,
    include_session_id: bool,
    show_progress: bool,
) -> Summary:
    """``tokenbridge backfill``: one pass with a progress bar on a terminal, and a summary."""
    prom = Prometheus(url)
    if not (show_progress and sys.stderr.isatty()):
        return backfill(ledger, prom, env=env, days=days, sources=sources, include_session_id=include_session_id)
    from rich.progress import Progress as Bar

    with Bar(transient=True) as bar:
        task = bar.add_task("backfilling series", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return backfill(
            ledger, prom, env=env, days=days, sources=sources, include_session_id=include_session_id, progress=step
        )


def cmd(args: argparse.Namespace) -> int:
    """``tokenbridge backfill [--days N] [--source NAME] [--prometheus-url URL]``."""
    from bridge import config
    from bridge.app import resolve_selection

    settings = config.load(state_dir=args.state_dir, config=args.config)
    if not args.days > 0:
        raise ConfigError("--days", f"must be > 0, got {args.days:g}")
    url = args.prometheus_url or settings.env.get("TOKENBRIDGE_PROMETHEUS_URL", "").strip() or DEFAULT_URL
    with Ledger.open(settings.state_dir) as ledger:
        summary = run_command(
            ledger,
            url,
            settings.env,
            args.days,
            resolve_selection(args.source),
            settings.include_session_id,
            show_progress=not args.no_progress,
        )
    print(summary.line(), file=sys.stderr)
    return 0
