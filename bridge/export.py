"""Export the ledger's totals as Claude Code's native OTLP metrics.

Instruments are named exactly as Claude Code's (``claude_code.token.usage`` in ``tokens`` with
``model`` and ``type``; ``claude_code.cost.usage`` in ``USD`` with ``model``), plus ``provider``
and ``source`` (and ``session.id`` only when enabled: cardinality). Temporality is cumulative
and the values are the ledger's totals, so:

* a restart continues each series instead of resetting it, because each series' OTLP start
  time is stored in the ledger the first time it is exported and reused forever after (a
  backend that turns start times into zero samples never sees a fake reset);
* a collector that is down loses nothing: the next successful export carries the full totals;
* exported values never go down (a guard keeps the last exported value), so ``increase()``
  downstream can never count a fake reset.

The export thread only reads an immutable snapshot built by the caller's thread, because the
ledger's SQLite connection belongs to that thread.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from bridge import __version__
from bridge.config import TeamIdentity
from bridge.errors import ConfigError, TokenbridgeError
from bridge.ledger import Ledger
from bridge.series import (
    COST_METRIC,
    GAUGE_METRICS,
    TOKEN_METRIC,
    UNPRICED_METRIC,
    Attrs,
    Point,
    attrs_of,
    export_lock,
    gauge_values,
    guarded_points,
    series_key,
)
from bridge.teamtoken import TokenRotation, headers_with_token

log = logging.getLogger("tokenbridge.export")

DEFAULT_ENDPOINT = "http://localhost:14317"  # the stack's OTLP gRPC port (see docker-compose.yml)
_CUMULATIVE: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.CUMULATIVE,
    ObservableCounter: AggregationTemporality.CUMULATIVE,
}


class _Snapshot:
    """Immutable view of what to export, keyed by (metric, attributes).

    ``starts`` holds the stable start time of every series ever known, not only this snapshot's:
    the SDK collects (callbacks) and exports (our wrapper) at two moments, and a refresh in
    between must not leave a just-collected new series without its stored start time.
    """

    def __init__(
        self,
        points: Sequence[Point],
        starts: dict[str, int] | None = None,
        gauges: Sequence[tuple[str, Attrs, Decimal]] = (),
    ) -> None:
        self.points = {(p.metric, p.attrs): p for p in points}
        self.starts = {p.key: p.start_ns for p in points} if starts is None else starts
        self.gauges = tuple(gauges)

    def gauge_observations(self, metric: str) -> list[Observation]:
        return [Observation(float(v), dict(a)) for m, a, v in self.gauges if m == metric]

    def observations(self, metric: str) -> list[Observation]:
        return [Observation(float(p.value), dict(p.attrs)) for (m, _), p in self.points.items() if m == metric]

    def point(self, metric: str, attrs: dict[str, Any]) -> Point | None:
        return self.points.get((metric, attrs_of(attrs)))

    def start_ns(self, metric: str, attrs: dict[str, Any]) -> int | None:
        return self.starts.get(series_key(metric, attrs_of(attrs)))


# The OTLP exporters' own loggers: their error line is the only place the SDK names the status of a refused export.
_SDK_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)
_REFUSED = re.compile(r"UNAUTHENTICATED|PERMISSION_DENIED|code: 40[13]\b")


class _SdkErrors(logging.Filter):
    """Keeps the SDK exporter's last error line of this thread, so the wrapper can say in its one line
    why an export failed (a refused token above all). The SDK's own line is dropped unless debugging
    (``tokenbridge --debug`` shows it). Installed first on the logger: the SDK's duplicate filter
    would otherwise hide a repeated refusal from it."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self._local.last = record.getMessage()
        return log.isEnabledFor(logging.DEBUG)

    def take(self) -> str:
        last: str = getattr(self._local, "last", "")
        self._local.last = ""
        return last


_sdk_errors = _SdkErrors()


