"""A real loopback OTLP metrics receiver for tests: HTTP (``/v1/metrics``, protobuf) or gRPC.

It records every export request with the headers (HTTP) or metadata (gRPC) it arrived with, and
flattens requests into data points so tests can assert names, units, attributes, temporality,
start times and exact values. Nothing is mocked: the bridge's real OTLP exporter talks to it over
a real socket on 127.0.0.1.

Also here: running ``tokenbridge`` as a real process (one-shot commands and the ``run`` daemon).
"""

from __future__ import annotations

import gzip
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

ExportRequest = metrics_service_pb2.ExportMetricsServiceRequest
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


@dataclass(frozen=True)
class Received:
    """One export request as it arrived."""

    request: Any  # ExportMetricsServiceRequest
    headers: dict[str, str]  # lower-cased names
    content_type: str


@dataclass(frozen=True)
class Point:
    """One number data point of a Sum metric, with everything around it."""

    metric: str
    unit: str
    attrs: dict[str, str]
    value: float
    start_ns: int
    time_ns: int
    temporality: int
    monotonic: bool
    resource: dict[str, str]
    scope: str

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.metric, tuple(sorted(self.attrs.items()))


def _any_value(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    return "" if kind is None else str(getattr(v, kind))


def points_of(request: Any) -> list[Point]:
    """Every Sum data point in one ``ExportMetricsServiceRequest``."""
    out: list[Point] = []
    for rm in request.resource_metrics:
        resource = {a.key: _any_value(a.value) for a in rm.resource.attributes}
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.WhichOneof("data") != "sum":
                    continue
                for dp in m.sum.data_points:
                    value = dp.as_double if dp.WhichOneof("value") == "as_double" else float(dp.as_int)
                    out.append(
                        Point(
                            metric=m.name,
                            unit=m.unit,
                            attrs={a.key: _any_value(a.value) for a in dp.attributes},
                            value=value,
                            start_ns=dp.start_time_unix_nano,
                            time_ns=dp.time_unix_nano,
                            temporality=m.sum.aggregation_temporality,
                            monotonic=m.sum.is_monotonic,
                            resource=resource,
                            scope=sm.scope.name,
                        )
                    )
    return out


class OtlpSink:
    """Base: a thread-safe record of what arrived."""

    protocol = ""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard variables that point an OTLP exporter at this sink."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol}

    def _record(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.received)

    def requests(self) -> list[Received]:
        with self._cond:
            return list(self.received)

    def points(self) -> list[Point]:
        return [p for r in self.requests() for p in points_of(r.request)]

    def latest(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], Point]:
        """The newest point of every series (by collection time)."""
        out: dict[tuple[str, tuple[tuple[str, str], ...]], Point] = {}
        for p in self.points():
            k = p.key()
            if k not in out or p.time_ns >= out[k].time_ns:
                out[k] = p
        return out

    def wait_until(self, predicate: Callable[[OtlpSink], bool], timeout: float = 15.0) -> None:
        """Block until ``predicate(self)`` holds after some request arrived (or fail)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.received and predicate(self):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.protocol} sink: condition not met in {timeout}s "
                        f"({len(self.received)} request(s) received)"
                    )
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        raise NotImplementedError


class HttpSink(OtlpSink):
    """OTLP/HTTP with protobuf bodies on ``POST /v1/metrics``."""

    protocol = "http/protobuf"

    def __init__(self) -> None:
        super().__init__()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                req = ExportRequest()
                req.ParseFromString(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                sink._record(Received(req, headers, self.headers.get("Content-Type") or ""))
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http-sink", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class GrpcSink(OtlpSink):
    """OTLP/gRPC ``MetricsService/Export`` (insecure, loopback)."""

    protocol = "grpc"

    def __init__(self) -> None:
        super().__init__()
        sink = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
                headers = {k.lower(): str(v) for k, v in context.invocation_metadata()}
                sink._record(Received(request, headers, "application/grpc"))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None)


def make_sink(protocol: str) -> OtlpSink:
    if protocol == "grpc":
        return GrpcSink()
    if protocol == "http/protobuf":
        return HttpSink()
    raise ValueError(protocol)


@contextmanager
def running_sink(protocol: str) -> Iterator[OtlpSink]:
    sink = make_sink(protocol)
    try:
        yield sink
    finally:
        sink.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the CLI as a real process

CLI = [sys.executable, "-m", "bridge.cli"]


def tokenbridge(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``tokenbridge ARGS`` to completion (a real subprocess)."""
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def daily_report(env: dict[str, str]) -> dict[str, Any]:
    """``tokenbridge report daily --json`` (UTC days), parsed."""
    r = tokenbridge(env, "report", "daily", "--json", "--timezone", "UTC")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


class Daemon:
    """``tokenbridge run`` as a real process, its stderr collected line by line."""

    READY = "watching "  # logged once the first ingest is done and signals are handled

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "run", "--no-progress", *args],
            env={**env, "PYTHONFAULTHANDLER": "1"},  # a hang's thread dump ends up in the failure
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(self.READY in line for line in self.lines):
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"daemon not ready in {timeout}s: {self.stderr()}")
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code (kills and fails if it hangs)."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            raise AssertionError(
                f"daemon ignored {signal.Signals(sig).name} for {timeout}s; its stacks:\n{self.stderr()[-6000:]}"
            ) from None
        self._reader.join(5)
        return code

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds (or fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout}s")
        time.sleep(0.05)
