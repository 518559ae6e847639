"""The events receiver of ``tokenbridge run`` as a real HTTP server on loopback: OTLP/HTTP protobuf and JSON,
gzip, limits, and the rule that a 200 means the events are in the ledger."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from bridge import receiver as receiver_mod
from bridge.ledger import Ledger
from bridge.receiver import EventReceiver
from tests._events import api_request, logs_request
from tests.conftest import FlatPricer
from tests.conftest import ledger_sums as sums

SONNET = "claude-sonnet-4-6"


class _Running:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.commits = 0
        self._lock = threading.Lock()
        self.rx = EventReceiver(lambda: Ledger.open(state), FlatPricer(), "127.0.0.1", 0, on_commit=self._woke)

    def _woke(self) -> None:
        with self._lock:
            self.commits += 1

    def post(
        self, body: bytes, ctype: str = "application/x-protobuf", path: str = "/v1/logs", **headers: str
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.rx.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": ctype, **headers})
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def sums(self) -> dict[str, int]:
        with Ledger.open(self.state) as led:  # another connection: what is committed
            return sums(led)


@pytest.fixture
def rx(tmp_path: Path) -> Iterator[_Running]:
    r = _Running(tmp_path / "state")
    r.rx.start()
    try:
        yield r
    finally:
        r.rx.stop()


def _req(*ids: str, output: int = 100, strings: bool = False):
    return logs_request(
        [
            api_request("s1", i, SONNET, duration_ms=500, input_tokens=10, output_tokens=output, cost_usd=0.02,
                        numbers_as_strings=strings)
            for i in ids
        ]
    )  # fmt: skip


def test_protobuf_events_are_committed_before_the_answer(rx):
    code, body, headers = rx.post(_req("req_1", "req_2").SerializeToString())
    assert code == 200 and headers["Content-Type"] == "application/x-protobuf"
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(body)
    assert resp.partial_success.rejected_log_records == 0
    # No waiting: the answer came after the commit.
    assert rx.sums() == {"input": 20, "output": 200, "cacheRead": 0, "cacheCreation": 0, "requests": 2}
    assert rx.commits == 1


def test_json_and_gzip_bodies(rx):
    code, body, _ = rx.post(MessageToJson(_req("req_j")).encode(), "application/json")
    assert code == 200 and json.loads(body) == {}
    code, _, _ = rx.post(gzip.compress(_req("req_g").SerializeToString()), **{"Content-Encoding": "gzip"})
    assert code == 200
    assert rx.sums()["requests"] == 2


def test_resent_events_add_nothing_and_do_not_wake_the_exporter(rx):
    body = _req("req_1", strings=True).SerializeToString()
    assert rx.post(body)[0] == 200
    assert rx.post(body)[0] == 200
    assert rx.sums()["requests"] == 1
    assert rx.commits == 1


def test_rejected_events_are_reported_as_partial_success(rx):
    req = _req("req_ok")
    bad = req.resource_logs[0].scope_logs[0].log_records.add()
    bad.CopyFrom(req.resource_logs[0].scope_logs[0].log_records[0])
    for kv in bad.attributes:
        if kv.key == "request_id":
            kv.value.string_value = ""
    code, body, _ = rx.post(req.SerializeToString())
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(body)
    assert code == 200 and resp.partial_success.rejected_log_records == 1
    assert "request_id" in resp.partial_success.error_message
    assert rx.sums()["requests"] == 1


@pytest.mark.parametrize(
    ("body", "ctype", "path", "headers", "code"),
    [
        (b"\x0a\xff\xff\xff garbage", "application/x-protobuf", "/v1/logs", {}, 400),
        (b"{nope", "application/json", "/v1/logs", {}, 400),
        (b"{}", "text/plain", "/v1/logs", {}, 415),
        (b"{}", "application/json", "/v1/metrics", {}, 404),
        (b"abc", "application/x-protobuf", "/v1/logs", {"Content-Encoding": "br"}, 415),
        (b"not gzip", "application/x-protobuf", "/v1/logs", {"Content-Encoding": "gzip"}, 400),
    ],
)
def test_bad_requests_are_refused_and_store_nothing(rx, body, ctype, path, headers, code):
    got, text, _ = rx.post(body, ctype, path, **headers)
    assert got == code, text
    assert rx.sums()["requests"] == 0
    # The receiver keeps serving.
    assert rx.post(_req("req_after").SerializeToString())[0] == 200


def test_bodies_over_the_limit_are_refused_before_and_after_decompression(rx, monkeypatch):
    monkeypatch.setattr(receiver_mod, "MAX_BODY", 4096)
    big = _req(*(f"req_{i}" for i in range(200))).SerializeToString()
    assert len(big) > 4096
    assert rx.post(big)[0] == 413
    bomb = gzip.compress(big)
    assert len(bomb) < 4096
    assert rx.post(bomb, **{"Content-Encoding": "gzip"})[0] == 413
    assert rx.sums()["requests"] == 0


def test_a_taken_port_is_a_clear_error(rx, tmp_path):
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match=f"127.0.0.1:{rx.rx.port}"):
        EventReceiver(lambda: Ledger.open(tmp_path / "other"), FlatPricer(), "127.0.0.1", rx.rx.port)


# ------------------------------------------------------------------ the shared token (TOKENBRIDGE_EVENTS_TOKEN)

TOKEN = "s3cret-events-token-0123456789"


@pytest.fixture
def rx_token(tmp_path: Path) -> Iterator[_Running]:
    r = _Running(tmp_path / "state")
    r.rx.stop()  # the fixture's tokenless server: replaced by one that requires the token
    r.rx = EventReceiver(lambda: Ledger.open(r.state), FlatPricer(), "127.0.0.1", 0, on_commit=r._woke, token=TOKEN)
    r.rx.start()
    try:
        yield r
    finally:
        r.rx.stop()


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "Bearer",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_with_a_token_requests_without_it_get_401_store_nothing_and_are_logged_without_it(rx_token, auth, caplog):
    headers = {} if auth is None else {"Authorization": auth}
    with caplog.at_level("DEBUG", logger="tokenbridge.receiver"):
        code, body, resp_headers = rx_token.post(_req("req_1").SerializeToString(), **headers)
    assert code == 401, body
    assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    assert b"TOKENBRIDGE_EVENTS_TOKEN" in body and TOKEN.encode() not in body
    assert rx_token.sums()["requests"] == 0 and rx_token.commits == 0
    assert "(401)" in caplog.text and "TOKENBRIDGE_EVENTS_TOKEN" in caplog.text
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text
    # Checked before the path and the body: a wrong path without the token is 401 too, not 404.
    assert rx_token.post(b"{}", "application/json", "/elsewhere", **headers)[0] == 401


def test_with_a_token_requests_carrying_it_are_stored(rx_token):
    # The scheme's name is case-insensitive (RFC 9110 §11.1); the token is not.
    code, _, _ = rx_token.post(_req("req_1", "req_2").SerializeToString(), Authorization=f"bearer {TOKEN}")
    assert code == 200
    gz = gzip.compress(_req("req_3").SerializeToString())
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
    assert rx_token.post(gz, **headers)[0] == 200
    assert rx_token.sums()["requests"] == 3


def test_without_a_token_the_authorization_header_is_ignored_on_loopback(rx):
    # The collector sends "Bearer " with an empty TOKENBRIDGE_EVENTS_TOKEN (native mode on loopback).
    assert rx.post(_req("req_1").SerializeToString(), Authorization="Bearer ")[0] == 200
    assert rx.sums()["requests"] == 1


def test_beyond_loopback_the_receiver_refuses_to_start_without_a_token(tmp_path):
    from bridge.errors import ConfigError

    for host in ("0.0.0.0", "::", "192.0.2.10", "tokenbridge"):
        with pytest.raises(ConfigError, match=f"TOKENBRIDGE_EVENTS_TOKEN: required when .* listens on {host}"):
            EventReceiver(lambda: Ledger.open(tmp_path / "state"), FlatPricer(), host, 0)
    for host in ("127.0.0.1", "localhost", "::1"):
        receiver_mod.check_auth(host, None)  # loopback: the token stays optional
    # With a token, all interfaces are fine.
    any_if = EventReceiver(lambda: Ledger.open(tmp_path / "state"), FlatPricer(), "0.0.0.0", 0, token=TOKEN)
    any_if.stop()


@pytest.mark.parametrize("bad", ["short-token", "with a space 0123456789", "tab\tseparated-0123456789", "é" * 20])
def test_a_token_too_short_or_unfit_for_a_header_is_refused_without_showing_it(tmp_path, bad):
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="TOKENBRIDGE_EVENTS_TOKEN: must be at least 16") as err:
        EventReceiver(lambda: Ledger.open(tmp_path / "state"), FlatPricer(), "127.0.0.1", 0, token=bad)
    assert bad not in str(err.value)
