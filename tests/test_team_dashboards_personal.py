"""The personal dashboards' team variants (grafana/dashboards-team/, grafana/team_personal.py): structure, and every
panel query run against a real VictoriaMetrics holding known data of two users on two machines each, the headline
totals equal to that data for All, one user and one machine, in instant and in range (time series) queries."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bridge import central
from tests._stack import REPO, expand, iter_panels, running
from tests._vm import start_victoriametrics
from tests.test_central import DAYS, TYPES, Series, _moments

TEAM_DIR = REPO / "grafana" / "dashboards-team"
NAMES = ("ai-usage-overview.json", "claude-code.json", "claude-code-activity.json")
END = datetime(DAYS[-1].year, DAYS[-1].month, DAYS[-1].day, tzinfo=UTC) + timedelta(days=1)
AT = END.timestamp() - 0.001  # the range (AT - RANGE_S, AT] holds every sample, the first midnight's included
RANGE_S = 3 * 86400
STEP = 3600
SONNET, OPUS, HAIKU = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"
REQUESTS = "claude_code_api_request_count_total"
ACTIVITY = (
    REQUESTS,
    "claude_code_api_error_count_total",
    "claude_code_user_prompt_count_total",
    "claude_code_session_count_total",
    "claude_code_active_time_seconds_total",
    "claude_code_lines_of_code_count_total",
    "claude_code_commit_count_total",
    "claude_code_pull_request_count_total",
    "claude_code_code_edit_tool_decision_total",
    "claude_code_tool_result_count_total",
    "claude_code_tool_result_duration_milliseconds_bucket",
    "claude_code_api_request_duration_milliseconds_bucket",
)


def _dashboards() -> dict[str, dict]:
    return {n: json.loads((TEAM_DIR / n).read_text()) for n in NAMES}


def _targets(d: dict) -> list[tuple[str, dict, dict]]:
    return [(p["title"], p, t) for p in iter_panels(d["panels"]) for t in p.get("targets", [])]


def _series(user: str, machine: str | None, **labels: str) -> dict[str, str]:
    return {"user": user, "job": "tokenbridge", **({"machine": machine} if machine else {}), **labels}


def _data() -> list[Series]:
    """ann (laptop, desk) and bo (mac, linux). Counted: the bridges' series; native telemetry for models the same
    user's bridge has not seen (bo's native sonnet counts although ann's bridge saw sonnet). Not counted: ann's native
    sonnet (her transcripts have it), bo's native haiku (his linux bridge has it), ann's billing API cost."""
    rnd = random.Random(2026)
    out: list[Series] = []

    def usage(user: str, machine: str | None, source: str, provider: str, model: str, counted: bool, **kw) -> None:
        base = _series(user, machine, source=source, provider=provider, model=model)
        toks = [Series(central.TOKENS, {**base, "type": t}, counted) for t in TYPES]
        # Without a price the bridge counts the request as unpriced and sends no cost (unknown, never $0).
        cost = Series(central.COST if kw.get("priced", True) else central.UNPRICED, base, counted)
        first = True
        for day in DAYS:
            if day in kw.get("off", ()):
                continue  # the machine was off for a day: its next export carries on from its last total
            for i, when in enumerate(_moments(day)):
                reset = kw.get("reset_on") == (day, i)
                for s in toks:  # a bridge's first export carries its history, counted in the range
                    s.add(when, Decimal(rnd.randint(300_000, 900_000) if first and kw.get("history") else 0), reset)
                    s.add(when + timedelta(minutes=1), Decimal(rnd.randint(0, 5000)), False)
                amount = rnd.randint(0, 900_000) / Decimal(1_000_000) if kw.get("priced", True) else rnd.randint(0, 3)
                cost.add(when + timedelta(minutes=1), Decimal(amount), reset)
                first = False
        out.extend([*toks, cost])

    usage("ann", "laptop", "claude_transcripts", "anthropic", SONNET, True, history=True)
    usage("ann", "desk", "claude_transcripts", "anthropic", OPUS, True, off=[DAYS[1]])
    usage("ann", None, "claude_code_otel", "anthropic", SONNET, False)
    usage("ann", None, "claude_code_otel", "anthropic", HAIKU, True)
    usage("bo", "mac", "codex", "openai", "gpt-5", True)
    usage("bo", "linux", "claude_transcripts", "anthropic", HAIKU, True, history=True)
    usage("bo", None, "claude_code_otel", "anthropic", SONNET, True, reset_on=(DAYS[1], 4))  # collector restart
    usage("bo", None, "claude_code_otel", "anthropic", HAIKU, False)
    usage("bo", "linux", "claude_transcripts", "anthropic", "claude-experimental-x", True, priced=False)
    billed = Series(central.COST, _series("ann", "laptop", source="anthropic_cost_api", provider="anthropic",
                                           model="Claude Sonnet Usage"), False)  # fmt: skip
    for day in DAYS:
        billed.add(_moments(day)[3], Decimal("12.5"))
    out.append(billed)
    for user, machine in (("ann", "laptop"), ("bo", "mac")):  # Claude Code's event metrics and native counters
        for metric in ACTIVITY:
            labels = _series(user, machine, model=SONNET, type="user", decision="accept", source="config")
            labels |= {
                "tool_name": "Bash",
                "success": str(user == "ann").lower(),
                "status_code": "529",
                "query_source": "main",
            }
            for le in ("1000", "+Inf") if metric.endswith("_bucket") else ("",):
                s = Series(metric, {**labels, **({"le": le} if le else {})}, True)
                for day in DAYS:
                    for when in _moments(day):
                        s.add(when, Decimal(rnd.randint(0, 40) if not le else 7))
                out.append(s)
    return out


def _gauges(t: datetime) -> list[dict]:
    ms = int(t.timestamp() * 1000) - 60_000
    labels = _series("ann", "laptop", source="anthropic_cost_api", provider="openrouter", currency="USD")
    names = ("tokenbridge_balance", "tokenbridge_key_limit_remaining", "tokenbridge_source_consecutive_failures",
             "tokenbridge_source_last_success_seconds")  # fmt: skip
    return [{"metric": {"__name__": n, **labels}, "values": [3.0], "timestamps": [ms]} for n in names]


def _want(data: list[Series], metric: str, **rx: str) -> Decimal:
    """The sum of the counted increments of `metric` in the range on the series whose labels match `rx`."""
    return sum(
        (a for s in data if s.counted and s.metric == metric
         if all(re.fullmatch(v, s.labels.get(k, "")) for k, v in rx.items()) for _w, a, _r in s.steps),
        Decimal(0),
    )  # fmt: skip


def _vars(**over: str) -> dict[str, str]:
    names = ("user", "machine", "provider", "model", "source", "speed", "query_source", "effort", "agent_name")
    return {**dict.fromkeys((*names, "skill_name"), ".*"), **over}


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    vm = start_victoriametrics(tmp_path_factory.mktemp("teamdash-personal"))
    with running(vm.proc):
        data = _data()
        vm.import_series([s.doc() for s in data] + _gauges(END))
        vm.data_series = data  # type: ignore[attr-defined]
        yield vm


def _instant(vm, expr: str, **over: str) -> list[dict]:
    return vm.query(expand(expr, _vars(**over), RANGE_S, STEP, STEP), at=AT)


def _one(vm, expr: str, **over: str) -> Decimal:
    (r,) = _instant(vm, expr, **over)
    return Decimal(r["value"][1])


def _panel(name: str, title: str) -> str:
    (p,) = [p for p in iter_panels(_dashboards()[name]["panels"]) if p["title"] == title and p["type"] != "timeseries"]
    return p["targets"][0]["expr"]


def test_team_variants_have_their_own_uid_title_and_user_machine_variables_first():
    uids = set()
    for name, d in _dashboards().items():
        personal = json.loads((REPO / "grafana" / "dashboards" / name).read_text())
        assert d["uid"] == personal["uid"].replace("tokenbridge-", "tokenbridge-team-") and d["uid"] not in uids
        uids.add(d["uid"])
        assert d["title"] == f"{personal['title']} (team)" and "team" in d["tags"]
        variables = d["templating"]["list"]
        assert [v["name"] for v in variables[:2]] == ["user", "machine"]
        assert [v["name"] for v in variables[2:]] == [v["name"] for v in personal["templating"]["list"]]
        assert all(v["multi"] and v["includeAll"] and v["allValue"] == ".*" for v in variables[:2])
        # The same panels as the personal dashboard: built by the same code.
        assert [p["title"] for p in iter_panels(d["panels"])] == [p["title"] for p in iter_panels(personal["panels"])]
    assert not (TEAM_DIR / "spend-control.json").exists()  # it reads Prometheus recording rules


def test_every_series_selector_carries_the_user_and_machine_variables_and_no_anchored_range():
    metric = re.compile(r"\b(?:claude_code|tokenbridge|gemini_cli|codex)_[A-Za-z0-9_]+\b(?P<brace>\{?)")
    for name, d in _dashboards().items():
        for title, _p, t in _targets(d):
            expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', t["expr"])  # label values are not metric names
            assert "anchored" not in expr and " increase(" not in f" {expr}", (name, title)
            found = list(metric.finditer(expr))
            assert found, (name, title)
            for m in found:
                assert m["brace"] and expr[m.end() :].startswith('user=~"",machine=~""'), (name, title, m[0])


@pytest.mark.stack
def test_every_panel_query_of_every_team_variant_runs_on_victoriametrics(vm):
    empty = []
    for name, d in _dashboards().items():
        for title, _p, t in _targets(d):
            if not t.get("instant"):  # the range query Grafana sends for a time series panel
                expr = expand(t["expr"], _vars(), RANGE_S, STEP, STEP)
                if not vm.query_range(expr, AT - RANGE_S + STEP, AT, STEP):
                    empty.append((name, title))
            elif not _instant(vm, t["expr"]):
                empty.append((name, title))
    assert empty == [], empty  # the data has every panel's metrics: an empty answer would hide a wrong query


@pytest.mark.stack
@pytest.mark.parametrize(
    "pick",
    [{}, {"user": "bo"}, {"user": "ann"}, {"machine": "desk"}, {"user": "ann|bo", "machine": "laptop|mac"}],
    ids=["all", "bo", "ann", "desk", "two-machines"],
)
def test_headline_totals_equal_the_known_data(vm, pick):
    data = vm.data_series
    tokens, cost = _want(data, central.TOKENS, **pick), _want(data, central.COST, **pick)
    assert tokens > 0 and cost > 0
    for name, what in (("ai-usage-overview.json", "Total"), ("claude-code.json", "Total")):
        assert _one(vm, _panel(name, f"{what} tokens"), **pick) == tokens, (name, pick)
        assert abs(_one(vm, _panel(name, f"{what} cost"), **pick) - cost) < Decimal("0.000001"), (name, pick)
    requests = _one(vm, _panel("claude-code-activity.json", "API requests"), **pick)
    assert requests == _want(data, REQUESTS, **pick)


@pytest.mark.stack
def test_the_headline_equals_the_team_usage_dashboards_query(vm):
    """Same data, same count-once rule as `tokenbridge report --central` and the Team usage dashboard."""
    for metric in (central.TOKENS, central.COST):
        team = Decimal(vm.query(central.team_query(metric, [], f"{RANGE_S}s"), at=AT)[0]["value"][1])
        title = "Total tokens" if metric == central.TOKENS else "Total cost"
        assert abs(_one(vm, _panel("ai-usage-overview.json", title)) - team) < Decimal("0.000001")


@pytest.mark.stack
@pytest.mark.parametrize("pick", [{}, {"user": "ann"}], ids=["all", "ann"])
def test_time_series_steps_add_up_to_the_exact_total_across_gaps_and_resets(vm, pick):
    """Each step's window is exact in a range query too (the offset inside the rollup), so the steps of a time series
    panel add up to the known total, a machine off for a day and a collector restart included."""
    d = _dashboards()["ai-usage-overview.json"]
    (panel,) = [p for p in iter_panels(d["panels"]) if p["title"] == "Tokens by provider" and p["type"] == "timeseries"]
    expr = expand(panel["targets"][0]["expr"], _vars(**pick), RANGE_S, STEP, STEP)
    got = sum(Decimal(v) for s in vm.query_range(expr, AT - RANGE_S + STEP, AT, STEP) for _t, v in s["values"])
    assert got == _want(vm.data_series, central.TOKENS, **pick)
