"""The OTLP/HTTP logs receiver of ``tokenbridge run``: Claude Code's events, forwarded by the collector.

``POST /v1/logs`` takes an ``ExportLogsServiceRequest`` as protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``), gzip-compressed or not (the collector's ``otlphttp`` exporter compresses by default). Its
api_request events become usage records (``bridge/sources/claude_code_events.py``) committed to the ledger
**before** the answer: a 200 means they are stored; any failure answers so that the collector retries (503) or
drops a request that can never succeed (400, 413, 415). Re-sent events merge into their rows and add nothing.

* One thread, one ``Ledger`` connection of its own (SQLite connections stay in the thread that opened them);
  requests are handled one at a time, which also keeps each commit small and ordered.
* Bodies are limited (``MAX_BODY`` before and after decompression) and read with a timeout, so a slow or huge
  sender cannot hold the thread or the memory.
* Loopback by default. Another address must be asked for (``TOKENBRIDGE_EVENTS_HOST``, e.g. ``0.0.0.0`` inside
  the Compose network, where the port is not published) and then needs a shared token
  (``TOKENBRIDGE_EVENTS_TOKEN``): anything that reaches the port could otherwise add usage. With a token, every
  request must carry ``Authorization: Bearer <token>`` (the collector's exporter sends it); others get 401,
  checked before the body is read, and logged without what they sent.
* After a commit that changed rows, ``on_commit`` wakes the daemon's loop, which exports the new totals.
"""

from __future__ import annotations

import hmac
import logging
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from bridge import __version__
from bridge.errors import ConfigError, LedgerError
from bridge.ledger import CostFunction, Ledger
from bridge.sources.claude_code_events import BadRequest, EventBatch, from_json, from_protobuf, skipped_state

log = logging.getLogger("tokenbridge.receiver")

MAX_BODY = 16 * 1024 * 1024  # far above a collector batch of events (a few hundred bytes each)
PATH = "/v1/logs"
_READ_TIMEOUT_S = 10.0
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
TOKEN_SETTING = "TOKENBRIDGE_EVENTS_TOKEN"  # noqa: S105 (the name of the setting, not a secret)
MIN_TOKEN_LENGTH = 16


