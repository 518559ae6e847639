"""The team server's "Team usage" dashboard (grafana/dashboards-team/): structure, and every panel query run against a
real VictoriaMetrics filled with known team data, the per-user panels equal to `report --central --by user`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bridge import central
from tests._stack import REPO, expand, iter_panels, running
from tests._vm import start_victoriametrics
from tests.test_central import DAYS, _expected, _team_data

TEAM = REPO / "grafana" / "dashboards-team" / "team-usage.json"
END = datetime(DAYS[-1].year, DAYS[-1].month, DAYS[-1].day, tzinfo=UTC) + timedelta(days=1)
RANGE_S = 3 * 86400


def _dashboard() -> dict:
    return json.loads(TEAM.read_text())


def _queries(d: dict) -> list[tuple[str, dict, dict]]:
    return [(p["title"], p, t) for p in iter_panels(d["panels"]) for t in p.get("targets", [])]


def test_team_dashboard_has_user_machine_provider_model_variables_and_the_shared_datasource():
    d = _dashboard()
    assert d["uid"] == "tokenbridge-team" and d["id"] is None and "team" in d["tags"]
    names = [v["name"] for v in d["templating"]["list"]]
    assert names == ["user", "machine", "provider", "model"]
    for title, p, t in _queries(d):
        # The team Grafana's VictoriaMetrics datasource keeps the personal uid (grafana/provisioning-team).
        assert p["datasource"]["uid"] == t["datasource"]["uid"] == "tokenbridge-prometheus", title
        if (central.TOKENS in t["expr"] or central.COST in t["expr"]) and "Billed" not in title:
            assert "increase_pure" in t["expr"] and "or on (user, model)" in t["expr"], title
            assert "$user" in t["expr"] and "$machine" in t["expr"], title
    titles = {p["title"] for p in iter_panels(d["panels"])}
    assert {"Cost by user", "Tokens by user", "Cost by machine", "Cost by model", "Top spenders"} <= titles


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    vm = start_victoriametrics(tmp_path_factory.mktemp("teamdash"))
    with running(vm.proc):
        data = _team_data()
        vm.import_series([s.doc() for s in data])
        vm.data_series = data  # type: ignore[attr-defined]
        yield vm


def _run(vm, expr: str) -> list[dict]:
    variables = {"user": ".*", "machine": ".*", "provider": ".*", "model": ".*"}
    return vm.query(expand(expr, variables, RANGE_S, 3600, 3600), at=END.timestamp() - 0.001)


@pytest.mark.stack
def test_every_panel_query_runs_on_victoriametrics(vm):
    empty = []
    for title, _p, t in _queries(_dashboard()):
        if not _run(vm, t["expr"]):
            empty.append(title)
        if not t.get("instant"):  # time series panels: the range query Grafana sends runs
            variables = {"user": ".*", "machine": ".*", "provider": ".*", "model": ".*"}
            expr = expand(t["expr"], variables, RANGE_S, 3600, 3600)
            vm.query_range(expr, END.timestamp() - RANGE_S, END.timestamp(), 3600)
    # Only the panels reading vmalert's recorded series are empty here (tests/test_team_rules.py runs vmalert).
    assert set(empty) <= {"Spent this month by user vs budget", "Spend today per user (UTC day)"}, empty


def test_no_time_series_panel_uses_the_window_queries():
    """Range queries evaluate `offset` differently in VictoriaMetrics: exact windows are instant panels only."""
    for title, p, t in _queries(_dashboard()):
        if p["type"] == "timeseries":
            assert "offset" not in t["expr"] and "increase" not in t["expr"], title
            assert t["expr"].startswith("max by (user) (max_over_time(user:tokenbridge_cost_usd:"), title


@pytest.mark.stack
def test_per_user_panels_equal_the_known_data_and_the_report(vm):
    d = {p["title"]: p for p in iter_panels(_dashboard()["panels"])}
    expected = _expected(vm.data_series, "user")
    by_user: dict[str, Decimal] = {}
    for (_day, user), e in expected.items():
        by_user[user] = by_user.get(user, Decimal(0)) + (e["cost"] or Decimal(0))
    got = {r["metric"]["user"]: Decimal(r["value"][1]) for r in _run(vm, d["Cost by user"]["targets"][0]["expr"])}
    assert set(got) == set(by_user)
    for user, cost in by_user.items():
        assert abs(got[user] - cost) < Decimal("0.000001"), user
    tokens = {r["metric"]["user"]: int(r["value"][1]) for r in _run(vm, d["Tokens by user"]["targets"][0]["expr"])}
    report = central.build(central.Central(vm.url), "daily", "user", UTC, DAYS[0], DAYS[-1]).totals()
    assert tokens == {u: g.total for u, g in report.items()}
    (team,) = _run(vm, d["Team cost"]["targets"][0]["expr"])
    assert abs(Decimal(team["value"][1]) - sum(by_user.values())) < Decimal("0.00001")
    (billed,) = _run(vm, d["Billed cost (organisation)"]["targets"][0]["expr"])
    assert Decimal(billed["value"][1]) == Decimal("37.5")  # 3 days x $12.50, apart from the users
    (active,) = _run(vm, d["Active users"]["targets"][0]["expr"])
    assert int(active["value"][1]) == len(by_user)
