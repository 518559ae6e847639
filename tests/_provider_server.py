"""A real HTTP server on 127.0.0.1 that answers like the providers' usage, cost and balance APIs.

Not a transport mock: the bridge's own ``httpx`` client talks to it over TCP. Each route is a
handler ``(Request) -> Reply``; ``BucketApi`` serves a bucketed listing the way OpenAI and
Anthropic do (``start_time``/``starting_at``, ``limit`` buckets per page, opaque ``next_page``
cursors, ``has_more``), from bucket data a test can change between polls. ``script`` queues
one-off replies (401, 429 with ``Retry-After``, 500, a truncated body, a slow answer) in front
of a route.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, default=str).encode()


Handler = Callable[[Request], Reply]
HOUR = 3600
DAY = 86400


class ProviderServer:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.queued: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        owner = self

        class _H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                req = Request("GET", parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
                reply = owner._answer(req)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ProviderServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, handler: Handler | Reply | dict[str, Any]) -> None:
        if isinstance(handler, Reply):
            fixed = handler
            self.routes[path] = lambda _r: fixed
        elif isinstance(handler, dict):
            body = handler
            self.routes[path] = lambda _r: Reply(200, body)
        else:
            self.routes[path] = handler

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, then the route again."""
        with self._lock:
            self.queued.setdefault(path, []).extend(replies)

    def calls(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _answer(self, req: Request) -> Reply:
        with self._lock:
            self.requests.append(req)
            queue = self.queued.get(req.path)
            if queue:
                return queue.pop(0)
        handler = self.routes.get(req.path)
        if handler is None:
            return Reply(404, {"error": {"message": f"no route {req.path}", "type": "not_found"}})
        return handler(req)


def _cursor(start: int) -> str:
    return "page_" + base64.b64encode(f"{start}".encode()).decode()


def _uncursor(page: str) -> int:
    return int(base64.b64decode(page.removeprefix("page_")).decode())


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BucketApi:
    """A bucketed listing. ``buckets[start] = [result, ...]``; every interval from the requested
    start up to ``now`` is a bucket (empty ones included, oldest first), ``limit`` per page.

    ``style="openai"``: Unix-second ``start_time``/``end_time``, ``object`` fields.
    ``style="anthropic"``: RFC 3339 ``starting_at``/``ending_at``, ``group_by[]`` arrays.
    A page cursor replayed with other parameters gets a 400, as the providers answer.
    """

    def __init__(self, width: int, now: Callable[[], float], style: str = "openai", default_limit: int = 7) -> None:
        self.width = width
        self.now = now
        self.style = style
        self.default_limit = default_limit
        self.buckets: dict[int, list[dict[str, Any]]] = {}
        self._chains: dict[str, tuple[tuple[str, str], ...]] = {}

    def put(self, start: int, *results: dict[str, Any]) -> None:
        self.buckets[start] = list(results)

    def __call__(self, req: Request) -> Reply:
        start_key = "start_time" if self.style == "openai" else "starting_at"
        raw = req.one(start_key)
        if raw is None:
            return Reply(400, {"error": {"message": f"{start_key} is required", "type": "invalid_request_error"}})
        start = self._time(raw) // self.width * self.width
        fixed = tuple(sorted((k, ",".join(v)) for k, v in req.query.items() if k != "page"))
        page = req.one("page")
        if page is not None:
            if self._chains.get(page) != fixed:
                err = {"message": "page token used with other parameters", "type": "invalid_request_error"}
                return Reply(400, {"error": err})
            start = _uncursor(page)
        limit = int(req.one("limit") or self.default_limit)
        end_raw = req.one("end_time" if self.style == "openai" else "ending_at")
        end = int(self.now()) if end_raw is None else self._time(end_raw)
        starts = list(range(start, end, self.width))
        chunk, rest = starts[:limit], starts[limit:]
        data = [self._bucket(s) for s in chunk]
        nxt = None
        if rest:
            nxt = _cursor(rest[0])
            self._chains[nxt] = fixed
        if self.style == "openai":
            body: dict[str, Any] = {"object": "page", "data": data, "has_more": bool(rest), "next_page": nxt}
        else:
            body = {"data": data, "has_more": bool(rest), "next_page": nxt}
        return Reply(200, body)

    def _time(self, raw: str) -> int:
        if self.style == "openai":
            return int(raw)
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())

    def _bucket(self, s: int) -> dict[str, Any]:
        results = [dict(r) for r in self.buckets.get(s, [])]
        if self.style == "openai":
            return {"object": "bucket", "start_time": s, "end_time": s + self.width, "results": results}
        return {"starting_at": iso(s), "ending_at": iso(s + self.width), "results": results}


