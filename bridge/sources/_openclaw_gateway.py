"""OpenClaw gateway's usage RPC: another view of the transcripts' usage, never added to totals.

Transport (OpenClaw's docs ``gateway/protocol.md``; ``src/gateway/server-methods/usage.ts``): a
WebSocket (default ``ws://127.0.0.1:18789``) carrying JSON text frames, not JSON-RPC: requests
``{type:"req", id, method, params}``, responses ``{type:"res", id, ok, payload|error}``, events
``{type:"event", event, payload}``. The gateway first sends a ``connect.challenge`` event; the
first request must be ``connect`` with the shared token in ``params.auth.token``. A trusted
backend client (``client.id: "gateway-client"``, ``mode: "backend"``) may omit the device
signature on loopback; elsewhere a gateway that requires device pairing refuses this client
(named as an auth failure). A bad token is answered with an error and a close (code 1008).

Read: ``usage.cost`` (``range: "all"``) for the gateway's totals and ``sessions.usage`` for its
per-session totals (local-formats.md §4.3). Both are read-only (``operator.read`` scope).

The token is sent in the connect frame only: it is never logged (the WebSocket library's frame
logging is switched off here), never put in a message or an exception.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import PollError

NAME = "openclaw"
_PROTOCOLS = (3, 4)  # protocol 3 (early 2026) and 4 (current docs) share connect and usage frames
TOKEN_FIELDS = ("input", "output", "cacheRead", "cacheWrite", "totalTokens")
# The library logs every frame at DEBUG, the connect frame (with the token) included: its logger
# is kept at WARNING whatever the root level.
_WS_LOG = logging.getLogger("tokenbridge.openclaw.websocket")
_WS_LOG.setLevel(logging.WARNING)
_ids = itertools.count(1)


@dataclass(slots=True)
class GatewayUsage:
    """What the gateway reports: totals over all time and totals per session id."""

    totals: dict[str, int]
    cost: Decimal
    missing_cost_entries: int
    sessions: dict[str, int] = field(default_factory=dict)  # session id → totalTokens


def ws_url(url: str) -> str:
    """``http(s)://`` gateway URLs (as shown by OpenClaw's dashboard) as ``ws(s)://``."""
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def without_credentials(url: str) -> str:
    """The URL without a ``user:password@`` part or a query (either may carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(unparseable URL)"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _fail(kind: str, message: str, token: str) -> PollError:
    return PollError(NAME, kind, f"gateway {message.replace(token, '***') if token else message}")


def fetch_usage(url: str, token: str, timeout: float = 5.0) -> GatewayUsage:
    """Connect, authenticate and read the gateway's usage views. Raises ``PollError`` with kind
    ``auth_failed``, ``unreachable``, ``timeout``, ``gateway_error`` or ``bad_response``."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
    from websockets.sync.client import connect

    try:
        with connect(
            ws_url(url), open_timeout=timeout, close_timeout=1, proxy=None, max_size=64 * 1024 * 1024, logger=_WS_LOG
        ) as ws:
            session = _Session(ws, token, timeout)
            session.handshake()
            cost = session.call("usage.cost", {"range": "all", "mode": "utc"})
            sessions = session.call("sessions.usage", {"range": "all", "mode": "utc", "limit": 1000})
    except InvalidStatus as exc:
        status = exc.response.status_code
        kind = "auth_failed" if status in (401, 403) else f"http_{status}"
        raise _fail(kind, f"refused the WebSocket upgrade with HTTP {status}", token) from None
    except InvalidURI:
        raise _fail("bad_config", "URL is not a ws:// or wss:// URL", token) from None
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")
        kind = "auth_failed" if code == 1008 else "gateway_error"
        raise _fail(kind, f"closed the connection (code {code}: {reason[:200] or 'no reason'})", token) from None
    except TimeoutError:
        raise _fail("timeout", f"did not answer within {timeout:g} s", token) from None
    except OSError as exc:
        raise _fail("unreachable", f"is unreachable ({exc.strerror or type(exc).__name__})", token) from None
    except WebSocketException as exc:
        raise _fail("bad_response", f"broke the WebSocket protocol ({type(exc).__name__})", token) from None
    return _usage(cost, sessions)


