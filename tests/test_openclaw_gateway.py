"""OpenClaw gateway usage RPC (local-formats.md §4.3) against a real WebSocket server on loopback
speaking the gateway protocol (challenge event, ``connect`` with the token, ``req``/``res``
frames): a view beside the transcripts, reconciled, never added; auth failures and an
unreachable gateway named; the token never logged or shown."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from bridge.ledger import Ledger
from bridge.sources._openclaw_view import view
from bridge.sources.openclaw import OpenClaw
from tests.conftest import ledger_sums as totals
from tests.test_openclaw import LINES, SID, TWO, ClawHome
from tests.test_openclaw_log import DAY_LOG, ONLY, ONLY_RUN, Logs

TOKEN = "gw-tok-5ecr3t-0123456789"
FORK = "b7300bff-0000-4c11-97ae-00000000000f"


def _totals(inp: int, out: int, read: int, write: int, cost: float, missing: int = 0) -> dict[str, Any]:
    """``createEmptySessionCostSummary`` fields (usage.ts), filled."""
    return {"input": inp, "output": out, "cacheRead": read, "cacheWrite": write,
            "totalTokens": inp + out + read + write, "totalCost": cost, "inputCost": 0.0, "outputCost": 0.0,
            "cacheReadCost": 0.0, "cacheWriteCost": 0.0, "missingCostEntries": missing}  # fmt: skip


# The gateway sees the transcript of SID as the ledger does, plus a fork copy the ledger dedups.
SID_USAGE = _totals(32, 440, 84000, 1800, 0.038676)
FORK_USAGE = _totals(100, 200, 700, 0, 0.0021, missing=1)
ALL = _totals(132, 640, 84700, 1800, 0.040776, missing=1)
COST = {"updatedAt": 1775610300000, "days": 2, "totals": ALL,
        "daily": [{"date": "2026-04-08", **ALL}]}  # fmt: skip
SESSIONS = {
    "updatedAt": 1775610300000, "startDate": "1970-01-01", "endDate": "2026-04-08",
    "sessions": [
        {"key": f"agent:main:{SID}", "sessionId": SID, "agentId": "main", "updatedAt": 1775610250500,
         "usage": {**SID_USAGE, "sessionId": SID}},
        {"key": f"agent:main:{FORK}", "sessionId": FORK, "agentId": "main", "updatedAt": 1775610250500,
         "usage": {**FORK_USAGE, "sessionId": FORK}},
    ],
    "totals": ALL, "aggregates": {"messages": {"total": 4}},
}  # fmt: skip


class Gateway:
    """A loopback OpenClaw gateway: the protocol's frames, replies shaped like usage.ts's."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.http_status: int | None = None  # answer the upgrade with this HTTP status instead
        self.silent = False  # accept the socket, never answer
        self.close_on_bad_token = False  # close 1008 without an error frame
        self.requests: list[dict[str, Any]] = []
        self.conns: list[ServerConnection] = []
        # Its own silent logger: a connection's thread may log its close after the test's captured streams closed.
        quiet = logging.getLogger("tests.openclaw_gateway")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        self.server: Server = serve(self._handle, "127.0.0.1", 0, process_request=self._http, logger=quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def _http(self, conn: ServerConnection, request: Any) -> Any:
        if self.http_status is not None:
            return conn.respond(HTTPStatus(self.http_status), "Unauthorized\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        with contextlib.suppress(ConnectionClosed):  # the client gave up (the silent gateway's timeout)
            self._serve(ws)

    def _serve(self, ws: ServerConnection) -> None:
        if self.silent:
            ws.recv()  # the connect request, never answered
            ws.recv()
            return
        ws.send(json.dumps({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n-1", "ts": 1}}))
        for raw in ws:
            frame = json.loads(raw)
            self.requests.append(frame)
            method, rid = frame["method"], frame["id"]
            if method == "connect" and frame["params"]["auth"].get("token") != self.token:
                if not self.close_on_bad_token:
                    sent = frame["params"]["auth"].get("token")
                    err = {"code": "INVALID_REQUEST", "message": f"unauthorized: gateway token mismatch ({sent})"}
                    ws.send(json.dumps({"type": "res", "id": rid, "ok": False, "error": err}))
                ws.close(1008, "unauthorized: gateway token mismatch")
                return
            ws.send(json.dumps({"type": "event", "event": "tick", "payload": {"ts": 2}, "seq": 1}))
            payload = {
                "connect": {"type": "hello-ok", "protocol": 3, "policy": {"tickIntervalMs": 15000}},
                "usage.cost": COST,
                "sessions.usage": SESSIONS,
            }.get(method)
            if payload is None:
                err = {"code": "INVALID_REQUEST", "message": f"unknown method: {method}"}
                ws.send(json.dumps({"type": "res", "id": rid, "ok": False, "error": err}))
            else:
                ws.send(json.dumps({"type": "res", "id": rid, "ok": True, "payload": payload}))

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        for ws in self.conns:  # their threads end with them, not after the test
            ws.close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def filled(tmp_path: Path, ledger: Ledger, pricer: Any) -> Ledger:
    """SID's transcript, and a log-only session (a fallback row the gateway view must leave out)."""
    claw = ClawHome(tmp_path / ".openclaw")
    claw.append(claw.transcript(), *LINES)
    logs = Logs(tmp_path / "tmp")
    logs.write(DAY_LOG, ONLY_RUN)
    OpenClaw(roots=[claw.root], log_tmp=logs.tmp).scan(ledger, pricer)
    assert totals(ledger) == {k: TWO[k] + ONLY[k] for k in TWO}
    return ledger


def test_gateway_totals_are_reconciled_against_the_transcripts_without_the_log_rows(gateway, filled, caplog):
    caplog.set_level(logging.DEBUG)
    before = filled.totals()
    out = view(filled, gateway.url, TOKEN)
    gw = out["gateway"]
    assert gw["state"] == "ok" and gw["url"] == gateway.url
    assert gw["totals"] == {"input": 132, "output": 640, "cacheRead": 84700, "cacheWrite": 1800,
                            "totalTokens": 87272, "totalCost": "0.040776", "missingCostEntries": 1}  # fmt: skip
    assert gw["transcripts"] == {"input": 32, "output": 440, "cacheRead": 84000, "cacheWrite": 1800,
                                 "totalTokens": 86272, "totalCost": "0.038676"}  # fmt: skip
    assert gw["difference"] == {"input": 100, "output": 200, "cacheRead": 700, "cacheWrite": 0, "totalTokens": 1000}
    assert gw["sessions"] == {"gateway": 2, "differing": 1}
    assert gw["differingSessions"] == [{"session": FORK, "gateway": 1000, "transcripts": 0}]
    assert out["logFallback"] == {"sessions": 1, "requests": 1, "tokens": 1055}
    assert filled.totals() == before  # a view: nothing added
    # Only read-only methods were called, the token only in the connect frame.
    assert [r["method"] for r in gateway.requests] == ["connect", "usage.cost", "sessions.usage"]
    assert gateway.requests[1]["params"] == {"range": "all", "mode": "utc"}
    assert all(TOKEN not in json.dumps(r) for r in gateway.requests[1:])
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(out)


@pytest.mark.parametrize("close_only", [False, True])
def test_wrong_token_is_an_auth_failure_that_never_shows_the_token(gateway, filled, caplog, close_only):
    caplog.set_level(logging.DEBUG)
    gateway.close_on_bad_token = close_only
    out = view(filled, gateway.url, "wrong-" + TOKEN)["gateway"]
    assert out["state"] == "auth failed"
    assert ("token mismatch" in out["error"]) and ("1008" in out["error"] or "refused connect" in out["error"])
    assert TOKEN not in out["error"] and TOKEN not in caplog.text
    assert "totals" not in out


def test_http_401_on_the_upgrade_is_an_auth_failure(gateway, filled):
    gateway.http_status = 401
    out = view(filled, gateway.url.replace("ws://", "http://"), TOKEN)["gateway"]
    assert out["state"] == "auth failed" and "HTTP 401" in out["error"]


def test_unreachable_and_silent_gateways_are_named(gateway, filled):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = view(filled, f"ws://127.0.0.1:{port}", TOKEN, timeout=2)["gateway"]
    assert out["state"] == "unreachable" and f"127.0.0.1:{port}" in out["url"]
    gateway.silent = True
    out = view(filled, gateway.url, TOKEN, timeout=0.5)["gateway"]
    assert out["state"] == "timeout"


def test_not_configured_without_url_and_token(filled):
    assert view(filled, "", "")["gateway"]["state"] == "not configured"
    assert OpenClaw(roots=[Path("/nonexistent")], env={"OPENCLAW_GATEWAY_URL": "ws://x"}).gateway_url == ""


def test_sources_command_shows_the_gateway_view_beside_the_transcripts(gateway, cli_env, tmp_path):
    claw = ClawHome(tmp_path / "claw")
    claw.append(claw.transcript(), *LINES)
    env = {**cli_env, "OPENCLAW_DIR": str(claw.root), "TMPDIR": str(tmp_path / "tmp"),
           "OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN}  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert TOKEN not in out.stdout + out.stderr
        return out

    run("--debug", "sync", "--no-export", "--source", "openclaw")
    (row,) = [r for r in json.loads(run("sources", "--json").stdout)["sources"] if r["name"] == "openclaw"]
    assert row["requests"] == 2 and row["views"]["gateway"]["difference"]["totalTokens"] == 1000
    text = run("--debug", "sources").stdout
    assert "gateway view" in text and "difference" in text and "totalTokens +1,000" in text
