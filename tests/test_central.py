"""`tokenbridge report --central`: per-user and per-machine totals read from a real VictoriaMetrics filled with known
samples, exact to the token and to the micro-dollar, with each request counted once per user (bridge/central.py)."""

from __future__ import annotations

import http.server
import json
import random
import threading
import urllib.request
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import central, cli
from bridge.errors import CentralError, ConfigError
from tests._stack import running, wait_until
from tests._vm import VictoriaMetrics, start_victoriametrics

pytestmark = pytest.mark.stack

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (3, 2, 1)]
TYPES = ("input", "output", "cacheRead", "cacheCreation")
_T = {"tokens": central.TOKENS, "cost": central.COST, "unpriced": central.UNPRICED}


class Series:
    """One counter's increments: (time, amount) pairs, turned into cumulative samples (resets where asked)."""

    def __init__(self, metric: str, labels: dict[str, str], counted: bool) -> None:
        self.metric, self.labels, self.counted = metric, labels, counted
        self.steps: list[tuple[datetime, Decimal, bool]] = []  # (when, increment, counter reset before it)

    def add(self, when: datetime, amount: Decimal, reset: bool = False) -> None:
        self.steps.append((when, amount, reset))

    def doc(self) -> dict:
        values, stamps, total = [], [], Decimal(0)
        for when, amount, reset in sorted(self.steps, key=lambda s: s[0]):
            total = amount if reset else total + amount
            values.append(float(total))
            stamps.append(int(when.timestamp() * 1000))
        return {"metric": {"__name__": self.metric, **self.labels}, "values": values, "timestamps": stamps}


def _moments(day: date) -> list[datetime]:
    """Every 3 hours from 00:30, plus a sample at exactly midnight (belongs to this day, not the one before)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [midnight] + [midnight + timedelta(hours=3 * i, minutes=30) for i in range(8)]


def _team_data() -> list[Series]:
    """Three users. Counted (the oracle): bridge transcripts, native telemetry for models that user's bridge has
    not seen, other tools. Not counted: native duplicates of transcript models, the billing API's cost."""
    rnd = random.Random(14)
    out: list[Series] = []

    def usage(user: str, machine: str | None, source: str, provider: str, model: str, counted: bool, **kw) -> None:
        base = {"user": user, "source": source, "provider": provider, "model": model, "job": "tokenbridge"}
        if machine:
            base["machine"] = machine
        toks = {t: Series(central.TOKENS, {**base, "type": t}, counted) for t in TYPES}
        cost = Series(central.COST, base, counted) if kw.get("priced", True) else None
        unpriced = None if cost else Series(central.UNPRICED, base, counted)
        first = True
        for day in DAYS:
            if day in kw.get("off", ()):
                continue  # the laptop was off: no sample for a whole day, then the totals continue
            for i, when in enumerate(_moments(day)):
                reset = kw.get("reset_on") == (day, i)
                for s in toks.values():
                    # A bridge's first export carries its history: a large first value, counted on that day.
                    n = rnd.randint(200_000, 900_000) if first and kw.get("history") else rnd.randint(0, 5000)
                    s.add(when, Decimal(n), reset)
                if cost:
                    cents = rnd.randint(0, 900_000) if not (first and kw.get("history")) else 45_000_000
                    cost.add(when, Decimal(cents) / 1_000_000, reset)
                if unpriced:
                    unpriced.add(when, Decimal(rnd.randint(0, 3)), reset)
                first = False
        out.extend([*toks.values(), *(x for x in (cost, unpriced) if x)])

    sonnet, opus, haiku = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"
    usage("alice", "laptop", "claude_transcripts", "anthropic", sonnet, True, history=True)
    usage("alice", None, "claude_code_otel", "anthropic", sonnet, False)  # the same requests, natively
    usage("alice", None, "claude_code_otel", "anthropic", haiku, True)  # a model alice's bridge has not seen
    usage("alice", "laptop", "codex", "openai", "gpt-5", True)
    usage("bob", "desk", "claude_transcripts", "anthropic", opus, True)
    usage("bob", "desk", "claude_transcripts", "anthropic", "claude-experimental-x", True, priced=False)
    usage("bob", None, "claude_code_otel", "anthropic", sonnet, True)  # bob's bridge never saw sonnet
    usage("dave", "laptop", "claude_transcripts", "anthropic", opus, True, history=True, off=[DAYS[1]])
    usage("carol", None, "claude_code_otel", "anthropic", sonnet, True, reset_on=(DAYS[1], 4))  # collector restart
    # Requests the bridge only has as Claude Code's forwarded events: they win over the same requests natively.
    usage("erin", "mini", "claude_code_events", "anthropic", sonnet, True)
    usage("erin", None, "claude_code_otel", "anthropic", sonnet, False)
    billed = Series(central.COST, {"user": "alice", "machine": "laptop", "source": "anthropic_cost_api",
                                   "provider": "anthropic", "model": "Claude Sonnet Usage"}, False)  # fmt: skip
    for day in DAYS:
        billed.add(_moments(day)[3], Decimal("12.5"))
    out.append(billed)
    return out