@contextmanager
def running_server() -> Iterator[ProviderServer]:
    srv = ProviderServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def openai_apis(server: ProviderServer, now: Callable[[], float] = time.time) -> dict[str, BucketApi]:
    """OpenAI's completions, embeddings (hourly) and costs (daily) listings on ``server``."""
    out = {
        "completions": BucketApi(HOUR, now, default_limit=24),
        "embeddings": BucketApi(HOUR, now, default_limit=24),
        "costs": BucketApi(DAY, now),
    }
    server.route("/v1/organization/usage/completions", out["completions"])
    server.route("/v1/organization/usage/embeddings", out["embeddings"])
    server.route("/v1/organization/costs", out["costs"])
    return out


def anthropic_apis(server: ProviderServer, now: Callable[[], float] = time.time) -> dict[str, BucketApi]:
    """Anthropic's messages usage (hourly) and cost (daily) reports on ``server``."""
    out = {
        "messages": BucketApi(HOUR, now, style="anthropic", default_limit=24),
        "cost": BucketApi(DAY, now, style="anthropic"),
    }
    server.route("/v1/organizations/usage_report/messages", out["messages"])
    server.route("/v1/organizations/cost_report", out["cost"])
    return out


def anthropic_usage(model: str | None, *, uncached: int, read: int, w5m: int, w1h: int, output: int) -> dict[str, Any]:
    return {
        "uncached_input_tokens": uncached,
        "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": 0},
        "model": model,
        "service_tier": None,
        "api_key_id": None,
        "workspace_id": None,
        "context_window": None,
        "inference_geo": None,
        "account_id": None,
        "service_account_id": None,
    }


def anthropic_cost(amount: str, description: str, model: str | None, token_type: str | None = None) -> dict[str, Any]:
    """A cost row: ``amount`` in cents as a decimal string."""
    return {
        "amount": amount,
        "currency": "USD",
        "description": description,
        "cost_type": "tokens" if model else "web_search",
        "model": model,
        "token_type": token_type,
        "service_tier": "standard" if model else None,
        "context_window": "0-200k" if model else None,
        "inference_geo": None,
        "workspace_id": None,
    }


def openai_completion(model: str, *, input: int, cached: int, output: int, requests: int, writes: int | None = 0,
                      new_fields: bool = True) -> dict[str, Any]:  # fmt: skip
    """A completions result; ``new_fields=False`` gives the pre-2026-07 field set."""
    r: dict[str, Any] = {
        "object": "organization.usage.completions.result",
        "input_tokens": input,
        "input_cached_tokens": cached,
        "output_tokens": output,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": requests,
    }
    if new_fields:
        w = writes or 0
        r.update(
            {
                "input_cache_write_tokens": w,
                "input_uncached_tokens": input - cached - w,
                "input_text_tokens": input - cached - w,
                "output_text_tokens": output,
                "input_cached_text_tokens": cached,
                "input_cached_audio_tokens": 0,
                "input_image_tokens": 0,
                "input_cached_image_tokens": 0,
                "output_image_tokens": 0,
            }
        )
    r.update({"project_id": None, "user_id": None, "api_key_id": None, "model": model})
    r.update({"batch": None, "service_tier": None})
    return r


def openai_embedding(model: str, *, input: int, requests: int) -> dict[str, Any]:
    return {
        "object": "organization.usage.embeddings.result",
        "input_tokens": input,
        "num_model_requests": requests,
        "project_id": None,
        "user_id": None,
        "api_key_id": None,
        "model": model,
    }


def openai_cost(value: float, line_item: str | None, project: str | None = "proj_7Qx2LmN4pR8sT1vW") -> dict[str, Any]:
    """A costs result. ``value`` is US dollars; ``json.dumps`` writes a float with the shortest
    digits that read back as it, i.e. the literal the test wrote."""
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item,
        "project_id": project,
        "api_key_id": None,
        "quantity": 1000,
        "quantity_unit": "tokens",
    }


def openai_error(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
