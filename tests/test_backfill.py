"""History backfill (bridge/backfill.py): hourly cumulative samples from the ledger, written to the real
Prometheus at their true timestamps, continuous with the live export, idempotent; and the dashboards' exact
numbers over the backfilled days."""

from __future__ import annotations

import itertools
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
HAIKU = "claude-haiku-4-5-20251001"


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
    series = _by_key(history(ledger.history(HOUR_MS), False, h0 - 2 * HOUR_MS, now, HOUR_MS))
    attrs = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"), ("type", "input"))
    s = series[series_key(TOKEN_METRIC, attrs)]
    # A sample at every hour from the hour of the first request (0), each holding the sum of rows
    # before it (a row at exactly a boundary belongs to the hour it opens), the total last.
    assert list(s.samples()) == [
        (h0, Decimal(0)),
        (h0 + HOUR_MS, Decimal(100)),
        (h0 + 2 * HOUR_MS, Decimal(107)),
        (h0 + 3 * HOUR_MS, Decimal(107)),
        (h0 + 4 * HOUR_MS, Decimal(108)),
        (now, Decimal(108)),
    ]
    # Every series ends at exactly what the live export sends: series.values() of the totals.
    live = {series_key(m, a): v for m, a, v in values(ledger.totals(), False)}
    assert {k: list(s.samples())[-1][1] for k, s in series.items()} == live
    assert all(a[0] < b[0] for s in series.values() for a, b in itertools.pairwise(s.samples()))


def test_history_older_than_the_window_shows_as_the_first_samples_value(ledger):
    h0 = 1_800_000 * HOUR_MS
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", SONNET, h0 - 50 * HOUR_MS, "old", 5),
            _rec("claude_transcripts", "anthropic", SONNET, h0 + 60_000, "new", 1),
        ],
    )
    series = _by_key(history(ledger.history(HOUR_MS), False, h0, h0 + 2 * HOUR_MS, HOUR_MS))
    attrs = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"), ("type", "input"))
    assert list(series[series_key(TOKEN_METRIC, attrs)].samples()) == [
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
    series = _by_key(history(ledger.history(HOUR_MS), False, h0, h0 + 3 * HOUR_MS, HOUR_MS))
    unknown = (("model", "unknown-model"), ("provider", "anthropic"), ("source", "claude_transcripts"))
    priced = (("model", SONNET), ("provider", "anthropic"), ("source", "claude_transcripts"))
    assert series_key(COST_METRIC, unknown) not in series  # an unknown price is never $0
    assert series[series_key(UNPRICED_METRIC, unknown)].total == 2
    cost = list(series[series_key(COST_METRIC, priced)].samples())
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
    plain = history(ledger.history(HOUR_MS), False, h0, h0 + HOUR_MS, HOUR_MS)
    split = history(ledger.history(HOUR_MS), True, h0, h0 + HOUR_MS, HOUR_MS)
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


def test_credentials_in_the_url_become_basic_auth_and_are_never_shown(ledger):
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str | None]] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"unauthorized")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        prom = Prometheus(f"http://ops:p%40ss@127.0.0.1:{server.server_address[1]}/")
        with pytest.raises(BackfillError) as err:
            bf.backfill(ledger, prom, env={})
    finally:
        server.shutdown()
    assert seen == [("/api/v1/status/flags", "Basic " + base64.b64encode(b"ops:p@ss").decode())]
    assert "answered HTTP 401" in str(err.value) and "p%40ss" not in str(err.value) and "ops" not in str(err.value)


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


class _RecordingPrometheus(Prometheus):
    """An empty Prometheus with the given limits that keeps what it is sent."""

    def __init__(self, retention_days: float = 90, window_days: float = 31) -> None:
        super().__init__("http://prometheus.invalid:9090")
        self.limits = (int(retention_days * 86_400_000), int(window_days * 86_400_000))
        self.payloads: list[bytes] = []

    def limits_ms(self) -> tuple[int, int]:
        return self.limits

    def present(self, *args: object, **kwargs: object) -> set:
        return set(self.holds)

    def write(self, payload: bytes) -> None:
        self.payloads.append(payload)

    holds: frozenset = frozenset()

    def now_holds(self, ledger: Ledger) -> None:
        """From now on answer that it holds every series the ledger has claimed (as a real one would)."""
        job, instance = bf.identity({}, ledger)
        sets = set()
        for key in ledger.all_series():
            metric, *pairs = key.split("|")
            attrs = tuple(tuple(p.split("=", 1)) for p in pairs)
            sets.add(frozenset(bf.labels_of(metric, attrs, job, instance).items()))  # type: ignore[arg-type]
        self.holds = frozenset(sets)


