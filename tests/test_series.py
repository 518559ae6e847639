"""The one series model: labels, stable start times, and the cross-process monotonic guard.

The regression this guards: ``tokenbridge sync`` beside a running ``tokenbridge run`` made the
daemon re-export its older snapshot after ``sync`` had sent newer totals; a cumulative counter
that goes down is a reset, and Prometheus' ``increase()`` then counts the whole total again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bridge.export import BridgeExporter
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord
from bridge.series import COST_METRIC, TOKEN_METRIC, UNPRICED_METRIC, SeriesBook, guarded_points, series_key, values
from tests._otlp_sink import running_sink

TS = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
OUT = (("model", "m"), ("provider", "anthropic"), ("source", "claude_transcripts"), ("type", "output"))


def rec(key: str, out: int, *, replace: bool = False, session: str | None = None) -> UsageRecord:
    return UsageRecord(
        source="claude_transcripts", provider="anthropic", model="m", timestamp=TS, dedup_key=key,
        tokens=Tokens(output=out), session_id=session, replace=replace,
    )  # fmt: skip


def out_value(points: list, metric: str = TOKEN_METRIC) -> Decimal:
    [p] = [p for p in points if p.metric == metric and p.attrs == OUT]
    return p.value


def test_values_use_claude_code_labels_and_session_only_when_asked(ledger, pricer):
    ledger.commit([rec("a", 5, session="s1"), rec("b", 7, session="s2")], pricer)
    plain = {(m, a): v for m, a, v in values(ledger.totals(), include_session_id=False)}
    assert plain[(TOKEN_METRIC, OUT)] == 12  # two sessions, one series without session.id
    with_session = {(m, a): v for m, a, v in values(ledger.totals(), include_session_id=True)}
    assert with_session[(TOKEN_METRIC, tuple(sorted((*OUT, ("session.id", "s1")))))] == 5
    assert plain[(COST_METRIC, OUT[:3])] == Decimal(12) / Decimal(10**6)


def test_start_time_is_fixed_by_the_first_export_of_any_process(ledger, pricer):
    ledger.commit([rec("a", 5)], pricer)
    first = guarded_points(ledger, False, now_ns=1_000)
    ledger.commit([rec("b", 5)], pricer)
    later = guarded_points(ledger, False, now_ns=9_000)
    start = {p.key: p.start_ns for p in first}
    assert all(p.start_ns == start[p.key] == 1_000 for p in later)


def test_a_series_never_goes_below_what_any_writer_exported(tmp_path, pricer):
    state = tmp_path / "state"
    with Ledger.open(state) as led:
        led.commit([rec("bucket", 50, replace=True)], pricer)
        assert out_value(guarded_points(led, False, 1)) == 50
        # The bucket was revised down by its provider: the ledger's total is 40 now, but the
        # counter already said 50; a lower value would be read as a reset.
        led.commit([rec("bucket", 40, replace=True)], pricer)
        assert led.totals()[0].tokens["output"] == 40
        assert out_value(guarded_points(led, False, 2)) == 50
    with Ledger.open(state) as other_process:
        assert out_value(guarded_points(other_process, False, 3)) == 50


def test_series_book_records_only_changes(pricer):
    book = SeriesBook({series_key(TOKEN_METRIC, OUT): (7, "10")})
    p = book.admit(TOKEN_METRIC, OUT, Decimal(10), now_ns=99)
    assert (p.value, p.start_ns, book.pending) == (10, 7, {})
    book.admit(TOKEN_METRIC, OUT, Decimal(12), now_ns=99)
    assert book.pending == {series_key(TOKEN_METRIC, OUT): (7, "12")}


def _exporter(state: Path, env: dict[str, str], ledger: Ledger) -> BridgeExporter:
    return BridgeExporter(
        otlp=True, interval_s=3600, env=env, instance_id=ledger.instance_id(), ledger_path=ledger.path
    )  # fmt: skip


def test_sync_beside_run_never_makes_the_daemon_export_a_lower_total(tmp_path, pricer):
    state = tmp_path / "state"
    with running_sink("grpc") as sink, Ledger.open(state) as daemon_ledger:
        env = sink.env()
        daemon_ledger.commit([rec("a", 10)], pricer)
        daemon = _exporter(state, env, daemon_ledger)
        daemon.refresh(daemon_ledger)  # the daemon's snapshot: 10

        # `tokenbridge sync` in another process: ingests more and exports 25.
        with Ledger.open(state) as sync_ledger:
            sync_ledger.commit([rec("b", 15)], pricer)
            sync = _exporter(state, env, sync_ledger)
            sync.refresh(sync_ledger)
            assert sync.flush()
            sync.shutdown()

        # The daemon's next periodic export, still holding its older snapshot.
        assert daemon.flush()
        daemon.shutdown()
        sent = [p.value for p in sink.points() if p.metric == TOKEN_METRIC and p.attrs.get("type") == "output"]
    assert sent == [25.0, 25.0], "the second writer must not send the stale total 10"


def test_billed_cost_lines_without_requests_are_exported_as_cost(ledger, pricer):
    # A provider's cost API line: cost reported, no tokens, no requests (issue 7).
    from bridge.record import CostOrigin

    line = UsageRecord(
        source="openai_cost_api", provider="openai", model="gpt-5", timestamp=TS, dedup_key="openai:costs:1:x",
        tokens=Tokens(), cost=Decimal("0.875"), cost_origin=CostOrigin.REPORTED, requests=0, replace=True,
    )  # fmt: skip
    ledger.commit([line], pricer)
    cost = {a: v for m, a, v in values(ledger.totals(), include_session_id=False) if m == COST_METRIC}
    assert cost == {(("model", "gpt-5"), ("provider", "openai"), ("source", "openai_cost_api")): Decimal("0.875")}


def test_usage_rows_without_requests_and_without_a_price_export_unpriced_never_a_zero_cost(ledger, pricer):
    # Anthropic's usage report (no request count) with the cost API off: an unknown model's cost is
    # unknown, exported as one unpriced entry and no cost series; a priced model's cost is exported.
    def usage(model: str) -> UsageRecord:
        return UsageRecord(
            source="anthropic_usage_api", provider="anthropic", model=model, timestamp=TS,
            dedup_key=f"anthropic:messages:1:{model}", tokens=Tokens(input=2_000_000), requests=0, replace=True,
        )  # fmt: skip

    ledger.commit([usage("unknown-x"), usage("claude-m")], pricer)
    got = {(m, dict(a)["model"]): v for m, a, v in values(ledger.totals(), include_session_id=False)}
    assert got[(UNPRICED_METRIC, "unknown-x")] == 1 and (COST_METRIC, "unknown-x") not in got
    assert got[(COST_METRIC, "claude-m")] == 2 and (UNPRICED_METRIC, "claude-m") not in got


def test_balances_and_source_health_are_exported_as_otlp_gauges(tmp_path: Path, pricer):
    from bridge.ledger import Gauge
    from tests._otlp_sink import _any_value

    state = tmp_path / "state"
    with running_sink("http/protobuf") as sink, Ledger.open(state) as ledger:
        labels = {"provider": "deepseek", "currency": "CNY"}
        ledger.set_gauges("deepseek_balance_api", [Gauge("tokenbridge.balance", labels, Decimal("10.00"))])
        ledger.record_health("deepseek_balance_api")
        ledger.record_health("openai_usage_api", "http_401", "GET /x: HTTP 401")
        exporter = _exporter(state, sink.env(), ledger)
        exporter.refresh(ledger)
        assert exporter.flush()
        exporter.shutdown()
        got = {}
        for r in sink.requests():
            for rm in r.request.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.WhichOneof("data") == "gauge":
                            for dp in m.gauge.data_points:
                                attrs = tuple(sorted((a.key, _any_value(a.value)) for a in dp.attributes))
                                got[(m.name, attrs)] = dp.as_double
    assert got[("tokenbridge.balance", (("currency", "CNY"), ("provider", "deepseek")))] == 10.0
    fails = (("last_error_kind", "http_401"), ("source", "openai_usage_api"))
    assert got[("tokenbridge.source.consecutive_failures", fails)] == 1
    ok = got[("tokenbridge.source.last_success", (("source", "deepseek_balance_api"),))]
    assert abs(ok - time.time()) < 60


def test_project_attribute_only_when_asked_and_sums_equal_the_plain_series(tmp_path, pricer):
    from dataclasses import replace

    def points(include_project: bool) -> dict[str | None, Decimal]:
        with Ledger.open(tmp_path / ("p" if include_project else "plain")) as led:
            a, b, c = rec("a", 5), rec("b", 7), rec("c", 1)
            led.commit([replace(a, project="/shop"), replace(b, project="/blog"), c], pricer)
            return {
                dict(p.attrs).get("project"): p.value
                for p in guarded_points(led, False, 1, include_project=include_project)
                if p.metric == TOKEN_METRIC and ("type", "output") in p.attrs
            }

    assert points(False) == {None: 13}
    assert points(True) == {"/shop": 5, "/blog": 7, None: 1}  # rows without a project: no attribute
