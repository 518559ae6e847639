"""``tokenbridge serve`` (and ``tokenbridge run --http-port``): a JSON API and one page, from the ledger.

Built on the standard library's threading HTTP server: no web framework to import (``serve``
starts in a fraction of a second and the package keeps its small dependency list), nothing to
fetch from a CDN (the page works offline: charts are SVG drawn on the server). Numbers come from
``bridge._api``, which uses the report code, so the page and ``tokenbridge report`` agree.

Security: loopback by default. Binding to another address requires ``TOKENBRIDGE_HTTP_TOKEN``;
every request must then carry it (``Authorization: Bearer`` or the cookie set by ``/login``).
``POST /api/sync`` is refused cross-site (``Origin``/``Sec-Fetch-Site`` must be same-origin and
the body must be JSON, which a cross-site form cannot send without a preflight we never grant).
No endpoint serves secrets: ``/api/providers`` shows which variables a source reads, never values.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bridge import __version__, _api, app, config
from bridge.errors import ConfigError, TokenbridgeError
from bridge.ledger import Ledger

log = logging.getLogger("tokenbridge.web")

_COOKIE = "tokenbridge_token"
_MAX_BODY = 64 * 1024

Handler = Callable[["_Request"], tuple[int, Any]]


class _Request:
    """What an endpoint sees: the parsed query and the settings."""

    def __init__(self, params: dict[str, list[str]], settings: config.Settings, server: WebServer) -> None:
        self.params = params
        self.settings = settings
        self.server = server

    def ledger(self) -> Ledger:
        return Ledger.open(self.settings.state_dir)


def _usage(compute: Callable[[Ledger, _api.Query], dict[str, Any]]) -> Handler:
    """An endpoint that answers ``compute`` over the ledger for the request's filters."""

    def handler(r: _Request) -> tuple[int, Any]:
        q = _api.parse_query(r.params)
        with r.ledger() as led:
            return 200, compute(led, q)

    return handler


def _timeline(r: _Request) -> tuple[int, Any]:
    q = _api.parse_query(r.params)
    days = _api.int_param(r.params, "days", 30, 1, _api.MAX_DAYS)
    by = _api.choice_param(r.params, "by", _api.BY)
    with r.ledger() as led:
        return 200, _api.timeline(led, q, days, by)


def _providers(r: _Request) -> tuple[int, Any]:
    return 200, {"sources": app.source_rows(r.settings, views=False)}  # no live gateway call per request


def _sync_log(r: _Request) -> tuple[int, Any]:
    with r.ledger() as led:
        return 200, {"passes": app.sync_log(led)}


def _healthz(r: _Request) -> tuple[int, Any]:
    try:
        with r.ledger() as led:
            requests = led.request_count()
    except TokenbridgeError as exc:
        return 503, {"status": "error", "error": str(exc), "version": __version__}
    return 200, {"status": "ok", "version": __version__, "requests": requests}


def _do_sync(r: _Request) -> tuple[int, Any]:
    if not r.server.sync_lock.acquire(blocking=False):
        return 409, {"error": "a sync pass is already running"}
    try:
        result = app.sync(r.settings, export=r.settings.otlp, trigger="http")
    finally:
        r.server.sync_lock.release()
    return 200, {
        "newRequests": result.new_requests,
        "sources": [
            {"source": s.source, "newRequests": s.new_requests, "errors": s.errors, "complete": s.complete}
            for s in result.stats
        ],
        "exported": result.export_ok,
    }


_GET: dict[str, Handler] = {
    "/api/usage/summary": _usage(_api.summary),
    "/api/usage/by-model": _usage(_api.by_model),
    "/api/usage/by-provider": _usage(_api.by_provider),
    "/api/usage/timeline": _timeline,
    "/api/providers": _providers,
    "/api/sync/log": _sync_log,
    "/healthz": _healthz,
}
_POST: dict[str, Handler] = {"/api/sync": _do_sync}


