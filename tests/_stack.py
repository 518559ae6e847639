"""Helpers for the stack tests: find or build the real collector and Prometheus, run them on loopback with free
ports from the repo's own configuration files, send Claude-Code-shaped OTLP, and query Prometheus.

Binaries: env TOKENBRIDGE_OTELCOL_BIN / TOKENBRIDGE_PROMETHEUS_BIN, else scripts/build-collector.sh /
scripts/build-prometheus.sh (cached under ~/.cache/tokenbridge/bin). Outside CI a missing Go toolchain skips the
stack tests; with CI=true nothing skips, a failing build fails the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# ------------------------------------------------------------------ binaries

_BIN_CACHE: dict[str, str] = {}


def _binary(env_var: str, script: str, script_env: dict[str, str] | None = None) -> str:
    if env_var in _BIN_CACHE:
        return _BIN_CACHE[env_var]
    path = os.environ.get(env_var)
    if path:
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"{env_var}={path} is not an executable file")
    else:
        if shutil.which("go") is None and not IN_CI:
            pytest.skip(f"{env_var} unset and Go missing: cannot build it (never skipped in CI)")
        proc = subprocess.run(
            [str(REPO / "scripts" / script)],
            capture_output=True,
            text=True,
            timeout=3600,
            env={**os.environ, **(script_env or {})},
        )
        if proc.returncode != 0:
            pytest.fail(f"scripts/{script} failed:\n{proc.stderr[-4000:]}")
        path = proc.stdout.strip().splitlines()[-1]
    _BIN_CACHE[env_var] = path
    return path


def otelcol_bin() -> str:
    return _binary("TOKENBRIDGE_OTELCOL_BIN", "build-collector.sh")


def prometheus_bin() -> str:
    return _binary("TOKENBRIDGE_PROMETHEUS_BIN", "build-prometheus.sh")


def alertmanager_bin() -> str:
    return _binary("TOKENBRIDGE_ALERTMANAGER_BIN", "build-alertmanager.sh")


def team_otelcol_bin() -> str:
    """The team collector (otelcol-team-builder.yaml: the personal one plus collector/teamauth)."""
    manifest = str(REPO / "otelcol-team-builder.yaml")
    return _binary("TOKENBRIDGE_TEAM_OTELCOL_BIN", "build-collector.sh", {"TOKENBRIDGE_OTELCOL_MANIFEST": manifest})


def victoriametrics_bin() -> str:
    return _binary("TOKENBRIDGE_VICTORIAMETRICS_BIN", "build-victoriametrics.sh")


def promtool_bin() -> str:
    return str(Path(prometheus_bin()).with_name("promtool"))


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# The native stack's port variables (scripts/_lib.sh tb_defaults): a test gives each a free port.
NATIVE_PORTS = (
    "OTLP_GRPC_PORT",
    "OTLP_HTTP_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "OTELCOL_PROM_PORT",
    "OTELCOL_HEALTH_PORT",
    "OTELCOL_METRICS_PORT",
    "ALERTMANAGER_PORT",
    "WEB_PORT",
)


def native_ports(*extra: str) -> dict[str, str]:
    """A free loopback port for each native-stack port variable (and ``extra`` ones)."""
    return {k: str(free_port()) for k in (*NATIVE_PORTS, *extra)}


def gone(pid: int) -> bool:
    """The process has exited: no /proc entry, or a zombie not reaped yet (its parent may be init, which reaps on
    its own schedule; a zombie runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until(pred, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("wb")
    p = subprocess.Popen(
        argv, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=str(cwd) if cwd else None
    )
    fh.close()
    return Proc(name, p, log)


# ------------------------------------------------------------------ collector


@dataclass
class Collector:
    proc: Proc
    grpc: int
    http: int
    prom: int
    health: int
    telemetry: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.prom}/metrics"

    def scrape_text(self) -> str:
        code, body = http_get(self.metrics_url)
        assert code == 200, f"collector /metrics answered {code}"
        return body.decode()


def collector_env(grpc: int, http: int, prom: int, health: int, telemetry: int) -> dict[str, str]:
    return {
        "OTELCOL_GRPC_ENDPOINT": f"127.0.0.1:{grpc}",
        "OTELCOL_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{prom}",
        "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(telemetry),
        "OTELCOL_BATCH_TIMEOUT": "200ms",
    }


def start_collector(
    workdir: Path, extra_env: dict[str, str] | None = None, name: str = "otelcol", args: list[str] | None = None
) -> Collector:
    ports = [free_port() for _ in range(5)]
    # The events' persistent queue (file_storage/events) per test, never the Docker default path on this machine.
    queue = {"TOKENBRIDGE_EVENTS_QUEUE_DIR": str(workdir / f"{name}-queue")}
    env = {**collector_env(*ports), **queue, **(extra_env or {})}
    proc = spawn(
        name,
        [otelcol_bin(), f"--config={REPO / 'otel-collector-config.yml'}", *(args or [])],
        workdir / f"{name}.log",
        env=env,
    )
    col = Collector(proc, *ports)
    try:
        wait_until(
            lambda: proc.alive() and http_get(f"http://127.0.0.1:{col.health}/")[0] == 200, 60, "collector health_check"
        )
    except AssertionError:
        proc.stop()
        raise AssertionError(f"collector did not become healthy:\n{proc.tail()}") from None
    return col


# ------------------------------------------------------------------ prometheus


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _expand_compose_vars(s: str) -> str:
    # ${VAR:-default} -> default (the shipped defaults)
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", s)


def prometheus_flags_from_compose() -> list[str]:
    """The Prometheus command-line flags the compose file ships, minus paths/addresses the test must set."""
    cmd = compose()["services"]["prometheus"]["command"]
    drop = ("--config.file", "--storage.tsdb.path", "--web.listen-address", "--web.console")
    return [_expand_compose_vars(a) for a in cmd if not a.startswith(drop)]


def rewrite_prometheus_config(dest_dir: Path, targets: dict[str, str]) -> Path:
    """Copy prometheus.yml (and its rule files) to dest_dir, rewriting only the scrape targets."""
    text = (REPO / "prometheus.yml").read_text()
    for old, new in targets.items():
        needle = f'"{old}"'
        assert text.count(needle) == 1, f"target {old} not found exactly once in prometheus.yml"
        text = text.replace(needle, f'"{new}"')
    dest_dir.mkdir(parents=True, exist_ok=True)
    cfg = dest_dir / "prometheus.yml"
    cfg.write_text(text)
    shutil.copytree(REPO / "prometheus", dest_dir / "prometheus", dirs_exist_ok=True)
    return cfg


@dataclass
class Prometheus:
    proc: Proc
    port: int
    data: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, params: dict | None = None) -> dict:
        q = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        code, body = http_get(f"{self.url}{path}{q}", timeout=30)
        data = json.loads(body)
        if code != 200 or data.get("status") != "success":
            raise PromQLError(f"{path} {params} -> HTTP {code}: {data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api(
            "/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        )["result"]

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        res = self.query(expr, at)
        if not res:
            return None
        assert len(res) == 1, f"{expr} returned {len(res)} series, expected one: {res}"
        return float(res[0]["value"][1])

    def by(self, expr: str, label: str, at: float | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.query(expr, at):
            key = r["metric"].get(label, "")
            assert key not in out, f"duplicate {label}={key} in {expr}"
            out[key] = float(r["value"][1])
        return out


class PromQLError(AssertionError):
    pass


def start_prometheus(
    workdir: Path, targets: dict[str, str], extra_flags: list[str] | None = None, name: str = "prometheus"
) -> Prometheus:
    port = free_port()
    targets = {**targets, "localhost:9090": f"127.0.0.1:{port}"}
    cfg = rewrite_prometheus_config(workdir / f"{name}-config", targets)
    data = workdir / f"{name}-data"
    argv = [
        prometheus_bin(),
        f"--config.file={cfg}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        *prometheus_flags_from_compose(),
        *(extra_flags or []),
    ]
    proc = spawn(name, argv, workdir / f"{name}.log")
    prom = Prometheus(proc, port, data)
    try:
        wait_until(lambda: proc.alive() and http_get(f"{prom.url}/-/ready")[0] == 200, 60, "Prometheus ready")
    except AssertionError:
        proc.stop()
        raise AssertionError(f"Prometheus did not become ready:\n{proc.tail()}") from None
    return prom


def last_scrape_time(prom: Prometheus, job: str = "otel-collector") -> float:
    """Timestamp of the newest scrape of `job` (all series of one scrape share it)."""
    res = prom.query(f'timestamp(up{{job="{job}"}})')
    assert res, f"no up series for job {job}"
    return float(res[0]["value"][1])


def wait_for_scrapes(
    prom: Prometheus, n: int = 1, job: str = "otel-collector", after: float | None = None, timeout: float = 60
) -> float:
    """Wait until `n` scrapes of `job` happened after `after` (default: now); return the newest scrape time."""
    after = time.time() if after is None else after
    seen: list[float] = []

    def ok() -> bool:
        t = last_scrape_time(prom, job)
        if t > after and t not in seen:
            seen.append(t)
        return len(seen) >= n

    wait_until(ok, timeout, f"{n} scrape(s) of {job}", interval=0.5)
    return max(seen)


# ------------------------------------------------------------------ grafana dashboards


# Claude Code's eight native metrics as the collector exposes them (native-telemetry.md §2.2).
NATIVE_SERIES = (
    "claude_code_session_count_total",
    "claude_code_token_usage_tokens_total",
    "claude_code_cost_usage_USD_total",
    "claude_code_lines_of_code_count_total",
    "claude_code_pull_request_count_total",
    "claude_code_commit_count_total",
    "claude_code_code_edit_tool_decision_total",
    "claude_code_active_time_seconds_total",
)


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((REPO / "grafana" / "dashboards").glob("*.json"))}


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def expand(expr: str, variables: dict[str, str], range_s: int, interval_s: int, rate_interval_s: int) -> str:
    """Substitute Grafana's macros and the dashboard variables the way Grafana does for Prometheus."""
    out = expr
    for name, value in variables.items():
        out = out.replace(f"${{{name}}}", value).replace(f"${name}", value)
    out = (
        out.replace("$__rate_interval", f"{rate_interval_s}s")
        .replace("$__range_s", str(range_s))
        .replace("$__range", f"{range_s}s")
        .replace("$__interval_ms", str(interval_s * 1000))
        .replace("$__interval", f"{interval_s}s")
    )
    assert "$" not in out, f"unexpanded variable in {out}"
    return out


@contextlib.contextmanager
def running(*procs: Proc):
    try:
        yield
    finally:
        for p in procs:
            p.stop()


# ------------------------------------------------------------------ Claude-Code-shaped OTLP


class ClaudeCodeSim:
    """Emits metrics the way Claude Code does (native-telemetry.md §1.2-1.4): resource service.name=claude-code,
    meter com.anthropic.claude_code, the eight counters with their units and attributes, DELTA temporality.
    Each `export()` is one export interval (force_flush); values added between flushes form one delta point."""

    def __init__(
        self,
        endpoint: str,
        protocol: str,
        session_id: str,
        *,
        service_name: str = "claude-code",
        user_id: str = "u-1234",
        version: str = "2.1.240",
        temporality: str = "delta",
    ):
        from opentelemetry.sdk.metrics import Counter, MeterProvider
        from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(
                endpoint=endpoint,
                insecure=True,
                preferred_temporality={
                    Counter: AggregationTemporality.DELTA
                    if temporality == "delta"
                    else AggregationTemporality.CUMULATIVE
                },
            )
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(
                endpoint=f"{endpoint.rstrip('/')}/v1/metrics",
                preferred_temporality={
                    Counter: AggregationTemporality.DELTA
                    if temporality == "delta"
                    else AggregationTemporality.CUMULATIVE
                },
            )
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        resource = Resource.create(
            {
                "service.name": service_name,
                "service.version": version,
                "os.type": "linux",
                "os.version": "6.8.0",
                "host.arch": "amd64",
            }
        )
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        m = self.provider.get_meter("com.anthropic.claude_code", version)
        self.std = {
            "session.id": session_id,
            "user.id": user_id,
            "organization.id": "org-1",
            "user.account_uuid": "acc-1",
            "terminal.type": "tmux",
        }
        self.session = m.create_counter(
            "claude_code.session.count", unit="", description="Count of CLI sessions started"
        )
        self.lines = m.create_counter(
            "claude_code.lines_of_code.count", unit="", description="Count of lines of code modified"
        )
        self.prs = m.create_counter(
            "claude_code.pull_request.count", unit="", description="Number of pull requests created"
        )
        self.commits = m.create_counter(
            "claude_code.commit.count", unit="", description="Number of git commits created"
        )
        self.cost = m.create_counter(
            "claude_code.cost.usage", unit="USD", description="Cost of the Claude Code session"
        )
        self.tokens = m.create_counter("claude_code.token.usage", unit="tokens", description="Number of tokens used")
        self.edit = m.create_counter(
            "claude_code.code_edit_tool.decision",
            unit="",
            description="Count of code editing tool permission decisions",
        )
        self.active = m.create_counter(
            "claude_code.active_time.total", unit="s", description="Total active time in seconds"
        )

    def start_session(self, start_type: str = "fresh") -> None:
        self.session.add(1, {**self.std, "start_type": start_type})

    def request(
        self,
        model: str,
        cost: float,
        input: int,
        output: int,
        cache_read: int,
        cache_creation: int,
        query_source: str = "main",
    ) -> None:
        extra = {**self.std, "model": model, "query_source": query_source}
        self.cost.add(cost, extra)
        for typ, n in (
            ("input", input),
            ("output", output),
            ("cacheRead", cache_read),
            ("cacheCreation", cache_creation),
        ):
            if n:
                self.tokens.add(n, {**extra, "type": typ})

    def export(self) -> None:
        assert self.provider.force_flush(timeout_millis=10_000), "OTLP export did not complete"

    def shutdown(self) -> None:
        self.provider.shutdown()


# ------------------------------------------------------------------ Claude Code home fixture (local-formats.md §1.3)


def _assistant_line(
    *,
    session: str,
    msg_id: str,
    req_id: str,
    model: str,
    ts: str,
    usage: dict,
    stop: str | None,
    parent: str | None,
    uuid: str,
    cwd: str = "/home/dev/app",
) -> dict:
    u = {
        "input_tokens": usage["input"],
        "cache_creation_input_tokens": usage["cacheCreation"],
        "cache_read_input_tokens": usage["cacheRead"],
        "cache_creation": {"ephemeral_5m_input_tokens": usage["cacheCreation"], "ephemeral_1h_input_tokens": 0},
        "output_tokens": usage["output"],
        "service_tier": "standard",
    }
    return {
        "parentUuid": parent,
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": "2.1.40",
        "gitBranch": "main",
        "message": {
            "model": model,
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": u,
        },
        "requestId": req_id,
        "type": "assistant",
        "uuid": uuid,
        "timestamp": ts,
    }


def write_claude_home(root: Path, sessions: dict[str, dict], when: float) -> Path:
    """Write Claude Code transcripts: sessions = {session_id: {"model": m, "requests": [usage, ...]}} where usage has
    input/output/cacheRead/cacheCreation. Each request is written as streaming lines (the early ones with a partial
    output count, as in local-formats.md example A), so the bridge's dedup (max wins) is exercised."""
    import datetime as _dt
    import uuid as _uuid

    proj = root / "projects" / "-home-dev-app"
    proj.mkdir(parents=True, exist_ok=True)
    t = when
    for sid, spec in sessions.items():
        lines: list[dict] = []
        parent = None
        for i, usage in enumerate(spec["requests"]):
            msg_id = f"msg_01{sid[:8]}{i:04d}AAAAAAAAAA"
            req_id = f"req_011C{sid[:8]}{i:04d}BBBBBBBB"
            partial = {**usage, "output": min(usage["output"], 3)}
            for j, (u, stop) in enumerate(((partial, None), (partial, None), (usage, "end_turn"))):
                t += 0.4
                ts = (
                    _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{int(t * 1000) % 1000:03d}Z"
                )
                uid = str(_uuid.UUID(int=(hash((sid, i, j)) & ((1 << 128) - 1))))
                lines.append(
                    _assistant_line(
                        session=sid,
                        msg_id=msg_id,
                        req_id=req_id,
                        model=spec["model"],
                        ts=ts,
                        usage=u,
                        stop=stop,
                        parent=parent,
                        uuid=uid,
                    )
                )
                parent = uid
        (proj / f"{sid}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root