def _expected(data: list[Series], by: str) -> dict[tuple[str, str], dict]:
    """(day, value of `by`) → tokens by type, cost, unpriced: the sum of counted increments inside each day."""
    out: dict[tuple[str, str], dict] = {}
    for s in data:
        if not s.counted:
            continue
        for when, amount, _reset in s.steps:
            key = (when.date().isoformat(), s.labels.get(by, "(none)"))
            e = out.setdefault(key, {"tokens": dict.fromkeys(TYPES, 0), "cost": None, "unpriced": 0})
            if s.metric == central.TOKENS:
                e["tokens"][s.labels["type"]] += int(amount)
            elif s.metric == central.COST:
                e["cost"] = (e["cost"] or Decimal(0)) + amount
            else:
                e["unpriced"] += int(amount)
    return out


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    vm = start_victoriametrics(tmp_path_factory.mktemp("central"))
    with running(vm.proc):
        data = _team_data()
        vm.import_series([s.doc() for s in data])
        vm.data_series = data  # type: ignore[attr-defined]
        yield vm


def _report(vm: VictoriaMetrics, by: str, kind: str = "daily", **kw) -> central.CentralReport:
    return central.build(central.Central(vm.url), kind, by, UTC, DAYS[0], DAYS[-1], **kw)


def _assert_matches(rep: central.CentralReport, expected: dict) -> None:
    got = {(b.key, g.key): g for b in rep.buckets for g in b.groups.values()}
    assert set(got) == set(expected)
    for key, e in expected.items():
        g = got[key]
        assert g.tokens == e["tokens"], key
        assert g.unpriced == e["unpriced"], key
        if e["cost"] is None:
            assert g.cost is None, key
        else:
            assert g.cost is not None and abs(g.cost - e["cost"]) < Decimal("0.000001"), (key, g.cost, e["cost"])


@pytest.mark.parametrize("by", ["user", "machine"])
def test_daily_totals_by_user_and_machine_equal_the_known_increments(vm, by):
    rep = _report(vm, by)
    assert [b.key for b in rep.buckets] == [d.isoformat() for d in DAYS]
    _assert_matches(rep, _expected(vm.data_series, by))


def test_a_machine_off_for_a_day_adds_nothing_twice(vm):
    """dave's bridge sends nothing on the middle day: the next day counts only what was new (no re-counted
    history, the cumulative total's first sample after the gap is compared with the last one before it)."""
    rep = _report(vm, "user")
    days = {b.key: b.groups.get("dave") for b in rep.buckets}
    assert days[DAYS[1].isoformat()] is None or days[DAYS[1].isoformat()].total == 0
    expected = _expected(vm.data_series, "user")
    assert days[DAYS[2].isoformat()].tokens == expected[(DAYS[2].isoformat(), "dave")]["tokens"]


def test_a_users_native_duplicates_and_the_billing_api_are_not_counted(vm):
    rep = _report(vm, "user")
    counted = _expected(vm.data_series, "user")
    alice = sum(sum(e["tokens"].values()) for (_d, u), e in counted.items() if u == "alice")
    assert rep.totals()["alice"].total == alice
    # The billing API's $12.50 a day is organisation-wide: named, not added to alice.
    assert rep.billing_seen == ["anthropic_cost_api"]
    raw = _report(vm, "user", sources=["claude_code_otel"])
    assert raw.totals()["alice"].total > 0 and "alice" in raw.totals()  # --source shows the native view as it is
    assert raw.billing_seen == []


def test_unpriced_usage_has_unknown_cost_never_zero(vm):
    rep = _report(vm, "model", kind="daily")
    exp = rep.totals()["claude-experimental-x"]
    assert exp.cost is None and exp.unpriced > 0 and exp.total > 0
    assert rep.as_json()["totalsBy"][-1]["totalCost"] is None


def test_monthly_and_weekly_totals_equal_the_sum_of_days(vm):
    daily = _report(vm, "user").totals()
    for kind in ("weekly", "monthly"):
        other = _report(vm, "user", kind=kind).totals()
        assert {k: g.tokens for k, g in other.items()} == {k: g.tokens for k, g in daily.items()}, kind
        for k, g in other.items():
            assert g.cost == daily[k].cost or abs((g.cost or 0) - (daily[k].cost or 0)) < Decimal("0.000001")