def test_source_selection_backfills_only_that_sources_series(ledger):
    now = int(time.time() * 1000)
    _fill(
        ledger,
        [
            _rec("claude_transcripts", "anthropic", SONNET, now - 3 * 86_400_000, "a", 3),
            _rec("openai_api", "openai", GPT, now - 2 * 86_400_000, "b", 4),
        ],
    )
    prom = _RecordingPrometheus()
    summary = bf.backfill(ledger, prom, env={}, sources=["openai_api"], now_ms=now)
    assert summary.series == 5 and len(prom.payloads) == 1  # four token types and the cost
    assert all("source=openai_api" in key for key in ledger.all_series())
    assert b"openai_api" in prom.payloads[0] and b"claude_transcripts" not in prom.payloads[0]


def test_window_never_reaches_beyond_prometheus_retention(ledger):
    now = 1_800_000 * HOUR_MS + 1234
    _fill(
        ledger, [_rec("claude_transcripts", "anthropic", SONNET, now - d * 86_400_000, f"k{d}", d) for d in (2, 9, 20)]
    )
    summary = bf.backfill(ledger, _RecordingPrometheus(retention_days=10), env={}, days=30, now_ms=now)
    assert summary.limited_by == "the retention (10 days)"
    assert summary.first_ms is not None and summary.first_ms >= now - 10 * 86_400_000
    assert summary.days < 10


def test_no_out_of_order_window_is_a_clear_error(ledger):
    _fill(ledger, [_rec("claude_transcripts", "anthropic", SONNET, 1_800_000 * HOUR_MS, "a", 1)])
    with pytest.raises(BackfillError, match="out_of_order_time_window"):
        bf.backfill(ledger, _RecordingPrometheus(window_days=0), env={})


def test_long_backfills_report_progress_and_send_whole_series_per_request(ledger, monkeypatch):
    now = 1_800_000 * HOUR_MS
    _fill(
        ledger, [_rec("claude_transcripts", "anthropic", f"model-{i}", now - 86_400_000, f"k{i}", 1) for i in range(13)]
    )
    monkeypatch.setattr(bf, "_SAMPLES_PER_REQUEST", 50 * 289)
    prom = _RecordingPrometheus()
    seen: list[tuple[int, int]] = []
    summary = bf.backfill(ledger, prom, env={}, now_ms=now, progress=lambda done, total: seen.append((done, total)))
    assert summary.series == 65  # 13 models x (4 token types + cost)
    assert seen == [(50, 65), (65, 65)] and len(prom.payloads) == 2
    assert summary.samples == 65 * 289  # the zero a day ago, then a sum every 5 minutes (the last, at now: the total)
    assert "backfilled 65 series, 18785 samples, 30.0 day(s)" in summary.line()


def test_daemon_backfills_mid_run_only_when_a_series_is_new(ledger):
    now = int(time.time() * 1000)
    _fill(ledger, [_rec("claude_transcripts", "anthropic", SONNET, now - 3 * 86_400_000, "a", 3)])
    auto = bf.Auto({"TOKENBRIDGE_PROMETHEUS_URL": "http://127.0.0.1:1"}, False)
    auto.prom = prom = _RecordingPrometheus()
    first = auto.new_series(ledger)
    assert first is not None and first.series == 5 and len(prom.payloads) == 1
    prom.now_holds(ledger)
    _fill(ledger, [_rec("claude_transcripts", "anthropic", SONNET, now - 2 * 86_400_000, "b", 3)])
    assert auto.new_series(ledger) is None and len(prom.payloads) == 1  # same series: the live export carries it
    _fill(ledger, [_rec("openai_api", "openai", GPT, now - 2 * 86_400_000, "c", 3)])
    later = auto.new_series(ledger)
    assert later is not None and later.series == 5 and len(prom.payloads) == 2
    with_sessions = bf.Auto({"TOKENBRIDGE_PROMETHEUS_URL": "http://127.0.0.1:1"}, True)
    with_sessions.prom = _RecordingPrometheus()
    assert with_sessions.new_series(ledger) is None