def _capture_sdk_errors() -> None:
    for name in _SDK_EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if _sdk_errors not in logger.filters:
            logger.filters.insert(0, _sdk_errors)
        if logger.getEffectiveLevel() > logging.ERROR:
            logger.setLevel(logging.ERROR)  # the CLI silences "opentelemetry"; the filter still drops the line


class _StableStartExporter(MetricExporter):
    """Wraps the OTLP exporter: stable start times, and one clear line when delivery fails."""

    def __init__(
        self, inner: MetricExporter, owner: BridgeExporter, target: str, token: TokenRotation | None = None
    ) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._inner = inner
        self._owner = owner
        self._target = target
        self._token = token
        self.failures = 0
        self.successes = 0
        # Set by BridgeExporter.shutdown: the SDK's reader does one more collection and export
        # while shutting down, which would repeat the caller's final flush (a second request, and
        # with the collector down a second timeout and a second warning).
        self.closed = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.closed:
            return MetricExportResult.SUCCESS
        with self._owner.exclusive():
            # Values are re-read from the ledger under the lock shared by every process that
            # exports it: never send a total older than one another process already sent.
            fresh = self._owner.fresh_snapshot()
            self._rewrite(metrics_data, fresh)
            return self._send(metrics_data, timeout_millis)

    def _rewrite(self, metrics_data: MetricsData, fresh: _Snapshot | None) -> None:
        snap = self._owner.snapshot
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for i, metric in enumerate(sm.metrics):
                    if not isinstance(metric.data, Sum):
                        continue
                    pts = []
                    for collected in metric.data.data_points:
                        attrs = dict(collected.attributes or {})
                        now = fresh.point(metric.name, attrs) if fresh is not None else None
                        dp = collected if now is None else replace(collected, value=float(now.value))
                        start = snap.start_ns(metric.name, attrs)
                        pts.append(replace(dp, start_time_unix_nano=start) if start is not None else dp)
                    data = replace(metric.data, data_points=pts)
                    sm.metrics[i] = replace(metric, data=data)  # type: ignore[index]

    def _send(self, metrics_data: MetricsData, timeout_millis: float) -> MetricExportResult:
        if self._token is not None:
            self._inner = self._token.exporter(self._inner)
        _sdk_errors.take()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:  # the SDK must never take the bridge down
            log.warning(
                "export to %s failed: %s", self._target, type(exc).__name__
            )  # its text may hold the raw endpoint
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.successes += 1
        elif _REFUSED.search(_sdk_errors.take()):
            self.failures += 1
            log.warning(
                "collector at %s refused the credentials (401 Unauthenticated / 403): check the token in "
                "%s (not shown); the ledger keeps every total and the next accepted export carries them",
                self._target,
                self._token.source if self._token is not None else "OTEL_EXPORTER_OTLP_HEADERS",
            )
        else:
            self.failures += 1
            log.warning(
                "collector at %s did not accept the export; the ledger keeps every total and the next "
                "successful export carries them",
                self._target,
            )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _redact(url: str) -> str:
    """An endpoint for logs and messages: scheme, host, port and path, never credentials.

    Userinfo, query and fragment are dropped, with or without a scheme (the OTLP SDK accepts
    ``user:pass@host:4317``, where ``urlsplit`` would read ``user`` as the scheme). An ``@`` past
    the authority means an unencoded ``/``, ``?`` or ``#`` in a password or a token in the query:
    the split is then ambiguous, so nothing after the scheme is shown.
    """
    text = url.strip()
    m = _SCHEME.match(text)
    scheme = m.group(0) if m else ""
    rest = text[len(scheme) :]
    end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        return f"{scheme}<redacted>"
    path = re.split(r"[?#]", tail, maxsplit=1)[0]
    return f"{scheme}{authority.rpartition('@')[2]}{path}"