class _Session:
    def __init__(self, ws: Any, token: str, timeout: float) -> None:
        self.ws, self.token, self.timeout = ws, token, timeout

    def handshake(self) -> None:
        # The challenge's nonce only matters to device-signed clients; a token client answers with
        # connect either way (an older gateway that sends no challenge is not waited for long).
        try:
            first = json.loads(self.ws.recv(timeout=min(self.timeout, 2.0)))
        except TimeoutError:
            first = None
        except ValueError:
            raise _fail("bad_response", "sent a frame that is not JSON", self.token) from None
        if first is not None and not (first.get("type") == "event" and first.get("event") == "connect.challenge"):
            raise _fail("bad_response", f"sent {first.get('type')!r} before connect", self.token)
        hello = self.call(
            "connect",
            {
                "minProtocol": _PROTOCOLS[0],
                "maxProtocol": _PROTOCOLS[-1],
                "client": {"id": "gateway-client", "version": "tokenbridge", "platform": "python", "mode": "backend"},
                "role": "operator",
                "scopes": ["operator.read"],
                "caps": [],
                "commands": [],
                "permissions": {},
                "auth": {"token": self.token},
                "locale": "en-US",
                "userAgent": "tokenbridge",
            },
        )
        if hello.get("type") not in (None, "hello-ok"):
            raise _fail("bad_response", f"answered connect with {hello.get('type')!r}", self.token)

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = f"tb-{next(_ids)}"
        self.ws.send(json.dumps({"type": "req", "id": rid, "method": method, "params": params}))
        while True:
            try:
                frame = json.loads(self.ws.recv(timeout=self.timeout))
            except ValueError:
                raise _fail("bad_response", f"answered {method} with a frame that is not JSON", self.token) from None
            if not isinstance(frame, dict) or frame.get("type") != "res" or frame.get("id") != rid:
                continue  # events (ticks, presence) and other answers
            if frame.get("ok") is True:
                payload = frame.get("payload")
                if not isinstance(payload, dict):
                    raise _fail("bad_response", f"answered {method} without an object", self.token)
                return payload
            return self._refused(method, frame.get("error"))

    def _refused(self, method: str, error: Any) -> dict[str, Any]:
        err = error if isinstance(error, dict) else {}
        code, message = str(err.get("code") or "error"), str(err.get("message") or "")[:200]
        text = f"{code} {message}".lower()
        auth = method == "connect" and any(w in text for w in ("auth", "token", "pair", "device", "scope"))
        kind = "auth_failed" if auth or "unauthorized" in text or "forbidden" in text else "gateway_error"
        raise _fail(kind, f"refused {method}: {code}{': ' + message if message else ''}", self.token)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PollError(NAME, "bad_response", f"gateway usage has no count for {what}")
    return int(value)


def _usage(cost: dict[str, Any], sessions: dict[str, Any]) -> GatewayUsage:
    totals = cost.get("totals")
    if not isinstance(totals, dict):
        raise PollError(NAME, "bad_response", "gateway usage.cost has no totals")
    money = totals.get("totalCost", 0)
    if isinstance(money, bool) or not isinstance(money, int | float):
        raise PollError(NAME, "bad_response", "gateway usage.cost totalCost is not a number")
    out = GatewayUsage(
        {k: _count(totals.get(k, 0), f"totals.{k}") for k in TOKEN_FIELDS},
        Decimal(str(money)),
        _count(totals.get("missingCostEntries", 0), "totals.missingCostEntries"),
    )
    for entry in sessions.get("sessions") or []:
        usage = entry.get("usage") if isinstance(entry, dict) else None
        sid = entry.get("sessionId") if isinstance(entry, dict) else None
        if isinstance(sid, str) and isinstance(usage, dict):
            out.sessions[sid] = out.sessions.get(sid, 0) + _count(usage.get("totalTokens", 0), f"{sid} totalTokens")
    return out