def test_bad_backfill_settings_are_config_errors():
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="TOKENBRIDGE_BACKFILL_DAYS"):
        bf.Auto({"TOKENBRIDGE_PROMETHEUS_URL": "http://p:9090", "TOKENBRIDGE_BACKFILL_DAYS": "a month"}, False)
    with pytest.raises(ConfigError, match="TOKENBRIDGE_BACKFILL_WAIT"):
        bf.Auto({"TOKENBRIDGE_PROMETHEUS_URL": "http://p:9090", "TOKENBRIDGE_BACKFILL_WAIT": "-1"}, False)


# ------------------------------------------------------------------ end to end: real collector and Prometheus

DAY_S = 86_400
STACK_MODELS = {  # model: (source, provider)
    SONNET: ("claude_transcripts", "anthropic"),
    OPUS: ("claude_transcripts", "anthropic"),
    "claude-3-5-haiku-20241022": ("claude_stats_cache", "anthropic"),
    GPT: ("openai_api", "openai"),
    "unknown-local-model": ("claude_transcripts", "anthropic"),  # no price: unpriced requests, no cost
}


def _stack_history(now_ms: int) -> list[UsageRecord]:
    """22 days of requests across five models and three sources, at uneven minutes (some on hour boundaries)."""
    out = []
    today = now_ms // (DAY_S * 1000) * DAY_S * 1000
    for day in range(1, 23):
        for i, (model, (source, provider)) in enumerate(STACK_MODELS.items()):
            if (day + i) % 4 == 0:
                continue  # idle days for every model
            for hour in (1, 9, 9, 17, 23):
                ts = today - day * DAY_S * 1000 + hour * 3_600_000 + ((day * 7 + i * 13) % 60) * 60_000
                n = 1000 * day + 37 * i + hour
                out.append(_rec(source, provider, model, ts, f"{model}-{day}-{hour}-{len(out)}", n, f"s{day % 3}"))
    # The current hour, before the backfill: the last backfilled sample must carry it.
    out.append(_rec("claude_transcripts", "anthropic", SONNET, now_ms - 60_000, "recent", 5))
    return out


class _Stack:
    pass


@pytest.fixture(scope="module")
def bstack(tmp_path_factory: pytest.TempPathFactory):
    import yaml  # noqa: F401 - a dev dependency: fail, never skip, when it is missing

    from tests._stack import start_collector, start_prometheus

    w = tmp_path_factory.mktemp("backfill")
    st = _Stack()
    col = start_collector(w)
    try:
        prom = start_prometheus(
            w, {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"}
        )
    except BaseException:
        col.proc.stop()
        raise
    st.col, st.prom, st.work = col, prom, w
    st.state = w / "state"
    st.env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.grpc}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    try:
        with Ledger.open(st.state) as ledger:
            _fill(ledger, _stack_history(int(time.time() * 1000)))
            st.summary = bf.on_start(ledger, {"TOKENBRIDGE_PROMETHEUS_URL": prom.url}, False)  # as the daemon does
            st.backfilled_totals = {series_key(m, a): v for m, a, v in values(ledger.totals(), False)}
            st.t_backfill = time.time()
            _live_export(ledger, st.env)  # the daemon's first export, right after
            # Live usage after the backfill: the live series continues from the backfilled total.
            _fill(ledger, [_rec("claude_transcripts", "anthropic", SONNET, int(time.time() * 1000), "live-1", 9)])
            _live_export(ledger, st.env)
        from tests._stack import wait_for_scrapes

        st.t = wait_for_scrapes(prom, 2)
        yield st
    finally:
        prom.proc.stop()
        col.proc.stop()


def _live_export(ledger: Ledger, env: dict[str, str]) -> None:
    from bridge.export import BridgeExporter

    exp = BridgeExporter(env=env, interval_s=3600, instance_id=ledger.instance_id(), ledger_path=ledger.path)
    try:
        exp.refresh(ledger)
        assert exp.flush(), "the collector did not accept the live export"
    finally:
        exp.shutdown()


def _day_totals(state: Path, first: datetime, last: datetime) -> dict[str, dict[str, tuple[int, Decimal]]]:
    """`tokenbridge report daily` (UTC): {day: {model: (tokens, cost)}}."""
    from bridge.report import build

    with Ledger.open(state) as ledger:
        rep = build(ledger, "daily", UTC, first.date(), last.date())
    return {
        b.key: {m: (line.total, line.cost or Decimal(0)) for (m, _p), line in b.models.items()} for b in rep.buckets
    }