def check_auth(host: str, token: str | None) -> None:
    """Refuse a receiver that anything beyond this machine could reach without a token, and a token that cannot
    travel in a header or is too short to be a secret. Messages never contain the token."""
    from bridge.web import is_loopback

    if token is None:
        if not is_loopback(host):
            raise ConfigError(
                TOKEN_SETTING,
                f"required when the events receiver listens on {host} (not loopback): set the same random value "
                f"(at least {MIN_TOKEN_LENGTH} characters) for the bridge and the collector; scripts/init.sh "
                "writes one to .env",
            )
        return
    if len(token) < MIN_TOKEN_LENGTH or not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError(
            TOKEN_SETTING,
            f"must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces "
            f"(it has {len(token)} characters)",
        )


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class EventReceiver:
    """``POST /v1/logs`` on ``host:port`` (port 0: any free one), served on a background thread."""

    def __init__(
        self,
        ledger_opener: Callable[[], Ledger],
        pricer: CostFunction,
        host: str = "127.0.0.1",
        port: int = 14319,
        on_commit: Callable[[], None] | None = None,
        token: str | None = None,
    ) -> None:
        check_auth(host, token)
        self._token = token.encode() if token is not None else None
        self._open_ledger = ledger_opener
        self._pricer = pricer
        self._on_commit = on_commit
        self._ledger: Ledger | None = None
        try:
            self.httpd = HTTPServer((host, port), _handler_class(self))
        except OSError as exc:
            raise ConfigError(
                "TOKENBRIDGE_EVENTS_PORT", f"cannot receive events on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    def start(self) -> None:
        """Open the ledger in the serving thread and serve; raises if the ledger cannot be opened."""
        self._thread = threading.Thread(target=self._serve, name="tokenbridge-events", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed
        log.info("receiving Claude Code events on %s", self.url)

    def _serve(self) -> None:
        try:
            self._ledger = self._open_ledger()
        except BaseException as exc:
            self._failed = exc
            self.httpd.server_close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._ledger.close()

    def stop(self) -> None:
        if self._thread is not None and self._failed is None:
            self.httpd.shutdown()  # waits for the request in progress: its commit completes or rolls back
            self._thread.join(10)
        self.httpd.server_close()

    def authorized(self, header: str | None) -> bool:
        """Whether a request's ``Authorization`` header carries the token (always, without a token)."""
        if self._token is None:
            return True
        scheme, _, given = (header or "").strip().partition(" ")
        # Constant time: the answer's timing tells nothing about how much of a guess was right.
        same = hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token)
        return scheme.lower() == "bearer" and same

    def handle(self, body: bytes, content_type: str) -> tuple[int, EventBatch]:
        """Decode and commit one request's events (in the serving thread)."""
        batch = from_json(body) if content_type == _JSON else from_protobuf(body)
        assert self._ledger is not None
        reload = getattr(self._pricer, "reload_if_changed", None)
        if reload is not None:
            reload()  # a price table refreshed by the daemon prices these events too
        result = self._ledger.commit(batch.records, self._pricer, state=skipped_state(self._ledger, batch))
        if batch.rejected:
            log.warning("%d api_request event(s) rejected: %s", batch.rejected, batch.reason)
        changed = result.new_requests + result.updated_requests
        if changed and self._on_commit is not None:
            self._on_commit()
        return changed, batch


def _response(batch: EventBatch | None, content_type: str) -> bytes:
    """An ``ExportLogsServiceResponse``, with a partial success naming rejected events."""
    rejected = batch.rejected if batch is not None else 0
    reason = (batch.reason or "") if batch is not None else ""
    if content_type == _JSON:
        import orjson

        body: dict[str, Any] = {}
        if rejected:
            body["partialSuccess"] = {"rejectedLogRecords": str(rejected), "errorMessage": reason}
        return orjson.dumps(body)
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls

    msg = ls.ExportLogsServiceResponse()
    if rejected:
        msg.partial_success.rejected_log_records = rejected
        msg.partial_success.error_message = reason
    return bytes(msg.SerializeToString())


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    raw_length = handler.headers.get("Content-Length")
    if raw_length is None:
        raise _Refused(411, "Content-Length required")
    try:
        length = int(raw_length)
    except ValueError:
        raise _Refused(400, "bad Content-Length") from None
    if not 0 <= length <= MAX_BODY:
        raise _Refused(413, f"body larger than {MAX_BODY} bytes")
    body = handler.rfile.read(length)
    if len(body) != length:
        raise _Refused(400, "body shorter than its Content-Length")
    encoding = str(handler.headers.get("Content-Encoding", "") or "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(body)
    if encoding != "identity":
        raise _Refused(415, f"Content-Encoding {encoding!r} not supported (gzip or none)")
    return body


def _gunzip(body: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, MAX_BODY + 1)
    except zlib.error as exc:
        raise _Refused(400, f"bad gzip body: {exc}") from None
    if len(out) > MAX_BODY or d.unconsumed_tail:
        raise _Refused(413, f"body larger than {MAX_BODY} bytes once decompressed")
    return out


def _handler_class(receiver: EventReceiver) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        server_version = f"tokenbridge/{__version__}"
        timeout = _READ_TIMEOUT_S  # a sender that stops mid-request frees the thread
        # HTTP/1.0: one request per connection. The one serving thread would otherwise sit in a kept-alive
        # connection waiting for the collector's next request, and neither serve another sender nor stop.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._send(405 if self.path.split("?")[0] == PATH else 404, b"", "text/plain", close=False)

        def do_POST(self) -> None:
            ctype = str(self.headers.get("Content-Type", "")).split(";")[0].strip().lower()
            try:
                if not receiver.authorized(self.headers.get("Authorization")):
                    # Before the path or the body: an unknown sender learns nothing and costs no decoding.
                    raise _Refused(401, f"missing or wrong token ({TOKEN_SETTING}) from {self.client_address[0]}")
                if self.path.split("?")[0] != PATH:
                    raise _Refused(404, f"{self.path}: not found (events go to {PATH})")
                if ctype not in (_PROTOBUF, _JSON):
                    raise _Refused(415, f"Content-Type {ctype!r}: expected {_PROTOBUF} or {_JSON}")
                body = _read_body(self)
                _, batch = receiver.handle(body, ctype)
            except _Refused as exc:
                self._refuse(exc.code, str(exc))
                return
            except BadRequest as exc:
                self._refuse(400, str(exc))
                return
            except LedgerError as exc:  # busy, disk full: the collector retries later
                log.warning("events not stored (the collector will retry): %s", exc)
                self._refuse(503, "ledger unavailable, retry later", retry_after=True)
                return
            except Exception as exc:  # a bug: nothing was committed; answer, log, keep serving
                log.exception("events request failed")
                self._refuse(500, f"unexpected {type(exc).__name__}")
                return
            self._send(200, _response(batch, ctype), ctype if ctype == _JSON else _PROTOBUF)

        def _refuse(self, code: int, message: str, retry_after: bool = False) -> None:
            if code != 503:
                log.warning("refused a request to the events receiver (%d): %s", code, message)
            # The unread rest of a refused body would be taken for the next request: close.
            self._send(code, message.encode(), "text/plain; charset=utf-8", close=True, retry_after=retry_after)

        def _send(self, code: int, data: bytes, ctype: str, close: bool = False, retry_after: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if retry_after:
                self.send_header("Retry-After", "5")
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="tokenbridge events"')
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

    return _Handler
