"""Claude Code's ``api_request`` events: OTLP log records the collector forwards to ``tokenbridge run``.

With ``OTEL_LOGS_EXPORTER=otlp`` Claude Code sends one log record per API request (native-telemetry.md §1.5):
body ``claude_code.api_request`` and/or attribute ``event.name=api_request``, with ``request_id``, ``model``,
``input_tokens``, ``output_tokens``, ``cache_read_tokens``, ``cache_creation_tokens``, ``cost_usd`` (and
``cost_usd_micros``), ``speed``, ``session.id`` and ``event.timestamp``. The collector forwards every log record
to the bridge's receiver (``bridge/receiver.py``); this module turns the api_request ones into usage records.

* **Key**: ``cc-req:{request_id}``, the key of the transcript lines of the same request, so a request seen both
  as an event and in a transcript counts once (the ledger keeps the field-wise max; ``bridge/_rows.py`` says
  whose identity wins). A request only seen as an event (another machine, a deleted transcript, Claude Code on
  the web) counts on its own. An api_request without ``request_id`` cannot be matched with its transcript line:
  it is rejected (counted, reported in the OTLP response and in ``tokenbridge sources``), never stored.
* **Numbers** are numbers since v2.1.122 and numeric strings before; both are read.
* **Cost**: ``cost_usd_micros`` (an exact integer) or else ``cost_usd`` is the tool-reported cost (kept as
  reported, max-register with the transcript line's). A cost of 0 for a request with tokens is Claude Code not
  knowing the model's price, not a free request: the bridge's price table (or "unknown") decides.
* **Time**: ``event.timestamp`` (ISO 8601), else the record's time.
* Events of other names (tool_result, user_prompt, …) are not usage: ignored without a note.

What it yields: ``UsageRecord(source="claude_code_events")``, one request each, no group (the message id is not
in the event), not a sidechain (``query_source`` does not say so reliably).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge._rows import EVENTS_SOURCE
from bridge.ledger import CostFunction, Ledger
from bridge.record import CostOrigin, Tokens, UsageRecord
from bridge.sources._base import BaseSource, ProgressHook, ScanStats, SourceStatus, infer_provider
from bridge.sources._registry import SourceSpec

if TYPE_CHECKING:
    from bridge.config import Settings

NAME = EVENTS_SOURCE
SKIPPED_KEY = "skipped"  # source_state: events rejected so far (a running count)
LAST_SKIPPED_KEY = "last_skipped"  # source_state: why the latest one was rejected
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_MAX_REQUEST_USD = 10_000
_SERVICES = frozenset({"claude-code", "claude-code-desktop"})
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


class BadRequest(ValueError):
    """The body is not an OTLP logs request (the receiver answers 400)."""


@dataclass(slots=True)
class EventBatch:
    """The usage records of one OTLP request and the api_request events rejected from it."""

    records: list[UsageRecord] = field(default_factory=list)
    rejected: int = 0
    reason: str | None = None  # of the first rejected event

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if self.reason is None:
            self.reason = reason[:200]


# -- one log record --------------------------------------------------------------------------


def _count(attrs: dict[str, Any], key: str) -> int:
    """A non-negative integer field, sent as a number or (before v2.1.122) a numeric string."""
    v = attrs.get(key)
    if v is None or v == "":
        return 0
    if isinstance(v, bool):
        raise ValueError(f"{key} is not a count: {v!r}")
    n: Decimal | int
    try:
        n = Decimal(v.strip()) if isinstance(v, str) else Decimal(v) if isinstance(v, float) else v
    except InvalidOperation:
        raise ValueError(f"{key} is not a count: {v!r}") from None
    if isinstance(n, Decimal):
        if not n.is_finite() or n != n.to_integral_value():
            raise ValueError(f"{key} is not a whole number: {v!r}")
        n = int(n)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{key} is not a count: {v!r}")
    return n


def _amount(v: Any) -> Decimal | None:
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        d = Decimal(v.strip()) if isinstance(v, str) else Decimal(str(v))
    except InvalidOperation:
        raise ValueError(f"cost_usd is not a number: {v!r}") from None
    if not d.is_finite() or not 0 <= d <= _MAX_REQUEST_USD:
        raise ValueError(f"cost_usd {v!r} is not an amount between 0 and {_MAX_REQUEST_USD} USD")
    return d


def _reported_cost(attrs: dict[str, Any]) -> Decimal | None:
    micros = attrs.get("cost_usd_micros")
    if micros is not None and micros != "":
        return _amount(Decimal(_count(attrs, "cost_usd_micros")) / 1_000_000)
    return _amount(attrs.get("cost_usd"))


def _timestamp(attrs: dict[str, Any], time_ns: int) -> datetime:
    raw = attrs.get("event.timestamp")
    if isinstance(raw, str) and raw:
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"event.timestamp is not an ISO 8601 time: {raw!r}") from None
        if ts.tzinfo is None:
            raise ValueError(f"event.timestamp without time zone: {raw!r}")
    elif time_ns > 0:
        ts = datetime.fromtimestamp(time_ns / 1e9, UTC)
    else:
        ts = datetime.now(UTC)
    if not _EARLIEST <= ts < _LATEST:
        raise ValueError(f"event time {ts.isoformat()} is outside 2000-01-01..2100-01-01")
    return ts


def is_api_request(attrs: dict[str, Any], body: Any) -> bool:
    return attrs.get("event.name") == "api_request" or body == "claude_code.api_request"


def parse_event(attrs: dict[str, Any], time_ns: int) -> UsageRecord | None:
    """One api_request event's attributes → a record (None when it carries no tokens).

    Raises ``ValueError`` naming the field for an event that cannot be counted."""
    request_id = attrs.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip():
        raise ValueError("api_request event without request_id (cannot be matched with its transcript line)")
    tokens = Tokens(*(_count(attrs, k) for k in _TOKEN_FIELDS))
    if tokens.total == 0:
        return None  # a request with no usage (aborted): nothing to count
    model = attrs.get("model")
    model = model.strip() if isinstance(model, str) and model.strip() else "unknown"
    cost = _reported_cost(attrs)
    if cost == 0:
        cost = None  # Claude Code did not know the price: estimate it (or unknown), never $0
    session = attrs.get("session.id")
    speed = attrs.get("speed")
    return UsageRecord(
        NAME,
        infer_provider(model),
        model,
        _timestamp(attrs, time_ns),
        f"cc-req:{request_id.strip()}",
        tokens,
        cost,
        CostOrigin.REPORTED if cost is not None else CostOrigin.UNKNOWN,
        session if isinstance(session, str) and session else None,
        speed=speed if speed == "fast" else None,  # "normal" is the standard price, as no speed
    )


def _add(batch: EventBatch, resource: dict[str, Any], attrs: dict[str, Any], body: Any, time_ns: int) -> None:
    if not is_api_request(attrs, body):
        return
    service = resource.get("service.name")
    if service is not None and service not in _SERVICES:
        return  # another program's event of the same name: not Claude Code's usage
    try:
        rec = parse_event(attrs, time_ns)
    except ValueError as exc:
        batch.reject(str(exc))
        return
    if rec is not None:
        batch.records.append(rec)


# -- OTLP logs requests: protobuf and JSON ---------------------------------------------------


def _pb_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(v, kind)
    return None  # arrays, maps, bytes: no field this module reads has them


def from_protobuf(body: bytes) -> EventBatch:
    """An ``ExportLogsServiceRequest`` in protobuf (``application/x-protobuf``)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    try:
        req.ParseFromString(body)
    except Exception as exc:  # google.protobuf's DecodeError (the package has no type stubs)
        raise BadRequest(f"not an OTLP logs request (protobuf): {exc}") from None
    batch = EventBatch()
    for rl in req.resource_logs:
        resource = {kv.key: _pb_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                attrs = {kv.key: _pb_value(kv.value) for kv in lr.attributes}
                _add(batch, resource, attrs, _pb_value(lr.body), lr.time_unix_nano or lr.observed_time_unix_nano)
    return batch


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in v:
            return v[kind]
    if "intValue" in v:  # int64 is a string in OTLP/JSON (a number from some senders)
        raw = v["intValue"]
        try:
            return int(raw)
        except (TypeError, ValueError):
            return raw
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(kv["key"]): _json_value(kv.get("value")) for kv in items if isinstance(kv, dict) and "key" in kv}


