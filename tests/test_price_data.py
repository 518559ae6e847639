"""The price table kept current through genai-prices' update mechanism, served here by a real loopback HTTP server
with a document of the shape genai-prices publishes (``prices/new_data/v2/data.json``: a list of providers), and
with the network refused."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge import app, config, price_data
from bridge.ledger import Ledger
from bridge.record import Tokens
from tests._otlp_sink import Daemon, tokenbridge, wait_for
from tests._stack import free_port
from tests.conftest import assistant_line

SONNET = "claude-sonnet-4-5-20250929"
TOKENS = Tokens(input=100_000, output=100_000)  # below the 200k tier: a tenth of the input + output price


def price_document(input_mtok: float, output_mtok: float) -> list[dict[str, Any]]:
    """A price-data document in genai-prices' published v2 shape, with one provider and model."""
    return [
        {
            "id": "anthropic",
            "name": "Anthropic",
            "pricing_urls": ["https://www.anthropic.com/pricing#api"],
            "api_pattern": "https://api\\.anthropic\\.com",
            "model_match": {"contains": "claude"},
            "models": [
                {
                    "id": "claude-sonnet-4-5",
                    "name": "Claude Sonnet 4.5",
                    "match": {"or": [{"starts_with": "claude-sonnet-4-5"}, {"starts_with": "claude-sonnet-4.5"}]},
                    "context_window": 200000,
                    "prices": {"input_mtok": input_mtok, "cache_read_mtok": 0.4, "output_mtok": output_mtok},
                }
            ],
        }
    ]


class PriceServer:
    """Serves ``body`` at ``/data.json`` and counts the requests."""

    def __init__(self) -> None:
        self.body = json.dumps(price_document(4, 20)).encode()
        self.status = 200
        self.hits = 0
        self.release = threading.Event()  # answers wait for it (set: at once)
        self.release.set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                owner.release.wait(30)
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[PriceServer]:
    s = PriceServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def bundled_afterwards() -> Iterator[None]:
    yield
    from genai_prices import data_snapshot

    data_snapshot.set_custom_snapshot(None)  # other tests price with the bundled table


def _cost(state: Path, model: str = SONNET) -> Decimal | None:
    settings = config.load(env={"TOKENBRIDGE_STATE_DIR": str(state)}, config=state / "none.toml")
    settings.prices_path = state / "no-overrides.toml"
    return app.LazyPricer(settings).cost("anthropic", model, TOKENS)


def test_a_fetched_table_is_stored_and_prices_every_later_process(tmp_path, server):
    state = tmp_path / "state"
    assert _cost(state) == Decimal("1.8")  # bundled: ($3 + $15) / 10
    updater = price_data.refresher(state, server.url)
    assert updater.fetch() is not None
    assert server.hits == 1
    assert _cost(state) == Decimal("2.4")  # the fetched table: ($4 + $20) / 10
    info = price_data.info(state)
    assert (info.origin, info.url) == ("refreshed", server.url) and info.fetched_at
    # Not in the fetched document: unknown (the document replaces the table), never $0.
    assert _cost(state, "claude-opus-4-1") is None


def test_a_long_lived_pricer_prices_with_the_reloaded_table_a_model_it_priced_before(tmp_path, server):
    state = tmp_path / "state"
    settings = config.load(env={"TOKENBRIDGE_STATE_DIR": str(state)}, config=state / "none.toml")
    settings.prices_path = state / "no-overrides.toml"
    pricer = app.LazyPricer(settings)
    # Twice: the first prices from the table, the second from the rates remembered since.
    assert [pricer.cost("anthropic", SONNET, TOKENS) for _ in range(2)] == [Decimal("1.8")] * 2
    assert not pricer.reload_if_changed()
    assert price_data.refresher(state, server.url).fetch() is not None
    assert pricer.reload_if_changed()
    assert pricer.cost("anthropic", SONNET, TOKENS) == Decimal("2.4")  # no rate kept from the old table


def test_an_unchanged_document_is_not_stored_again(tmp_path, server):
    state = tmp_path / "state"
    notes: list[int] = []
    updater = price_data.refresher(state, server.url, on_update=lambda: notes.append(1))
    price_data.install(state)
    updater.fetch()
    before = (state / price_data.DATA_FILE).stat().st_mtime_ns
    price_data.install(state)
    updater.fetch()
    assert (state / price_data.DATA_FILE).stat().st_mtime_ns == before
    assert notes == [1]