def otlp_protocol(env: dict[str, str]) -> str:
    proto = env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if proto not in ("grpc", "http/protobuf"):
        key = (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
            if env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        raise ConfigError(key, f"unsupported protocol {proto!r}: use grpc or http/protobuf")
    return proto


# The SDK's liberal header rule (``opentelemetry.util.re._LIBERAL_HEADER_PATTERN``): an entry
# it does not match is logged *verbatim*, secret included, and dropped.
_HEADER_ENTRY = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*=[ \t]*"
    r"[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)


def check_otlp_headers(env: dict[str, str]) -> None:
    """Fail fast on a malformed ``OTEL_EXPORTER_OTLP_[METRICS_]HEADERS``, never echoing a value.

    The SDK would log the malformed entry (with its secret) and export without it.
    """
    for key in ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        raw = env.get(key)
        if not raw:
            continue
        for i, entry in enumerate(re.split(r"[ \t]*,[ \t]*", raw), start=1):
            if not entry.strip():
                continue
            if not _HEADER_ENTRY.fullmatch(entry.strip()):
                raise ConfigError(
                    key,
                    f"entry {i} is not name=value with a printable ASCII value (URL-encode quotes, commas, "
                    "semicolons, backslashes and other characters); the value is not shown",
                )
        return  # the SDK reads only the first of the two that is set


def _otlp_exporter(env: dict[str, str], headers: dict[str, str] | None = None) -> tuple[MetricExporter, str]:
    """The SDK's OTLP exporter from the environment; ``headers`` replace the environment's headers."""
    proto = otlp_protocol(env)
    check_otlp_headers(env)
    signal_ep = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    base_ep = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as Grpc,
        )

        endpoint = signal_ep or base_ep or DEFAULT_ENDPOINT
        return Grpc(endpoint=endpoint, headers=headers, preferred_temporality=_CUMULATIVE), _redact(endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as Http,
    )

    if signal_ep:
        endpoint = signal_ep
    else:
        base = base_ep or DEFAULT_ENDPOINT.replace("14317", "14318")
        endpoint = base.rstrip("/") + "/v1/metrics"
    return Http(endpoint=endpoint, headers=headers, preferred_temporality=_CUMULATIVE), _redact(endpoint)


def bridge_resource(env: dict[str, str], instance_id: str | None, team: TeamIdentity | None = None) -> Resource:
    """The OTLP resource of the bridge's series (its ``service.name`` and ``service.instance.id``
    become the ``job`` and ``instance`` labels: the backfill writes the same ones). In team mode it
    also carries ``user`` and ``machine``, which the team collector puts on every point (replacing
    ``user`` with the user of the token); the series in the ledger stay the same, so turning team
    mode on or off starts no new ledger series."""
    attrs = {"service.name": "tokenbridge", "service.version": __version__}
    if team is not None:
        attrs["user"] = team.user
        attrs["machine"] = team.machine
    user_attrs = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if instance_id and "service.instance.id=" not in user_attrs.replace(" ", ""):
        # The SDK would draw a random service.instance.id per process; it becomes the
        # `instance` label, so every restart would start a second copy of each series.
        # An id the user set in OTEL_RESOURCE_ATTRIBUTES wins over the ledger's.
        attrs["service.instance.id"] = instance_id
    return Resource.create(attrs)