def test_cli_json_matches_and_the_table_names_every_user(vm, capsys, monkeypatch):
    monkeypatch.setenv("TOKENBRIDGE_CENTRAL_URL", vm.url)
    args = ["report", "daily", "--by", "user", "-z", "UTC", "--since", DAYS[0].isoformat()]
    assert cli.main([*args, "--until", DAYS[-1].isoformat(), "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert "anthropic_cost_api: organisation-wide billing data, not attributed to users" in err
    totals = {g["user"]: g for g in data["totalsBy"]}
    expected = _expected(vm.data_series, "user")
    for user in ("alice", "bob", "carol"):
        tokens = sum(sum(e["tokens"].values()) for (_d, u), e in expected.items() if u == user)
        cost = sum((e["cost"] or 0 for (_d, u), e in expected.items() if u == user), Decimal(0))
        assert totals[user]["totalTokens"] == tokens
        assert Decimal(totals[user]["totalCost"]).quantize(Decimal("0.01")) == cost.quantize(Decimal("0.01"))
    assert cli.main([*args, "--until", DAYS[-1].isoformat()]) == 0
    table, _ = capsys.readouterr()
    assert all(u in table for u in ("alice", "bob", "carol")) and "Total" in table


def test_by_user_without_a_central_store_is_a_config_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TOKENBRIDGE_CENTRAL_URL", raising=False)
    assert cli.main(["--state-dir", str(tmp_path), "report", "daily", "--by", "user"]) == 2
    assert "--by: user needs the team's central store" in capsys.readouterr().err
    assert cli.main(["report", "daily", "--central", "http://127.0.0.1:9", "--breakdown"]) == 2
    assert "--breakdown: not available with --central" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="reads the local ledger only"):
        central.build(central.Central("http://127.0.0.1:9"), "session", "user", UTC)
    with pytest.raises(ConfigError, match="source label value"):
        central.build(central.Central("http://127.0.0.1:9"), "daily", "user", UTC, sources=['x"}'])


class _AuthProxy(http.server.BaseHTTPRequestHandler):
    """A real bearer-token gate in front of VictoriaMetrics (what a team puts before its query API)."""

    upstream = ""
    token = ""

    def do_POST(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = urllib.request.Request(
            self.upstream + self.path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            payload = r.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def test_token_is_sent_and_never_shown(vm, capsys, monkeypatch):
    handler = type("H", (_AuthProxy,), {"upstream": vm.url, "token": "s3cret-team-token"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        args = ["report", "daily", "--central", url, "--by", "user", "--json", "-z", "UTC"]
        args += ["--since", DAYS[0].isoformat(), "--until", DAYS[-1].isoformat()]
        monkeypatch.setenv("TOKENBRIDGE_CENTRAL_TOKEN", "wrong-token-value")
        assert cli.main(args) == 1
        err = capsys.readouterr().err
        assert "refused the query (HTTP 401)" in err and "wrong-token-value" not in err
        monkeypatch.setenv("TOKENBRIDGE_CENTRAL_TOKEN", "s3cret-team-token")
        assert cli.main(args) == 0
        out, err = capsys.readouterr()
        assert "s3cret" not in out + err and json.loads(out)["totalsBy"]
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_store_is_one_clear_error(tmp_path: Path):
    with pytest.raises(CentralError, match=r"cannot reach the central store at http://127\.0\.0\.1:9"):
        central.Central("http://user:pw@127.0.0.1:9").query("up", 0)


# ------------------------------------------------------------------ through the real team pipeline

from tests.test_team_e2e import GOOD, ledger_totals, sync, team  # noqa: E402, F401 - `team`: the e2e fixture


@pytest.mark.slow
def test_report_by_user_and_machine_equals_each_machines_ledger_through_the_team_collector(team, capsys):  # noqa: F811
    """Three machines' `tokenbridge sync` through the real team collector into VictoriaMetrics (tests/test_team_e2e):
    `report --central --by user` and `--by machine` equal each ledger, to the token and to the micro-dollar."""
    for name in GOOD:
        sync(team.machines[name], team)
    url = f"http://127.0.0.1:{team.vm_port}"
    since = (TODAY - timedelta(days=2)).isoformat()
    expected: dict[str, dict[str, tuple[int, Decimal]]] = {"user": {}, "machine": {}}
    for name in GOOD:
        m = team.machines[name]
        tokens, cost = ledger_totals(m)
        for by, key in (("user", m.user), ("machine", m.name)):
            old = expected[by].get(key, (0, Decimal(0)))
            expected[by][key] = (old[0] + tokens, old[1] + cost)
    for by, want in expected.items():
        args = ["report", "daily", "--central", url, "--by", by, "-z", "UTC", "--since", since, "--json"]
        wanted_tokens = {k: v[0] for k, v in want.items()}
        got = wait_until(lambda a=args, b=by, w=wanted_tokens: _report_totals(capsys, a, b, w), 30, f"--by {by}")
        for key, (tokens, cost) in want.items():
            assert got[key][0] == tokens and abs(got[key][1] - cost) < Decimal("0.000001"), (by, key, got[key], cost)


def _report_totals(capsys, args: list[str], by: str, tokens: dict[str, int]) -> dict[str, tuple[int, Decimal]] | None:
    """The report's totals per value once its tokens reached `tokens` (the collector batches and retries)."""
    assert cli.main(args) == 0
    rows = json.loads(capsys.readouterr().out)["totalsBy"]
    got = {r[by]: (r["totalTokens"], Decimal(r["totalCost"])) for r in rows}
    return got if {k: v[0] for k, v in got.items()} == tokens else None
