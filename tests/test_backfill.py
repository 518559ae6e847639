"""History backfill (bridge/backfill.py): hourly cumulative samples from the ledger, written to the real
Prometheus at their true timestamps, continuous with the live export, idempotent; and the dashboards' exact
numbers over the backfilled days."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import backfill as bf
from bridge.backfill import HOUR_MS, BackfillError, Prometheus, history, parse_duration_ms
from bridge.cli import main
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.series import COST_METRIC, TOKEN_METRIC, UNPRICED_METRIC, series_key, values
from tests.conftest import FlatPricer

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
GPT = "gpt-5"


def _rec(source: str, provider: str, model: str, ts_ms: int, key: str, n: int, session: str = "s1") -> UsageRecord:
    return UsageRecord(
        source=source,
        provider=provider,
        model=model,
        timestamp=datetime.fromtimestamp(ts_ms / 1000, UTC),
        dedup_key=key,
        tokens=Tokens(input=n, output=2 * n + 1, cache_read=10 * n, cache_creation=3 * n),
        session_id=session,
    )


# ------------------------------------------------------------------ hourly history from the ledger


def _fill(ledger: Ledger, records: list[UsageRecord]) -> None:
    ledger.commit(records, FlatPricer())


def _by_key(series: list[bf.Series]) -> dict[str, bf.Series]:
    return {s.key: s for s in series}


def test_history_is_hourly_cumulative_from_an_explicit_zero_to_the_ledger_total(ledger):
    h0 = 1_800_000 * HOUR_MS  # an hour boundary
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 5 * 60_000, "a", 100),
            _rec("claude_transcripts", "anthropic", SONNET, h0 + HOUR_MS, "b", 7),  # exactly on a boundary
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 3 * HOUR_MS + 1, "c", 1),
        ],
    )
    now = h0 + 4 * HOUR_MS + 123
    series = _by_key(history(ledger.history(HOUR_MS), False, h0 - 2 * HOUR_MS, now))
    attrs = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"), ("type", "input"))
    s = series[series_key(TOKEN_METRIC, attrs)]
    # A sample at every hour from the hour of the first request (0), each holding the sum of rows
    # before it (a row at exactly a boundary belongs to the hour it opens), the total last.
    assert s.samples == [
        (h0, Decimal(0)),
        (h0 + HOUR_MS, Decimal(100)),
        (h0 + 2 * HOUR_MS, Decimal(107)),
        (h0 + 3 * HOUR_MS, Decimal(107)),
        (h0 + 4 * HOUR_MS, Decimal(108)),
        (now, Decimal(108)),
    ]
    # Every series ends at exactly what the live export sends: series.values() of the totals.
    live = {series_key(m, a): v for m, a, v in values(ledger.totals(), False)}
    assert {k: s.samples[-1][1] for k, s in series.items()} == live
    assert all(a[0] < b[0] for s in series.values() for a, b in zip(s.samples, s.samples[1:], strict=False))


def test_history_older_than_the_window_shows_as_the_first_samples_value(ledger):
    h0 = 1_800_000 * HOUR_MS
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", SONNET, h0 - 50 * HOUR_MS, "old", 5),
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 60_000, "new", 1),
        ],
    )
    series = _by_key(history(ledger.history(HOUR_MS), False, h0, h0 + 2 * HOUR_MS))
    attrs = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"), ("type", "input"))
    assert series[series_key(TOKEN_METRIC, attrs)].samples == [
        (h0, Decimal(5)),  # no zero: the counter already held the older history
        (h0 + HOUR_MS, Decimal(6)),
        (h0 + 2 * HOUR_MS, Decimal(6)),
    ]


def test_history_of_unpriced_and_priced_requests_follows_the_live_series_model(ledger):
    h0 = 1_800_000 * HOUR_MS
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", "unknown-model", h0 + 1, "u1", 4),
            _rec("claude_transcripts", "anthropic", "unknown-model", h0 + HOUR_MS + 1, "u2", 4),
            _rec("claude_transcripts", "anthropic", SONNET, h0 + HOUR_MS + 1, "p1", 1_000_000),
        ],
    )
    series = _by_key(history(ledger.history(HOUR_MS), False, h0, h0 + 3 * HOUR_MS))
    unknown = (("model", "unknown-model"), ("provider", "anthropic"), ("source", "claude_transcripts"))
    priced = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"))
    assert series_key(COST_METRIC, unknown) not in series  # an unknown price is never $0
    assert series[series_key(UNPRICED_METRIC, unknown)].samples[-1][1] == 2
    cost = series[series_key(COST_METRIC, priced)].samples
    assert cost[0] == (h0 + HOUR_MS, Decimal(0)) and cost[-1][1] == Decimal(1_000_000 * 16 + 1) / 1_000_000


def test_history_with_session_ids_splits_series_per_session(ledger):
    h0 = 1_800_000 * HOUR_MS
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 1, "a", 1, session="s1"),
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 2, "b", 1, session="s2"),
        ],
    )
    plain = history(ledger.history(HOUR_MS), False, h0, h0 + HOUR_MS)
    split = history(ledger.history(HOUR_MS), True, h0, h0 + HOUR_MS)
    assert len(split) == 2 * len(plain)
    assert {dict(s.attrs).get("session.id") for s in split} == {"s1", "s2"}


def test_ledger_history_adds_up_to_the_totals(ledger):
    h0 = 1_800_000 * HOUR_MS
    _fill(ledger, [_rec("src", "p", "m", h0 + i * 997_000, f"k{i}", i) for i in range(40)])
    summed: dict[tuple[str, str, str, str], int] = {}
    for _, t in ledger.history(HOUR_MS):
        k = (t.source, t.provider, t.model, t.session_id)
        summed[k] = summed.get(k, 0) + sum(t.tokens.values())
    assert summed == {(t.source, t.provider, t.model, t.session_id): sum(t.tokens.values()) for t in ledger.totals()}


# ------------------------------------------------------------------ small parts


def test_prometheus_durations():
    assert parse_duration_ms("90d") == 90 * 86_400_000
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("2w") == 14 * 86_400_000
    with pytest.raises(ValueError):
        parse_duration_ms("30 days")


def test_snappy_literal_blocks_decode_to_the_input():
    data = bytes(range(256)) * 700  # more than one 64 KiB literal
    enc = bf.snappy_block(data)
    n, shift, i = 0, 0, 0
    while True:  # uvarint length
        b = enc[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    assert n == len(data)
    out = bytearray()
    while i < len(enc):
        assert enc[i] == 61 << 2  # literal with a 2-byte length
        length = int.from_bytes(enc[i + 1 : i + 3], "little") + 1
        out += enc[i + 3 : i + 3 + length]
        i += 3 + length
    assert bytes(out) == data


def test_unreachable_prometheus_is_one_line_without_credentials(tmp_path, capsys, monkeypatch):
    from tests._stack import free_port

    monkeypatch.setenv("TOKENBRIDGE_STATE_DIR", str(tmp_path / "state"))
    url = f"http://user:s3cret@127.0.0.1:{free_port()}"
    rc = main(["backfill", "--prometheus-url", url, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"cannot reach Prometheus at http://127.0.0.1:{url.rsplit(':', 1)[1]}" in err
    assert "s3cret" not in err and len(err.strip().splitlines()) == 1


def test_bad_prometheus_url_and_days_are_config_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKENBRIDGE_STATE_DIR", str(tmp_path / "state"))
    assert main(["backfill", "--prometheus-url", "file:///etc/passwd"]) == 2
    assert "TOKENBRIDGE_PROMETHEUS_URL" in capsys.readouterr().err
    assert main(["backfill", "--days", "0"]) == 2
    assert "--days" in capsys.readouterr().err


def test_daemon_backfill_is_off_without_a_prometheus_url(ledger):
    assert bf.on_start(ledger, {}, False) is None
    assert (
        bf.on_start(ledger, {"TOKENBRIDGE_PROMETHEUS_URL": "http://127.0.0.1:1", "TOKENBRIDGE_BACKFILL": "0"}, False)
        is None
    )


class _FailingPrometheus(Prometheus):
    """Answers the reads like an empty Prometheus and refuses the write."""

    def limits_ms(self) -> tuple[int, int]:
        return 90 * 86_400_000, 31 * 86_400_000

    def present(self, *args: object, **kwargs: object) -> set:
        return set()

    def write(self, payload: bytes) -> None:
        raise BackfillError("Prometheus at http://x answered HTTP 500 to /api/v1/write: boom")


def test_a_failed_write_undoes_the_claimed_start_times(ledger):
    now = int(time.time() * 1000)
    _fill(ledger, [_rec("claude_transcripts", "anthropic", SONNET, now - 5 * 86_400_000, "a", 3)])
    live_key = series_key(COST_METRIC, (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts")))
    ledger.record_series({live_key: (now * 1_000_000 - 3 * HOUR_MS * 1_000_000, "0.5")})  # exported live before
    before = ledger.all_series()
    with pytest.raises(BackfillError):
        bf.backfill(ledger, _FailingPrometheus("http://x"), env={}, now_ms=now)
    assert ledger.all_series() == before  # no start claimed for history Prometheus never received