def _json_list(obj: Any, *names: str) -> Iterator[dict[str, Any]]:
    """The dicts under the first present key of ``names`` (OTLP/JSON writes lowerCamelCase; snake_case tolerated)."""
    if not isinstance(obj, dict):
        return
    for name in names:
        if name in obj:
            items = obj[name]
            if not isinstance(items, list):
                raise BadRequest(f"not an OTLP logs request (JSON): {name} is not a list")
            yield from (i for i in items if isinstance(i, dict))
            return


def _json_ns(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def from_json(body: bytes) -> EventBatch:
    """An ``ExportLogsServiceRequest`` in OTLP/JSON (``application/json``)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("not an OTLP logs request (JSON): the body is not an object")
    batch = EventBatch()
    for rl in _json_list(doc, "resourceLogs", "resource_logs"):
        res = rl.get("resource")
        resource = _json_attrs(res.get("attributes")) if isinstance(res, dict) else {}
        for sl in _json_list(rl, "scopeLogs", "scope_logs"):
            for lr in _json_list(sl, "logRecords", "log_records"):
                attrs = _json_attrs(lr.get("attributes"))
                ns = _json_ns(lr.get("timeUnixNano")) or _json_ns(lr.get("observedTimeUnixNano"))
                _add(batch, resource, attrs, _json_value(lr.get("body")), ns)
    return batch


# -- the registered source -------------------------------------------------------------------


class _Events(BaseSource):
    """Nothing to scan: the receiver of ``tokenbridge run`` commits the events as they arrive."""

    def __init__(self, settings: Settings) -> None:
        self.name = NAME
        self._settings = settings

    def status(self) -> SourceStatus:
        """Its root is where ``tokenbridge run`` receives the events (the collector sends them there)."""
        port = self._settings.events_port
        if port is None:
            return SourceStatus(self.name, True, False, [], 0, ["receiver off (TOKENBRIDGE_EVENTS_PORT=off)"])
        where = f"http://{self._settings.events_host}:{port or '<a free port>'}/v1/logs"
        return SourceStatus(self.name, True, True, [f"{where} (tokenbridge run)"], 0)

    def scan(
        self,
        ledger: Ledger,
        pricer: CostFunction,
        since: datetime | None = None,
        progress: ProgressHook | None = None,
        paths: Collection[Path] | None = None,
    ) -> ScanStats:
        return ScanStats(self.name)  # rows arrive through the receiver, already committed


def skipped_state(ledger: Ledger, batch: EventBatch) -> dict[tuple[str, str], str]:
    """The source state to commit with a batch that rejected events: a running count and the reason."""
    if not batch.rejected:
        return {}
    before = int(ledger.state(NAME, SKIPPED_KEY) or 0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {(NAME, SKIPPED_KEY): str(before + batch.rejected), (NAME, LAST_SKIPPED_KEY): f"{stamp} {batch.reason}"}


def _factory(settings: Settings) -> _Events:
    return _Events(settings)


SPECS = (
    SourceSpec(
        NAME,
        "push",
        _factory,
        "Claude Code's api_request events (OTLP logs, forwarded by the collector to tokenbridge run)",
        group="claude",
        settings=("TOKENBRIDGE_EVENTS_PORT", "TOKENBRIDGE_EVENTS_HOST", "TOKENBRIDGE_EVENTS_TOKEN"),
        order=90,
    ),
)