def test_offline_keeps_the_table_in_use_and_says_so_once(tmp_path, server, caplog):
    state = tmp_path / "state"
    refused = f"http://127.0.0.1:{free_port()}/data.json"
    updater = price_data.refresher(state, refused)
    with caplog.at_level(logging.INFO, logger="tokenbridge.pricing"):
        assert updater.fetch() is None  # genai-prices then uses its bundled data
        assert updater.fetch() is None
    notes = [r for r in caplog.records if "not refreshed" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO  # no network is a state, not a fault
    assert "bundled" in notes[0].getMessage() and "ConnectError" in notes[0].getMessage()
    assert _cost(state) == Decimal("1.8")
    assert price_data.info(state).origin == "bundled"
    # With a stored table, a failed refresh keeps it.
    price_data.refresher(state, server.url).fetch()
    price_data.install(state)
    assert updater.fetch() is not None
    assert _cost(state) == Decimal("2.4")


@pytest.mark.parametrize(("status", "body"), [(500, b"oops"), (200, b'{"not": "a list"}'), (200, b"[{}]")])
def test_an_error_or_a_document_genai_prices_cannot_read_changes_nothing(tmp_path, server, status, body, caplog):
    state = tmp_path / "state"
    server.status, server.body = status, body
    assert price_data.refresher(state, server.url).fetch() is None
    assert [r.levelno for r in caplog.records if "not refreshed" in r.getMessage()] == [logging.WARNING]
    assert not (state / price_data.DATA_FILE).exists()
    assert _cost(state) == Decimal("1.8")


def test_a_damaged_stored_table_is_set_aside_for_the_bundled_one(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / price_data.DATA_FILE).write_text("{half a docu")
    assert _cost(state) == Decimal("1.8")
    assert (state / (price_data.DATA_FILE + ".bad")).exists()
    assert any("set aside" in r.getMessage() for r in caplog.records)


def test_run_refreshes_prices_and_sources_shows_the_tables_date(cli_env, claude_home, tmp_path, server):
    env = {**cli_env, "TOKENBRIDGE_PRICES_REFRESH": "1", "TOKENBRIDGE_PRICES_URL": server.url}
    state = tmp_path / "state"
    f = claude_home.session_file()
    small = {"input": 1000, "output": 1000, "cache_read": 0, "cache_5m": 0}
    claude_home.append(f, assistant_line("msg_A", "req_A", **small))
    server.release.clear()  # the first fetch waits: req_A is priced with the bundled table
    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        assert _ledger_costs(state) == {"cc-req:req_A": Decimal("0.018")}  # 1000 × $3/M + 1000 × $15/M
        server.release.set()
        # The daemon's loop takes the new table (it had priced this model already).
        wait_for(lambda: "with the refreshed price table" in daemon.stderr(), 20, "the daemon to reload prices")
        claude_home.append(f, assistant_line("msg_B", "req_B", **small))
        wait_for(lambda: len(_ledger_costs(state)) == 2, 20, "req_B in the ledger")
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()
    # req_B is priced with the fetched table by the running daemon; req_A's stored cost does not change.
    assert _ledger_costs(state) == {"cc-req:req_A": Decimal("0.018"), "cc-req:req_B": Decimal("0.024")}
    got = json.loads(tokenbridge(env, "sources", "--json").stdout)["priceTable"]
    assert got["origin"] == "refreshed" and got["url"] == server.url and got["fetchedAt"].endswith("Z")
    text = tokenbridge(env, "sources").stdout
    assert f"price table  fetched {got['fetchedAt']} from {server.url}" in text


def test_opting_out_in_the_config_file_never_fetches(cli_env, tmp_path, server):
    (tmp_path / "no-config.toml").write_text("[pricing]\nrefresh = false\n")
    env = {**cli_env, "TOKENBRIDGE_PRICES_URL": server.url}
    env.pop("TOKENBRIDGE_PRICES_REFRESH")
    assert config.load(env=env).prices_refresh is False
    daemon = Daemon(env, "--no-otlp")
    try:
        daemon.wait_ready()
        assert daemon.stop() == 0, daemon.stderr()
    finally:
        daemon.close()
    assert server.hits == 0
    assert "refresh off" in tokenbridge(env, "sources").stdout


def _ledger_costs(state: Path) -> dict[str, Decimal | None]:
    with Ledger.open(state) as led:
        rows = led._db.execute("SELECT dedup_key, cost_pusd FROM usage").fetchall()
    return {str(k): None if c is None else Decimal(c) / Decimal(10**12) for k, c in rows}


def test_a_token_in_the_mirror_url_is_never_logged_stored_or_shown(tmp_path, server, caplog):
    state = tmp_path / "state"
    port = server.url.split(":")[2].split("/")[0]
    secret_url = f"http://user:s3cret-pass@127.0.0.1:{port}/data.json?token=s3cret-token"
    with caplog.at_level(logging.INFO, logger="tokenbridge.pricing"):
        price_data.refresher(state, secret_url).fetch()
        price_data.refresher(state, f"http://127.0.0.1:{free_port()}/x?token=s3cret-token").fetch()
    stored = (state / price_data.DATA_FILE).read_text()
    for text in (caplog.text, stored, price_data.info(state).describe()):
        assert "s3cret" not in text
    assert price_data.info(state).url == f"http://127.0.0.1:{port}/data.json"