class BridgeExporter:
    """Owns the MeterProvider, its readers and the snapshot they read."""

    def __init__(
        self,
        *,
        otlp: bool = True,
        prometheus_port: int | None = None,
        prometheus_host: str = "127.0.0.1",
        interval_s: float = 60.0,
        include_session_id: bool = False,
        include_project: bool = False,
        env: dict[str, str] | None = None,
        instance_id: str | None = None,
        ledger_path: Path | None = None,
        team: TeamIdentity | None = None,
    ) -> None:
        env = dict(os.environ) if env is None else env
        self.include_session_id = include_session_id
        self.include_project = include_project
        self.snapshot = _Snapshot([])
        self._starts: dict[str, int] = {}
        self._ledger_path = ledger_path
        self._local = threading.local()  # the export thread's own ledger connection
        self.otlp: _StableStartExporter | None = None
        readers: list[MetricReader] = []
        if otlp:
            rotation = None
            if team is not None and team.token_file is not None:

                def with_token(token: str) -> MetricExporter:
                    return _otlp_exporter(env, headers_with_token(env, token))[0]

                rotation = TokenRotation(team.token_file, with_token)
            inner, target = _otlp_exporter(env, rotation.headers(env)) if rotation else _otlp_exporter(env)
            _capture_sdk_errors()
            self.otlp = _StableStartExporter(inner, self, target, rotation)
            self.target = target
            readers.append(PeriodicExportingMetricReader(self.otlp, export_interval_millis=interval_s * 1000))
        if prometheus_port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            try:
                start_http_server(prometheus_port, addr=prometheus_host)
            except OSError as exc:  # e.g. the port is taken: one clear line, not a traceback
                raise ConfigError(
                    "--prometheus-port", f"cannot serve on {prometheus_host}:{prometheus_port}: {exc.strerror or exc}"
                ) from exc
            readers.append(PrometheusMetricReader())
            log.info("serving Prometheus metrics on http://%s:%d/metrics", prometheus_host, prometheus_port)
        resource = bridge_resource(env, instance_id, team)
        self.provider = MeterProvider(resource=resource, metric_readers=readers)
        meter = self.provider.get_meter("tokenbridge", __version__)
        meter.create_observable_counter(
            TOKEN_METRIC, [self._cb(TOKEN_METRIC)], unit="tokens", description="Number of tokens used"
        )
        meter.create_observable_counter(COST_METRIC, [self._cb(COST_METRIC)], unit="USD", description="Cost of usage")
        for name, (unit, description) in GAUGE_METRICS.items():
            meter.create_observable_gauge(name, [self._gauge_cb(name)], unit=unit, description=description)
        meter.create_observable_counter(
            UNPRICED_METRIC,
            [self._cb(UNPRICED_METRIC)],
            unit="",
            description="Requests whose model has no known price (their cost is unknown, not zero)",
        )

    def _cb(self, metric: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return self.snapshot.observations(metric)

        return callback

    def _gauge_cb(self, metric: str) -> Any:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return self.snapshot.gauge_observations(metric)

        return callback

    def refresh(self, ledger: Ledger) -> None:
        """Rebuild the snapshot from the ledger's totals (call from the ledger's thread)."""
        self.snapshot = self._snapshot(ledger)

    def _snapshot(self, ledger: Ledger) -> _Snapshot:
        points = guarded_points(ledger, self.include_session_id, time.time_ns(), self.include_project)
        self._starts.update({p.key: p.start_ns for p in points})
        return _Snapshot(points, dict(self._starts), list(gauge_values(ledger)))

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._ledger_path is None:
            yield
            return
        with export_lock(self._ledger_path):
            yield

    def fresh_snapshot(self) -> _Snapshot | None:
        """The ledger's totals now, read on the calling (export) thread with its own connection."""
        if self._ledger_path is None:
            return None
        ledger = getattr(self._local, "ledger", None)
        try:
            if ledger is None:
                ledger = self._local.ledger = Ledger(self._ledger_path)
            return self._snapshot(ledger)
        except TokenbridgeError as exc:  # export what was collected; the guard still held
            log.warning("cannot re-read the ledger before exporting: %s", exc)
            return None

    def flush(self, timeout_s: float = 15.0) -> bool:
        """Export now. True when the collector (if any) accepted it."""
        before = self.otlp.successes if self.otlp else 0
        self.provider.force_flush(int(timeout_s * 1000))
        return self.otlp is None or self.otlp.successes > before

    def shutdown(self) -> None:
        """Stop the readers without exporting again: call ``flush`` first for a final export."""
        if self.otlp is not None:
            self.otlp.closed = True
        self.provider.shutdown()
        ledger = getattr(self._local, "ledger", None)
        if ledger is not None:
            ledger.close()