class WebServer:
    """The HTTP server of ``serve`` and ``run --http-port``, on a background thread."""

    def __init__(self, settings: config.Settings, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.settings = settings
        self.token = settings.env.get("TOKENBRIDGE_HTTP_TOKEN", "").strip() or None
        if not is_loopback(host) and self.token is None:
            raise ConfigError(
                "--host", f"binding to {host} exposes your usage: set TOKENBRIDGE_HTTP_TOKEN to require a token"
            )
        self.sync_lock = threading.Lock()
        try:
            self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        except OSError as exc:
            raise ConfigError("--port", f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tokenbridge-http", daemon=True)
        self._thread.start()
        log.info("serving the web view and API on %s", self.url)

    def serve_forever(self) -> None:
        log.info("serving the web view and API on %s", self.url)
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, headers: Any) -> bool:
        if self.token is None:
            return True
        auth = str(headers.get("Authorization", ""))
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token):
            return True
        cookie = SimpleCookie(str(headers.get("Cookie", "")))
        got = cookie.get(_COOKIE)
        return got is not None and hmac.compare_digest(got.value, self.token)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(headers: Any) -> bool:
    """A browser's request from another site carries an Origin (or Sec-Fetch-Site) that says so."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (curl, scripts)
    return urlsplit(str(origin)).netloc == str(headers.get("Host", ""))


def _handler_class(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        server_version = f"tokenbridge/{__version__}"

        def log_message(self, format: str, *args: Any) -> None:  # access log at debug level only
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            params = parse_qs(parts.query, keep_blank_values=True)
            try:
                if path == "/login":
                    self._login(method)
                    return
                if not server.authorized(self.headers):
                    self._unauthorized(path)
                    return
                if method == "GET" and path in ("/", "/index.html"):
                    self._page(params)
                    return
                if method == "GET" and path == "/docs":
                    from bridge._openapi import docs_html

                    self._send(200, docs_html().encode(), "text/html; charset=utf-8")
                    return
                if method == "GET" and path == "/openapi.json":
                    from bridge._openapi import spec

                    self._json(200, spec())
                    return
                table = _GET if method == "GET" else _POST
                handler = table.get(path)
                if handler is None:
                    other = _POST if method == "GET" else _GET
                    code = 405 if path in other else 404
                    self._json(
                        code, {"error": f"{method} {path}: {'method not allowed' if code == 405 else 'not found'}"}
                    )
                    return
                if method == "POST" and not self._post_allowed():
                    return
                code, body = handler(_Request(params, server.settings, server))
                self._json(code, body)
            except _api.BadRequest as exc:
                self._json(400, {"error": str(exc), "parameter": exc.key})
            except TokenbridgeError as exc:
                self._json(500, {"error": str(exc)})
            except BrokenPipeError:
                pass
            except Exception as exc:  # a bug: answer, log, keep serving
                log.exception("HTTP %s %s failed", method, path)
                self._json(500, {"error": f"unexpected {type(exc).__name__}"})

        def _post_allowed(self) -> bool:
            if not _same_origin(self.headers):
                self._json(403, {"error": "cross-site request refused"})
                return False
            ctype = str(self.headers.get("Content-Type", "")).split(";")[0].strip()
            if ctype != "application/json":
                self._json(415, {"error": "POST bodies must be application/json"})
                return False
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._json(413, {"error": "body too large"})
                return False
            self.rfile.read(length)
            return True

        def _login(self, method: str) -> None:
            if server.token is None:
                self._redirect("/")
                return
            if method == "GET":
                self._send(200, _LOGIN_PAGE.encode(), "text/html; charset=utf-8")
                return
            if not _same_origin(self.headers):
                self._json(403, {"error": "cross-site request refused"})
                return
            length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            given = (form.get("token") or [""])[0]
            if not hmac.compare_digest(given, server.token):
                time.sleep(0.5)  # slows guessing
                self._send(401, _LOGIN_PAGE.replace("<!--msg-->", "<p>Wrong token.</p>").encode(), "text/html")
                return
            cookie = f"{_COOKIE}={server.token}; HttpOnly; SameSite=Strict; Path=/"
            self._redirect("/", {"Set-Cookie": cookie})

        def _unauthorized(self, path: str) -> None:
            if path.startswith("/api/") or path in ("/healthz", "/openapi.json"):
                self._json(401, {"error": "a token is required (Authorization: Bearer ... or /login)"})
            else:
                self._redirect("/login")

        def _page(self, params: dict[str, list[str]]) -> None:
            from bridge._page import render

            try:
                html = render(server.settings, params)
            except _api.BadRequest as exc:
                self._send(400, f"bad parameter: {exc}".encode(), "text/plain; charset=utf-8")
                return
            self._send(200, html.encode(), "text/html; charset=utf-8")

        def _json(self, code: int, body: Any) -> None:
            self._send(code, json.dumps(body, indent=1).encode(), "application/json")

        def _redirect(self, to: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", to)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, code: int, data: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(data)

    return _Handler


_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>tokenbridge — sign in</title></head>
<body style="font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto">
<h1>tokenbridge</h1><!--msg-->
<form method="post" action="/login"><label>Token <input type="password" name="token" autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""
