"""Team mode end to end, on loopback with the real parts: the team collector built by ocb from
otelcol-team-builder.yaml (with collector/teamauth) running the repo's otel-collector-team.yml, VictoriaMetrics
v1.151.0 built from its Go module, and `tokenbridge sync` as real processes, one ledger and one Claude Code home per
simulated machine.

Test-only deviations from the shipped files: ports and the remote-write URL come from environment variables, the
collector's batch timeout is 200 ms and the tokens file is re-read every 200 ms; VictoriaMetrics runs with
-search.latencyOffset=0s and -search.disableCache, so a sample is queryable as soon as it is stored (production keeps
the defaults: a query lags 30 s behind).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.ledger import Ledger
from tests._stack import (
    REPO,
    Proc,
    free_port,
    http_get,
    spawn,
    team_otelcol_bin,
    victoriametrics_bin,
    wait_until,
    write_claude_home,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
TOKENS = {
    "alice": "alice-7f3c9a1e5b2d4c6f8a0b",
    "bob": "bob-2e4f6a8c0d1b3e5f7a9c",
    "carol": "carol-9d8c7b6a5f4e3d2c1b0a",
}
WRONG = "dave-0000-not-in-the-file-xyz"  # dave's token is not in the tokens file


@dataclass
class Machine:
    name: str
    user: str  # the user whose token the machine sends
    claims: str  # TOKENBRIDGE_USER on that machine (carol's claims to be alice)
    token: str
    protocol: str
    home: Path
    state: Path


@dataclass
class Team:
    work: Path
    vm: Proc
    vm_port: int
    collector: Proc
    ports: dict[str, int]
    tokens_file: Path
    machines: dict[str, Machine]

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"})
        code, body = http_get(f"http://127.0.0.1:{self.vm_port}/api/v1/query?{q}", timeout=30)
        data = json.loads(body)
        assert code == 200 and data["status"] == "success", f"{expr}: {code} {body[:300]!r}"
        return list(data["data"]["result"])

    def by_user(self, metric: str, selector: str = 'job="tokenbridge"') -> dict[str, float]:
        rows = self.query(f"sum by (user) (last_over_time({metric}{{{selector}}}[1h]))")
        return {r["metric"].get("user", ""): float(r["value"][1]) for r in rows}

    def start_collector(self) -> None:
        env = {
            "OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['grpc']}",
            "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['http']}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports['health']}",
            "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
            "OTELCOL_TELEMETRY_PORT": str(self.ports["telemetry"]),
            "OTELCOL_BATCH_TIMEOUT": "200ms",
            "TOKENBRIDGE_TEAM_TOKENS_FILE": str(self.tokens_file),
            "TOKENBRIDGE_TEAM_TOKENS_RELOAD": "200ms",
            "TOKENBRIDGE_TEAM_REMOTE_WRITE_URL": f"http://127.0.0.1:{self.vm_port}/api/v1/write",
        }
        n = len(list(self.work.glob("team-collector*.log")))
        proc = spawn(
            "team-collector",
            [team_otelcol_bin(), f"--config={REPO / 'otel-collector-team.yml'}"],
            self.work / f"team-collector-{n}.log",
            env=env,
        )
        self.collector = proc
        try:
            wait_until(
                lambda: proc.alive() and http_get(f"http://127.0.0.1:{self.ports['health']}/")[0] == 200,
                60,
                "team collector health_check",
            )
        except AssertionError:
            proc.stop()
            raise AssertionError(f"team collector did not become healthy:\n{proc.tail()}") from None

    def collector_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.work.glob("team-collector*.log")))


def _env(m: Machine, team: Team, token: str | None = None) -> dict[str, str]:
    skip = ("OTEL_", "TOKENBRIDGE_", "CLAUDE_", "CODEX_", "OPENCLAW_", "GEMINI_", "OPENCODE_", "AMP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    port = team.ports["grpc"] if m.protocol == "grpc" else team.ports["http"]
    env.update(
        {
            "HOME": str(m.home.parent / "home"),
            "CLAUDE_CONFIG_DIR": str(m.home),
            "TOKENBRIDGE_STATE_DIR": str(m.state),
            "TOKENBRIDGE_CONFIG": str(m.home.parent / "no-config.toml"),
            "TZ": "UTC",
            "TOKENBRIDGE_TEAM": "1",
            "TOKENBRIDGE_USER": m.claims,
            "TOKENBRIDGE_MACHINE": m.name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": m.protocol,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{token or m.token}",
        }
    )
    return env


def sync(m: Machine, team: Team) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "sync", "--no-progress"],
        env=_env(m, team),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO),
    )
    assert r.returncode == 0, f"sync on {m.name} failed:\n{r.stdout}\n{r.stderr}"
    return r


def ledger_totals(m: Machine) -> tuple[int, Decimal]:
    with Ledger.open(m.state) as led:
        rows = led.totals()
    return sum(sum(t.tokens.values()) for t in rows), sum((t.cost for t in rows), Decimal(0))


def _requests(seed: int, n: int) -> list[dict[str, int]]:
    return [
        {"input": 10 * seed + i, "output": 100 * seed + 7 * i, "cacheRead": 1000 * seed + i, "cacheCreation": 50 * i}
        for i in range(1, n + 1)
    ]


def _sessions(machine: str, seed: int, n: int, model: str) -> dict[str, dict]:
    sid = f"{seed:08d}-0000-4000-8000-{machine.encode().hex()[:12]:0>12}"
    return {sid: {"model": model, "requests": _requests(seed, n)}}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("team")
    tokens_file = work / "team-tokens"
    tokens_file.write_text("# user:token\n" + "".join(f"{u}:{t}\n" for u, t in TOKENS.items()))
    tokens_file.chmod(0o600)
    vm_port = free_port()
    vm = spawn(
        "victoriametrics",
        [
            victoriametrics_bin(),
            f"-storageDataPath={work / 'vm-data'}",
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            "-retentionPeriod=400d",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        work / "victoriametrics.log",
    )
    ports = {k: free_port() for k in ("grpc", "http", "health", "telemetry")}
    t = Team(work, vm, vm_port, vm, ports, tokens_file, {})
    try:
        wait_until(lambda: vm.alive() and http_get(f"http://127.0.0.1:{vm_port}/health")[0] == 200, 60, "VM health")
        t.start_collector()
        now = time.time() - 3600
        specs = [
            ("m-alice", "alice", "alice", "grpc", 1, 3, SONNET),
            ("m-bob", "bob", "bob", "http/protobuf", 2, 2, OPUS),
            ("m-carol", "carol", "alice", "grpc", 3, 4, SONNET),  # claims to be alice
            ("m-dave", "dave", "dave", "http/protobuf", 4, 1, SONNET),  # wrong token
        ]
        for name, user, claims, proto, seed, n, model in specs:
            root = work / name
            home = write_claude_home(root / "claude", _sessions(name, seed, n, model), now + seed)
            token = TOKENS.get(user, WRONG)
            t.machines[name] = Machine(name, user, claims, token, proto, home, root / "state")
        yield t
    finally:
        t.collector.stop()
        vm.stop()


def _expected(team: Team, names: list[str]) -> tuple[dict[str, float], dict[str, Decimal]]:
    tokens: dict[str, float] = {}
    cost: dict[str, Decimal] = {}
    for n in names:
        m = team.machines[n]
        tok, usd = ledger_totals(m)
        tokens[m.user] = tokens.get(m.user, 0) + tok
        cost[m.user] = cost.get(m.user, Decimal(0)) + usd
    return tokens, cost


GOOD = ["m-alice", "m-bob", "m-carol"]


def _assert_exact(team: Team) -> None:
    want_tok, want_cost = _expected(team, GOOD)
    assert all(v > 0 for v in want_tok.values())

    def tokens_match() -> bool:
        got = team.by_user("claude_code_token_usage_tokens_total")
        return {u: v for u, v in got.items() if u in want_tok} == want_tok

    try:
        wait_until(tokens_match, 30, "per-user token totals in VictoriaMetrics")
    except AssertionError:
        raise AssertionError(f"{team.by_user('claude_code_token_usage_tokens_total')} != {want_tok}") from None
    got_cost = team.by_user("claude_code_cost_usage_USD_total")
    for user, usd in want_cost.items():
        assert got_cost[user] == pytest.approx(float(usd), rel=1e-9), user


def test_each_users_total_in_victoriametrics_equals_their_machines_ledger(team: Team):
    for name in GOOD:
        r = sync(team.machines[name], team)
        assert "warning" not in r.stderr, r.stderr
    _assert_exact(team)
    # Every series carries user and machine; no series escaped without them.
    rows = team.query('last_over_time(claude_code_token_usage_tokens_total{job="tokenbridge"}[1h])')
    pairs = {(r["metric"].get("user"), r["metric"].get("machine")) for r in rows}
    assert pairs == {("alice", "m-alice"), ("bob", "m-bob"), ("carol", "m-carol")}


def test_a_client_claiming_another_users_name_is_stamped_with_its_token_user(team: Team):
    # m-carol ran with TOKENBRIDGE_USER=alice (a resource attribute `user=alice`): its series are carol's.
    rows = team.query('last_over_time(claude_code_token_usage_tokens_total{machine="m-carol"}[1h])')
    assert rows and {r["metric"]["user"] for r in rows} == {"carol"}
    # A point attribute `user` and a resource attribute `user`, both claiming alice, over bob's token.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(
        endpoint=f"http://127.0.0.1:{team.ports['http']}/v1/metrics",
        headers={"authorization": f"Bearer {TOKENS['bob']}"},
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "claude-code", "user": "alice", "machine": "m-forged"})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    counter = provider.get_meter("com.anthropic.claude_code").create_counter("claude_code.token.usage", unit="tokens")
    counter.add(1234, {"model": SONNET, "type": "input", "user": "alice", "session.id": "forged"})
    counter.add(66, {"model": SONNET, "type": "input", "user": "alice", "session.id": "forged"})
    assert provider.force_flush(10_000)
    provider.shutdown()

    def forged() -> list[dict]:
        return team.query('last_over_time(claude_code_token_usage_tokens_total{machine="m-forged"}[1h])')

    rows = wait_until(forged, 30, "the forged series")
    assert [(r["metric"]["user"], r["metric"]["source"], float(r["value"][1])) for r in rows] == [
        ("bob", "claude_code_otel", 1300.0)
    ]


def test_claude_code_events_count_under_the_token_user_over_both_protocols(team: Team):
    from tests._events import api_request, logs_request, send_grpc, send_http

    sid = "ev-team-0001"
    claimed = {"user": "alice", "machine": "m-carol"}  # carol's Claude Code claims alice; the token says carol
    http_events = [api_request(sid, f"req_h{i}", SONNET, duration_ms=900 + i) for i in range(3)]
    grpc_events = [api_request(sid, f"req_g{i}", SONNET, duration_ms=1200 + i) for i in range(2)]
    url = f"http://127.0.0.1:{team.ports['http']}/v1/logs"
    status = send_http(
        url, logs_request(http_events, resource_extra=claimed), {"Authorization": f"Bearer {TOKENS['carol']}"}
    )
    assert status == 200
    send_grpc(
        f"127.0.0.1:{team.ports['grpc']}",
        logs_request(grpc_events, resource_extra=claimed),
        [("authorization", f"Bearer {TOKENS['carol']}")],
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # no token: not counted anywhere
        send_http(url, logs_request(http_events, resource_extra=claimed))
    assert refused.value.code == 401

    def counted() -> list[dict]:
        rows = team.query('last_over_time(claude_code_api_request_count_total{job="claude-code"}[1h])')
        return rows if sum(float(r["value"][1]) for r in rows) == 5 else []

    rows = wait_until(counted, 30, "5 api_request events in VictoriaMetrics")
    assert {(r["metric"]["user"], r["metric"]["machine"], r["metric"]["model"]) for r in rows} == {
        ("carol", "m-carol", SONNET)
    }


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_wrong_token_is_refused_in_one_line_and_logged_without_the_token(team: Team, protocol: str):
    dave = dataclasses.replace(team.machines["m-dave"], protocol=protocol)
    r = sync(dave, team)
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, r.stderr
    assert "refused the credentials" in warnings[0] and "401" in warnings[0]
    assert WRONG not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    logs = team.collector_logs()
    refusals = [line for line in logs.splitlines() if "team OTLP request refused" in line]
    assert refusals, logs[-2000:]
    assert all('"peer": "127.0.0.1' in line for line in refusals)
    assert WRONG not in logs
    for token in TOKENS.values():
        assert token not in logs
    assert "dave" not in team.by_user("claude_code_token_usage_tokens_total")
    assert team.by_user("claude_code_token_usage_tokens_total").keys() == {"alice", "bob", "carol"}


def test_tokens_file_change_admits_a_new_user_without_restart(team: Team):
    dave = team.machines["m-dave"]
    with team.tokens_file.open("a") as fh:
        fh.write(f"dave:{WRONG}\n")
    future = time.time() + 2
    os.utime(team.tokens_file, (future, future))
    wait_until(lambda: "team tokens reloaded" in team.collector_logs(), 15, "the tokens file reload")
    r = sync(dave, team)
    assert "warning" not in r.stderr, r.stderr
    want, _ = _expected(team, ["m-dave"])
    wait_until(
        lambda: team.by_user("claude_code_token_usage_tokens_total").get("dave") == want["dave"],
        30,
        "dave's totals after the reload",
    )
    # Revoke again for the other tests: dave back to refused.
    team.tokens_file.write_text("".join(f"{u}:{t}\n" for u, t in TOKENS.items()))
    later = time.time() + 4
    os.utime(team.tokens_file, (later, later))
    wait_until(lambda: team.collector_logs().count("team tokens reloaded") >= 2, 15, "the second reload")


def test_machine_offline_then_back_sends_exact_totals_never_twice(team: Team):
    alice = team.machines["m-alice"]
    team.collector.stop()  # the central side away (or the laptop offline)
    # Hours of work offline: a new session on alice's machine.
    more = _sessions("m-alice-2", 9, 5, OPUS)
    write_claude_home(alice.home, more, time.time() - 600)
    r = sync(alice, team)
    assert [line for line in r.stderr.splitlines() if "warning" in line], "no warning while the collector was down"
    before, _ = _expected(team, GOOD)
    assert team.by_user("claude_code_token_usage_tokens_total")["alice"] < before["alice"]

    team.start_collector()
    for _ in range(2):  # back online, then one more export of the same totals: nothing adds twice
        for name in GOOD:
            sync(team.machines[name], team)
        _assert_exact(team)


def _set_tokens(team: Team, text: str) -> None:
    """Rewrite the central tokens file and wait for the collector to reload it."""
    reloads = team.collector_logs().count("team tokens reloaded")
    team.tokens_file.write_text(text)
    later = time.time() + 2 + reloads  # a new mtime even within the file system's time granularity
    os.utime(team.tokens_file, (later, later))
    wait_until(lambda: team.collector_logs().count("team tokens reloaded") > reloads, 15, "the tokens file reload")


def test_rotated_token_file_keeps_a_running_bridge_exporting_without_restart(team: Team):
    from tests._otlp_sink import Daemon

    old, new = "erin-1a2b3c4d5e6f7a8b9c0d", "erin-9f8e7d6c5b4a3f2e1d0c"
    others = "".join(f"{u}:{t}\n" for u, t in TOKENS.items())
    _set_tokens(team, others + f"erin:{old}\n")
    root = team.work / "m-erin"
    home = write_claude_home(root / "claude", _sessions("m-erin", 5, 2, SONNET), time.time() - 3000)
    erin = team.machines["m-erin"] = Machine("m-erin", "erin", "erin", old, "grpc", home, root / "state")
    token_file = root / "team-token"
    token_file.write_text(old + "\n")
    env = _env(erin, team)
    del env["OTEL_EXPORTER_OTLP_HEADERS"]  # the token comes from the file only
    env.update(
        {
            "TOKENBRIDGE_TEAM_TOKEN_FILE": str(token_file),
            "TOKENBRIDGE_EXPORT_INTERVAL": "0.5",
            "TOKENBRIDGE_EVENTS_PORT": "0",
            "TOKENBRIDGE_PRICES_REFRESH": "0",
        }
    )

    def erin_total() -> float | None:
        return team.by_user("claude_code_token_usage_tokens_total").get("erin")

    def exact(what: str) -> None:
        want, _ = _expected(team, ["m-erin"])
        wait_until(lambda: erin_total() == want["erin"], 30, what)

    daemon = Daemon(env)
    try:
        daemon.wait_ready(60)
        exact("erin's totals with the first token")
        pid = daemon.proc.pid

        # The server rotates first: the running bridge's old token is refused, and it says so.
        before = erin_total()
        _set_tokens(team, others + f"erin:{new}\n")
        write_claude_home(home, _sessions("m-erin-2", 6, 3, OPUS), time.time() - 1200)
        wait_until(lambda: _expected(team, ["m-erin"])[0]["erin"] > before, 30, "the new session in erin's ledger")
        refusals = daemon.stderr().count("refused the credentials")
        wait_until(lambda: daemon.stderr().count("refused the credentials") > refusals, 30, "a refused export")
        assert str(token_file) in daemon.stderr()
        assert erin_total() == before  # the new usage waits in the ledger

        # Then the agent's token file: the same process carries on with the new token, totals exact.
        token_file.write_text(new + "\n")
        exact("erin's totals after the rotation")
        write_claude_home(home, _sessions("m-erin-3", 7, 2, SONNET), time.time() - 600)
        exact("erin's totals with more usage on the new token")
        assert daemon.proc.pid == pid and daemon.proc.poll() is None
        assert "changed: exporting with the new token" in daemon.stderr()
    finally:
        daemon.stop()
        daemon.close()
    assert old not in daemon.stderr() and new not in daemon.stderr()
    assert old not in team.collector_logs() and new not in team.collector_logs()

    # The old token is refused from now on (a one-shot export with it in the header).
    r = sync(dataclasses.replace(erin, token=old), team)
    assert [line for line in r.stderr.splitlines() if "refused the credentials" in line], r.stderr
    assert old not in r.stdout + r.stderr
    _set_tokens(team, others)