def _by_model(prom, expr: str, at: float) -> dict[str, float]:
    return {r["metric"]["model"]: float(r["value"][1]) for r in prom.query(expr, at) if float(r["value"][1])}


stack_test = pytest.mark.stack
_DAILY = 'sum by (model) (increase({}{{job="tokenbridge"}}[1d] anchored))'


@stack_test
def test_backfill_at_start_writes_every_series_with_the_live_labels(bstack):
    s = bstack.summary
    assert s is not None and s.series == len(bstack.backfilled_totals) and s.present == 0
    assert s.samples > s.series * 24 * 20 and 30 <= s.days <= 30 + 1 / 24
    # One series per label set: the live export continued the backfilled series, it did not start new ones.
    names = "|".join(bf.PROM_NAMES.values())
    got = bstack.prom.query(f'count by (__name__) ({{__name__=~"{names}",job="tokenbridge"}})', bstack.t)
    counts = {r["metric"]["__name__"]: int(r["value"][1]) for r in got}
    expected: dict[str, int] = {}
    for key in bstack.backfilled_totals:
        name = bf.PROM_NAMES[key.split("|", 1)[0]]
        expected[name] = expected.get(name, 0) + 1
    assert counts == expected


@stack_test
def test_every_day_and_model_equals_the_ledger_exactly(bstack):
    p = bstack.prom
    today = datetime.fromtimestamp(bstack.t_backfill // DAY_S * DAY_S, UTC)
    first = today - timedelta(days=22)
    want = _day_totals(bstack.state, first, today - timedelta(days=1))
    assert len(want) >= 20
    for day, models in want.items():
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        at = end.timestamp()
        tokens = _by_model(p, _DAILY.format("claude_code_token_usage_tokens_total"), at)
        cost = _by_model(p, _DAILY.format("claude_code_cost_usage_USD_total"), at)
        assert tokens == {m: float(t) for m, (t, _c) in models.items()}, day
        assert cost == pytest.approx({m: float(c) for m, (_t, c) in models.items() if c}, rel=1e-12), day


@stack_test
def test_no_reset_and_no_doubling_across_the_seam(bstack):
    p, t = bstack.prom, bstack.t
    for name in bf.PROM_NAMES.values():
        assert p.query(f'sum(resets({name}{{job="tokenbridge"}}[31d]))', t)[0]["value"][1] == "0", name
    # From a day boundary in the history to after the live exports: exactly the ledger's rows since then,
    # the backfilled final sample and the live samples counted once.
    start = (int(bstack.t_backfill) // DAY_S - 10) * DAY_S
    rng = int(t - start)
    with Ledger.open(bstack.state) as ledger:
        rows = ledger.aggregate("quarter", since_ms=start * 1000)
    want_tokens = sum(int(r[4]) + int(r[5]) + int(r[6]) + int(r[7]) for r in rows)
    got = p.scalar(f'sum(increase(claude_code_token_usage_tokens_total{{job="tokenbridge"}}[{rng}s] anchored))', t)
    assert got == want_tokens
    # The live sample after the backfill: the backfilled total plus the live request, no step, no gap.
    sel = f'claude_code_token_usage_tokens_total{{job="tokenbridge",model="{SONNET}",type="input"}}'
    res = p.query(f"{sel}[2h]", t)
    assert len(res) == 1
    samples = [(float(ts), float(v)) for ts, v in res[0]["values"]]
    backfilled = [v for ts, v in samples if ts <= bstack.t_backfill]
    live = [v for ts, v in samples if ts > bstack.t_backfill]
    assert live and backfilled and live[-1] == backfilled[-1] + 9
    assert all(b >= a for a, b in zip([v for _, v in samples], [v for _, v in samples][1:], strict=False))


@stack_test
def test_dashboard_totals_equal_the_report_for_whole_days(bstack):
    from tests._stack import dashboards, expand, iter_panels

    p = bstack.prom
    end = int(bstack.t_backfill) // DAY_S * DAY_S  # today 00:00 UTC
    days = 21
    first = datetime.fromtimestamp(end - days * DAY_S, UTC)
    want = _day_totals(bstack.state, first, datetime.fromtimestamp(end - DAY_S, UTC))
    tokens = sum(t for models in want.values() for t, _ in models.values())
    cost = sum((c for models in want.values() for _, c in models.values()), Decimal(0))
    variables = {"provider": ".*", "model": ".*", "source": ".*"}
    checked = 0
    for d in dashboards().values():
        for panel in iter_panels(d["panels"]):
            if panel["type"] != "stat" or panel["title"] not in ("Total tokens", "Total cost"):
                continue
            expr = expand(panel["targets"][0]["expr"], variables, days * DAY_S, 3600, 60)
            got = p.scalar(expr, end)
            if panel["title"] == "Total tokens":
                assert got == tokens
            else:
                assert got == pytest.approx(float(cost), rel=1e-12)
            checked += 1
    assert checked == 4
    # A daily bar chart: the "Cost by model" time series at a 1-day interval, one point per day.
    panel = next(
        x
        for x in iter_panels(dashboards()["claude-code.json"]["panels"])
        if x["type"] == "timeseries" and x["title"] == "Tokens by model"
    )
    expr = expand(panel["targets"][0]["expr"], variables, days * DAY_S, DAY_S, 60)
    series = p.query_range(expr, end - (days - 1) * DAY_S, end, DAY_S)
    got_days: dict[str, dict[str, float]] = {}
    for r in series:
        for ts, v in r["values"]:
            day = datetime.fromtimestamp(float(ts) - DAY_S, UTC).date().isoformat()
            if float(v):
                got_days.setdefault(day, {})[r["metric"]["model"]] = float(v)
    assert got_days == {day: {m: float(t) for m, (t, _) in models.items() if t} for day, models in want.items()}
    # Any range, as Grafana sends it ("last 7 days" starts at any second; 10-minute bars): exact to the 5-minute
    # step, because every range start finds a backfilled sample within Prometheus' lookback.
    start = end - 7 * DAY_S + 1234
    with Ledger.open(bstack.state) as ledger:
        rows = ledger.aggregate("quarter", since_ms=(start // 300) * 300_000, until_ms=end * 1000)
    want_tokens = sum(int(r[4]) + int(r[5]) + int(r[6]) + int(r[7]) for r in rows)
    total = next(
        x for x in iter_panels(dashboards()["ai-usage-overview.json"]["panels"]) if x["title"] == "Total tokens"
    )
    assert p.scalar(expand(total["targets"][0]["expr"], variables, end - start, 600, 60), end) == want_tokens
    expr = expand(panel["targets"][0]["expr"], variables, end - start, 600, 60)
    last = start + (end - start) // 600 * 600  # the last 10-minute bar ends here
    bars = p.query_range(expr, start + 600, last, 600)
    with Ledger.open(bstack.state) as ledger:
        rows = ledger.aggregate("quarter", since_ms=(start // 300) * 300_000, until_ms=(last // 300) * 300_000)
    assert sum(float(v) for r in bars for _, v in r["values"]) == sum(
        int(r[4]) + int(r[5]) + int(r[6]) + int(r[7]) for r in rows
    )


@stack_test
def test_a_second_backfill_and_a_restart_change_nothing(bstack, monkeypatch, capsys):
    from tests._stack import http_get, spawn, wait_until

    p = bstack.prom
    count = 'sum(count_over_time({job="tokenbridge"}[31d]))'
    t = bstack.t
    before = p.scalar(count, t)
    with Ledger.open(bstack.state) as ledger:
        starts = ledger.all_series()
    monkeypatch.setenv("TOKENBRIDGE_STATE_DIR", str(bstack.state))
    monkeypatch.setenv("TOKENBRIDGE_CONFIG", str(bstack.work / "no-config.toml"))
    assert main(["backfill", "--prometheus-url", p.url, "--no-progress"]) == 0
    n = len(bstack.backfilled_totals)
    assert f"backfilled 0 series, 0 samples, 30.0 day(s); {n} series already in Prometheus" in capsys.readouterr().err
    with Ledger.open(bstack.state) as ledger:
        # Prometheus restarted on the same data, then the bridge's start: still nothing to write.
        p.proc.stop()
        p.proc = spawn("prometheus", list(p.proc.popen.args), bstack.work / "prometheus-restarted.log")
        wait_until(lambda: http_get(f"{p.url}/-/ready")[0] == 200, 60, "Prometheus ready after the restart")
        restarted = bf.on_start(ledger, {"TOKENBRIDGE_PROMETHEUS_URL": p.url}, False)
        assert restarted is not None and restarted.series == 0
        assert ledger.all_series() == starts
    assert p.scalar(count, t) == before


@stack_test
def test_the_daemon_backfills_at_start_and_not_again_after_a_restart(tmp_path):
    """`tokenbridge run` with TOKENBRIDGE_PROMETHEUS_URL (as docker-compose.yml and scripts/start.sh set it):
    transcripts from past days land on their days before the first live export, and a restart adds nothing."""
    import os

    from tests._otlp_sink import Daemon
    from tests._stack import start_collector, start_prometheus, wait_for_scrapes, write_claude_home

    home = tmp_path / "claude"
    now = time.time()
    usage = {"input": 12, "output": 340, "cacheRead": 20000, "cacheCreation": 700}
    for days_ago, sid, model in ((9, "aaaa0009", SONNET), (4, "bbbb0004", OPUS), (1, "cccc0001", SONNET)):
        write_claude_home(home, {f"{sid}-0000-4000-8000-000000000000": {"model": model, "requests": [usage] * 3}},
                          now - days_ago * DAY_S)  # fmt: skip
    col = start_collector(tmp_path)
    prom = None
    try:
        prom = start_prometheus(
            tmp_path,
            {"otel-collector:8889": f"127.0.0.1:{col.prom}", "otel-collector:8888": f"127.0.0.1:{col.telemetry}"},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENBRIDGE_", "CLAUDE_"))}
        env.update(
            {
                "HOME": str(tmp_path / "home"),
                "CLAUDE_CONFIG_DIR": str(home),
                "TOKENBRIDGE_STATE_DIR": str(tmp_path / "state"),
                "TOKENBRIDGE_CONFIG": str(tmp_path / "no-config.toml"),
                "TOKENBRIDGE_EXPORT_INTERVAL": "3600",
                "TOKENBRIDGE_EVENTS_PORT": "0",  # never collides with another daemon
                "TOKENBRIDGE_PRICES_REFRESH": "0",  # no price table from the internet: costs stay the bundled ones
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{col.grpc}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "TOKENBRIDGE_PROMETHEUS_URL": prom.url,
            }
        )
        runs = []
        for run in range(2):
            daemon = Daemon(env)
            try:
                daemon.wait_ready(60)
                if run == 1:  # history found while running (a new model's old session): on its own day too
                    sid = "dddd0006-0000-4000-8000-000000000000"
                    # Written aside and moved in (as a restored or synced file arrives): the daemon must not
                    # read it half-written, which would rightly count the rest live, now.
                    write_claude_home(tmp_path / "aside", {sid: {"model": HAIKU, "requests": [usage] * 2}},
                                      now - 6 * DAY_S)  # fmt: skip
                    rel = Path("projects", "-home-dev-app", f"{sid}.jsonl")
                    os.rename(tmp_path / "aside" / rel, home / rel)
                    _wait_for_line(daemon, "backfilled 5 series", 90)
                assert daemon.stop() == 0, daemon.stderr()
            finally:
                if daemon.proc.poll() is None:
                    daemon.proc.kill()
            runs.append(daemon.stderr())
            t = wait_for_scrapes(prom, 2)
            want = _day_totals(tmp_path / "state", datetime.fromtimestamp(now - 10 * DAY_S, UTC),
                               datetime.fromtimestamp(now, UTC))  # fmt: skip
            assert len(want) == 3 + run
            for day, models in want.items():
                if day == datetime.fromtimestamp(t, UTC).date().isoformat():
                    continue  # today is still open
                at = (datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)).timestamp()
                tokens = _by_model(prom, _DAILY.format("claude_code_token_usage_tokens_total"), at)
                assert tokens == {m: float(v) for m, (v, _c) in models.items()}, day
            all_tokens = sum(v for models in want.values() for v, _ in models.values())
            total = prom.scalar(
                'sum(increase(claude_code_token_usage_tokens_total{job="tokenbridge"}[11d] anchored))', t
            )
            assert total == all_tokens  # history once, live continuing it: never doubled
            resets = prom.scalar('sum(resets(claude_code_token_usage_tokens_total{job="tokenbridge"}[11d]))', t)
            assert resets == 0
        first, second = runs
        assert "backfilled 10 series" in first and "Traceback" not in first
        assert "backfilled 0 series" in second and "10 series already in Prometheus" in second
        assert "warning" not in first + second
    finally:
        if prom is not None:
            prom.proc.stop()
        col.proc.stop()


def _wait_for_line(daemon, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.stderr():
        assert time.monotonic() < deadline, f"no {text!r} from the daemon in {timeout}s:\n{daemon.stderr()}"
        assert daemon.proc.poll() is None, daemon.stderr()
        time.sleep(0.2)
