"""Claude-Code-shaped OTLP log events (native-telemetry.md §1.5) for the stack and receiver tests.

Each event is a log record with body ``claude_code.<name>``, attribute ``event.name=<name>``, the standard
attributes (session.id, user.id, event.timestamp, event.sequence, prompt.id) and the event's own fields, under
resource ``service.name=claude-code`` and scope ``com.anthropic.claude_code.events``. ``numbers_as_strings``
sends numeric fields the way Claude Code did before v2.1.122.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import urllib.request
from typing import Any

_SEQ = itertools.count(1)


def event(name: str, session_id: str, fields: dict[str, Any], *, numbers_as_strings: bool = False) -> dict[str, Any]:
    ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    attrs: dict[str, Any] = {
        "event.name": name,
        "event.timestamp": ts,
        "event.sequence": next(_SEQ),
        "session.id": session_id,
        "user.id": "u-1234",
        "prompt.id": "p-0001",
    }
    for k, v in fields.items():
        numeric = isinstance(v, int | float) and not isinstance(v, bool)
        attrs[k] = str(v) if numbers_as_strings and numeric else v
    return {"body": f"claude_code.{name}", "attributes": attrs}


def api_request(
    session_id: str,
    request_id: str,
    model: str,
    *,
    duration_ms: int,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cost_usd: float = 0.0,
    speed: str | None = None,
    query_source: str | None = "repl_main_thread",
    numbers_as_strings: bool = False,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": model,
        "cost_usd": cost_usd,
        "cost_usd_micros": round(cost_usd * 1_000_000),
        "duration_ms": duration_ms,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_creation_tokens": cache_creation_tokens,
        "request_id": request_id,
        "client_request_id": f"c-{request_id}",
    }
    if speed is not None:
        fields["speed"] = speed
    if query_source is not None:
        fields["query_source"] = query_source
    return event("api_request", session_id, fields, numbers_as_strings=numbers_as_strings)


def _any_value(v: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def logs_request(
    events: list[dict[str, Any]],
    *,
    version: str = "2.1.240",
    resource_extra: dict[str, str] | None = None,
) -> Any:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1 import logs_pb2 as lp
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    res_attrs = {"service.name": "claude-code", "service.version": version, "os.type": "linux", "host.arch": "amd64"}
    res_attrs.update(resource_extra or {})
    now = time.time_ns()
    records = [
        lp.LogRecord(
            time_unix_nano=now,
            observed_time_unix_nano=now,
            severity_number=lp.SEVERITY_NUMBER_INFO,
            body=_any_value(e["body"]),
            attributes=[KeyValue(key=k, value=_any_value(v)) for k, v in e["attributes"].items()],
        )
        for e in events
    ]
    return ls.ExportLogsServiceRequest(
        resource_logs=[
            lp.ResourceLogs(
                resource=Resource(attributes=[KeyValue(key=k, value=_any_value(v)) for k, v in res_attrs.items()]),
                scope_logs=[
                    lp.ScopeLogs(
                        scope=InstrumentationScope(name="com.anthropic.claude_code.events", version=version),
                        log_records=records,
                    )
                ],
            )
        ]
    )


def send_http(url: str, request: Any, headers: dict[str, str] | None = None) -> int:
    """POST an ExportLogsServiceRequest as http/protobuf to `url` (…/v1/logs); return the HTTP status."""
    req = urllib.request.Request(
        url,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def send_grpc(endpoint: str, request: Any, metadata: list[tuple[str, str]] | None = None) -> None:
    """Export an ExportLogsServiceRequest over gRPC to host:port."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as lsg

    with grpc.insecure_channel(endpoint) as ch:
        lsg.LogsServiceStub(ch).Export(request, timeout=10, metadata=metadata)
