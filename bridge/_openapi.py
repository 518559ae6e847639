"""The HTTP API's OpenAPI 3.1 description (``/openapi.json``) and a plain HTML page of it (``/docs``).

The page is rendered here, without Swagger UI: that would be fetched from a CDN, and the web view
must work offline.
"""

from __future__ import annotations

import html
from typing import Any

from bridge import __version__

_FILTERS = [
    ("since", "First day, YYYY-MM-DD, inclusive (in `timezone`)."),
    ("until", "Last day, YYYY-MM-DD, inclusive."),
    ("timezone", "IANA time zone for day buckets (default: the system zone)."),
    ("source", "Only these sources or groups (repeatable or comma-separated)."),
    ("provider", "Only these providers (repeatable or comma-separated)."),
]
_ERRORS = {"400": {"description": "A bad parameter; `parameter` names it."}, "401": {"description": "Token required."}}

_ENDPOINTS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("get", "/api/usage/summary", "Totals for all time, the last 30 and 7 days and today.", _FILTERS),
    ("get", "/api/usage/by-model", "Totals per model (and provider), largest first.", _FILTERS),
    ("get", "/api/usage/by-provider", "Totals per provider, largest first.", _FILTERS),
    (
        "get",
        "/api/usage/timeline",
        "Daily totals, optionally split by provider, model or source.",
        [
            *_FILTERS,
            ("days", "How many days back from today (or `until`), 1..3660; default 30."),
            ("by", "provider, model or source."),
        ],
    ),
    ("get", "/api/providers", "Every source: kind, group, detected, enabled, health (as `tokenbridge sources`).", []),
    ("post", "/api/sync", "Run an ingest pass now (JSON body `{}`; same-origin only).", []),
    ("get", "/api/sync/log", "The last 20 ingest passes: when, what, how many, errors.", []),
    ("get", "/healthz", "Liveness: the ledger opens.", []),
]


def spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, params in _ENDPOINTS:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {"application/json": {}}}, **_ERRORS},
        }
        if params:
            op["parameters"] = [
                {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                for n, d in params
            ]
        if method == "post":
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "tokenbridge", "version": __version__, "description": "AI coding usage from the ledger."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def docs_html() -> str:
    rows = []
    for method, path, summary, params in _ENDPOINTS:
        plist = "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(d)}</li>" for n, d in params)
        rows.append(
            f"<section><h2><code>{method.upper()} {html.escape(path)}</code></h2><p>{html.escape(summary)}</p>"
            + (f"<ul>{plist}</ul>" if plist else "")
            + "</section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tokenbridge API</title></head>"
        "<body style='font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto'>"
        "<h1>tokenbridge API</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Errors are JSON "
        '<code>{"error": ..., "parameter": ...}</code> with status 400.</p>' + "".join(rows) + "</body></html>"
    )
