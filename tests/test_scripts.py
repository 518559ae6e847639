"""The management and build scripts: shell hygiene, cached builds, and native mode end to end
(start -> status -> metrics -> logs -> stop) with the real collector, Prometheus and bridge on free ports."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests._stack import (
    IN_CI,
    REPO,
    alertmanager_bin,
    compose,
    free_port,
    gone,
    http_get,
    native_ports,
    otelcol_bin,
    prometheus_bin,
    wait_until,
    write_claude_home,
)

SCRIPTS = sorted([*(REPO / "scripts").glob("*.sh"), REPO / "start.sh", REPO / "view.sh"])
USER_SCRIPTS = ["init", "start", "stop", "view", "status", "logs", "metrics"]


def test_every_user_script_exists_and_is_executable():
    for name in USER_SCRIPTS:
        p = REPO / "scripts" / f"{name}.sh"
        assert p.is_file() and os.access(p, os.X_OK), p
    for p in SCRIPTS:
        if p.name != "_lib.sh":
            assert os.access(p, os.X_OK), p


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_strict_mode_and_syntax(path):
    text = path.read_text()
    if path.name != "_lib.sh":
        assert text.startswith("#!/usr/bin/env bash\n"), path
        assert "\nset -euo pipefail\n" in text, path
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_clean():
    sc = shutil.which("shellcheck")
    if sc is None:
        if IN_CI:
            pytest.fail("shellcheck is not installed (apt-get install -y shellcheck)")
        pytest.skip("shellcheck not installed (never skipped in CI)")
    files = [str(p) for p in SCRIPTS] + [
        str(REPO / f) for f in ("telemetry.sh", "telemetry-grpc.sh", "shell/tokenbridge.sh")
    ]
    proc = subprocess.run([sc, "-x", "-s", "bash", *files], capture_output=True, text=True, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout


def test_native_prometheus_flags_match_compose():
    proc = subprocess.run(
        ["bash", "-c", f"source {REPO / 'scripts/_lib.sh'}; tb_prometheus_flags"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PROMETHEUS_RETENTION": "90d"},
    )
    native = proc.stdout.split()
    shipped = [
        re.sub(r"\$\{PROMETHEUS_RETENTION:-([^}]*)\}", r"\1", a)
        for a in compose()["services"]["prometheus"]["command"]
        if not a.startswith(("--config.file", "--storage.tsdb.path"))
    ]
    assert native == shipped


def _build(script: str, env: dict[str, str] | None = None) -> tuple[str, float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "scripts" / script)],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1], time.monotonic() - t0, proc.stderr


def test_build_collector_is_cached_by_version_and_manifest_hash():
    if os.environ.get("TOKENBRIDGE_OTELCOL_BIN") is None:
        otelcol_bin()  # first build (or cache hit) through the same path the other tests use
    path, secs, log = _build("build-collector.sh")
    digest = hashlib.sha256((REPO / "otelcol-builder.yaml").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("TOKENBRIDGE_CACHE_DIR", Path.home() / ".cache/tokenbridge"))
    assert path == str(cache / "bin" / f"otelcol-0.159.0-{digest}" / "otelcol-tokenbridge")
    assert "cached" in log and secs < 10
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    assert "0.159.0" in out
    comps = subprocess.run([path, "components"], capture_output=True, text=True, check=True).stdout
    for c in ("otlp", "prometheus", "prometheus_remote_write", "delta_to_cumulative", "transform", "health_check"):
        assert re.search(rf"\b{c}\b", comps), c


def _otelcol_key(manifest: Path) -> str:
    proc = subprocess.run(
        ["bash", "-c", f'source {REPO / "scripts/_lib.sh"}; tb_otelcol_key "$1"', "key", str(manifest)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_team_collector_cache_key_covers_the_local_teamauth_source(tmp_path):
    # A manifest without local modules keeps its old key: the sha of the manifest alone.
    personal = REPO / "otelcol-builder.yaml"
    assert _otelcol_key(personal) == hashlib.sha256(personal.read_bytes()).hexdigest()[:12]
    shutil.copy(REPO / "otelcol-team-builder.yaml", tmp_path)
    shutil.copytree(REPO / "collector", tmp_path / "collector")
    manifest = tmp_path / "otelcol-team-builder.yaml"
    key = _otelcol_key(manifest)
    assert key == _otelcol_key(REPO / "otelcol-team-builder.yaml")  # location-independent
    test_file = tmp_path / "collector/teamauth/extension_test.go"
    test_file.write_text(test_file.read_text() + "\n// a test-only edit\n")
    assert _otelcol_key(manifest) == key  # tests are not built into the binary
    src = tmp_path / "collector/teamauth/tokens.go"
    src.write_text(src.read_text().replace("minTokenLen = 16", "minTokenLen = 20"))
    assert _otelcol_key(manifest) != key  # an edit of the extension rebuilds the collector
    shutil.rmtree(tmp_path / "collector")
    proc = subprocess.run(
        ["bash", "-c", f'source {REPO / "scripts/_lib.sh"}; tb_otelcol_key "$1"', "key", str(manifest)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "local module" in proc.stderr and "not found" in proc.stderr


def test_team_collector_is_cached_and_has_teamauth():
    from tests._stack import team_otelcol_bin

    if os.environ.get("TOKENBRIDGE_TEAM_OTELCOL_BIN") is None:
        team_otelcol_bin()
    path, secs, log = _build(
        "build-collector.sh", {"TOKENBRIDGE_OTELCOL_MANIFEST": str(REPO / "otelcol-team-builder.yaml")}
    )
    key = _otelcol_key(REPO / "otelcol-team-builder.yaml")
    assert path.endswith(f"/otelcol-0.159.0-{key}/otelcol-tokenbridge-team")
    assert "cached" in log and secs < 10
    comps = subprocess.run([path, "components"], capture_output=True, text=True, check=True).stdout
    for c in ("teamauth", "otlp", "prometheus_remote_write", "resource", "transform", "signal_to_metrics"):
        assert re.search(rf"\b{c}\b", comps), c


def test_build_prometheus_is_cached_and_is_the_pinned_release():
    if os.environ.get("TOKENBRIDGE_PROMETHEUS_BIN") is None:
        prometheus_bin()
    path, secs, log = _build("build-prometheus.sh")
    assert "cached" in log and secs < 10
    assert re.search(r"/bin/prometheus-3\.14\.0-[0-9a-f]{12}/prometheus$", path)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    assert "prometheus, version 3.14.0" in out
    assert Path(path).with_name("promtool").is_file()


def _path_without_go(tmp_path: Path) -> str:
    """A PATH with only the basic tools the scripts use (so Go is missing even where it is in /usr/bin)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in (
        "bash",
        "env",
        "dirname",
        "sed",
        "head",
        "tail",
        "sha256sum",
        "cut",
        "mktemp",
        "cp",
        "chmod",
        "rm",
        "mv",
        "mkdir",
        "cat",
        "tr",
        "grep",
        "printf",
        "sleep",
        "id",
        "od",
        "hostname",
        "seq",
        "python3",
        "uname",
        "curl",
        "tar",
        "gzip",
    ):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    assert not (bindir / "go").exists()
    return str(bindir)


def test_build_script_errors_name_the_missing_thing(tmp_path):
    env = {"PATH": _path_without_go(tmp_path), "HOME": str(tmp_path), "TOKENBRIDGE_CACHE_DIR": str(tmp_path / "c")}
    for script in ("build-collector.sh", "build-prometheus.sh"):
        proc = subprocess.run([str(REPO / "scripts" / script)], capture_output=True, text=True, env=env)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith("error: go not found on PATH; install Go")
    proc = subprocess.run(
        [str(REPO / "scripts/build-prometheus.sh")],
        capture_output=True,
        text=True,
        env={**env, "TOKENBRIDGE_PROMETHEUS_VERSION": "2.42.0"},
    )
    assert "unsupported Prometheus version '2.42.0'" in proc.stderr


# ------------------------------------------------------------------ native mode


@pytest.fixture
def native(tmp_path):
    ports = native_ports("EVENTS_PORT")
    home = write_claude_home(
        tmp_path / "claude",
        {
            "3b9e0c3a-1d2f-4c55-9a0e-7f1b2c3d4e5f": {
                "model": "claude-sonnet-4-5-20250929",
                "requests": [{"input": 4, "output": 187, "cacheRead": 48000, "cacheCreation": 1200}],
            }
        },
        time.time() - 300,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_CODE_", "GRAFANA_"))}
    env.update(ports)
    # The bridge must be importable by the scripts (python -m bridge.cli) or installed as `tokenbridge`.
    env.update(
        {
            "TOKENBRIDGE_NATIVE_DIR": str(tmp_path / "native"),
            "TOKENBRIDGE_MODE": "native",
            "TOKENBRIDGE_OTELCOL_BIN": otelcol_bin(),
            "TOKENBRIDGE_PROMETHEUS_BIN": prometheus_bin(),
            "TOKENBRIDGE_ALERTMANAGER_BIN": alertmanager_bin(),
            "CLAUDE_CONFIG_DIR": str(home),
            "TOKENBRIDGE_STATE_DIR": str(tmp_path / "ledger"),
            "TOKENBRIDGE_EXPORT_INTERVAL": "1",
            "TOKENBRIDGE_NO_BROWSER": "1",
            "TOKENBRIDGE_INSTANCE_ID": "tokenbridge@e2e-host",
            "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
        }
    )

    def run(*argv: str, extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**env, **(extra or {})},
            cwd=str(tmp_path),
        )

    run.env = env
    run.ports = ports
    yield run
    run(REPO / "scripts/stop.sh", "--native")


def test_native_mode_lifecycle(native):
    p = native.ports
    start = native(REPO / "start.sh")
    assert start.returncode == 0, start.stdout + start.stderr
    out = start.stdout
    assert "tokenbridge native mode" in out
    for name in ("otel-collector", "prometheus", "alertmanager", "tokenbridge"):
        assert re.search(rf"  {name} started \(pid \d+, log ", out), name
    # It says exactly what is missing and how to get it.
    assert "Missing:" in out and "Grafana: no Docker engine and no local Grafana" in out
    assert "scripts/get-grafana.sh" in out and "GRAFANA_HOME" in out
    # It says how long the first numbers take.
    assert "First data: the bridge's scan of your history shows in the web view" in out
    assert "in Prometheus/Grafana about 1-2 minutes after the start" in out
    assert f"http://127.0.0.1:{p['PROMETHEUS_PORT']}" in out
    assert f"Web view    http://127.0.0.1:{p['WEB_PORT']}" in out

    # Claude Code's events for the bridge queue on disk under the native dir (file_storage/events), not in memory.
    queue = Path(native.env["TOKENBRIDGE_NATIVE_DIR"]) / "otelcol-queue"
    wait_until(lambda: any("tokenbridge" in f.name for f in queue.iterdir()), 30, "the collector's events queue file")

    # A second start does not start duplicates.
    again = native(REPO / "start.sh")
    assert again.returncode == 0 and "already running" in again.stdout and " started (pid" not in again.stdout

    prom = f"http://127.0.0.1:{p['PROMETHEUS_PORT']}"

    def has_bridge_series() -> bool:
        code, body = http_get(
            f"{prom}/api/v1/query?query=count(claude_code_token_usage_tokens_total%7Bsource%3D%22claude_transcripts%22%7D)"
        )
        return code == 200 and b'"4"' in body

    wait_until(has_bridge_series, 60, "the bridge's series in Prometheus (native mode)")
    # Prometheus sends its alerts to the native Alertmanager.
    code, body = http_get(f"{prom}/api/v1/alertmanagers")
    assert code == 200 and f"127.0.0.1:{p['ALERTMANAGER_PORT']}" in body.decode()
    status = native(REPO / "scripts/status.sh")
    assert f"ok    alertmanager (http://127.0.0.1:{p['ALERTMANAGER_PORT']})" in status.stdout, status.stdout
    code, body = http_get(f"{prom}/api/v1/label/instance/values?match[]=claude_code_token_usage_tokens_total")
    assert code == 200 and json.loads(body)["data"] == ["tokenbridge@e2e-host"]

    # status: services ok, telemetry variables missing in this shell -> exit 1 naming them.
    st = native(REPO / "scripts/status.sh")
    assert st.returncode == 1
    assert "ok    collector health_check" in st.stdout and "ok    prometheus" in st.stdout
    assert re.search(r"ok    tokenbridge run \(pid \d+\)", st.stdout)
    assert "warn  grafana not running" in st.stdout
    assert "FAIL  CLAUDE_CODE_ENABLE_TELEMETRY is not 1" in st.stdout
    assert "ok    claude_transcripts: 5 series" in st.stdout
    # ... and with telemetry.sh sourced in the same shell, all good.
    st = native("bash", "-c", f"source {REPO / 'telemetry.sh'} >/dev/null && exec {REPO / 'scripts/status.sh'}")
    assert st.returncode == 0, st.stdout
    assert f"ok    endpoint http://127.0.0.1:{p['OTLP_HTTP_PORT']}" in st.stdout
    # A wrong protocol value is called out.
    st = native(
        REPO / "scripts/status.sh",
        extra={
            "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        },
    )
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http is not a valid value: use http/protobuf" in st.stdout

    # The collector's own counters arrive with the next scrape of its telemetry endpoint (15 s interval).
    m = wait_until(
        lambda: (
            (r := native(REPO / "scripts/metrics.sh")).returncode == 0
            and re.search(r"received metric points\s+[1-9]", r.stdout)
            and r
        ),
        40,
        "collector counters",
    )
    assert re.search(
        r"claude_code_token_usage_tokens_total\s+claude_transcripts\s+4\s+49391\.0000\s+\d+ s ago", m.stdout
    ), m.stdout
    assert re.search(r"exported metric points\s+[1-9]", m.stdout), m.stdout
    # No export failed yet: the collector has no failure counter, which is 0 for a collector that is up, not n/a.
    assert re.search(r"failed exports \(points\)\s+0\n", m.stdout), m.stdout
    # Several scrapes later, no log repeats a warning or error (e.g. one per scrape).
    for log in (Path(native.env["TOKENBRIDGE_NATIVE_DIR"]) / "logs").glob("*.log"):
        _assert_no_repeated_warnings(log)

    # Restart only the bridge: it must continue its series, not add a second set next to them.
    pidfile = Path(native.env["TOKENBRIDGE_NATIVE_DIR"]) / "run" / "tokenbridge.pid"
    old_pid = int(pidfile.read_text().split()[0])
    os.kill(old_pid, 15)
    # Its last ingest and export may take a while on a loaded machine (CI saw > 15 s).
    wait_until(lambda: gone(old_pid), 40, "the bridge to stop")
    restarted = native(REPO / "start.sh")
    assert re.search(r"  tokenbridge started \(pid \d+", restarted.stdout), restarted.stdout
    assert "otel-collector already running" in restarted.stdout
    t_restart = time.time()

    def scraped_after_restart() -> bool:
        code, body = http_get(f"{prom}/api/v1/query?query=max(timestamp(up%7Bjob%3D%22otel-collector%22%7D))")
        return code == 200 and float(json.loads(body)["data"]["result"][0]["value"][1]) > t_restart + 2

    wait_until(scraped_after_restart, 40, "a scrape after the bridge restart")
    code, body = http_get(f"{prom}/api/v1/query?query=count(claude_code_token_usage_tokens_total)")
    assert json.loads(body)["data"]["result"][0]["value"][1] == "4"

    logs = native(REPO / "scripts/logs.sh", "otel-collector")
    assert logs.returncode == 0 and "Everything is ready" in logs.stdout

    # Without Grafana, view.sh opens the bridge's own page, which shows the same request.
    view = native(REPO / "scripts/view.sh")
    web = f"http://127.0.0.1:{p['WEB_PORT']}"
    assert view.returncode == 0 and view.stdout.strip() == f"{web}/"
    code, body = http_get(f"{web}/api/usage/summary")
    assert code == 200 and json.loads(body)["allTime"]["totalTokens"] == 49391

    stop = native(REPO / "scripts/stop.sh")
    assert stop.returncode == 0
    for name in ("tokenbridge", "prometheus", "alertmanager", "otel-collector"):
        assert f"stopped {name} (pid" in stop.stdout
    assert not _port_open(int(p["PROMETHEUS_PORT"])) and not _port_open(int(p["OTELCOL_HEALTH_PORT"]))
    assert not list((Path(native.env["TOKENBRIDGE_NATIVE_DIR"]) / "run").glob("*.pid"))


def _assert_no_repeated_warnings(log: Path) -> None:
    """A warning or error line (timestamps and ids removed) may appear at most twice in a log."""
    seen: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not re.search(r"\b(warn|warning|error)\b", line, re.I):
            continue
        key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?", "#", re.sub(r"^\S+\s", "", line))
        seen[key] = seen.get(key, 0) + 1
    repeated = {k: n for k, n in seen.items() if n > 2}
    assert not repeated, f"{log.name} repeats: {repeated}"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_native_start_names_what_is_missing(tmp_path):
    env = {
        "PATH": _path_without_go(tmp_path),
        "HOME": str(tmp_path),
        "TOKENBRIDGE_MODE": "native",
        "TOKENBRIDGE_NATIVE_DIR": str(tmp_path / "n"),
        "TOKENBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "TOKENBRIDGE_DOWNLOAD_BASE": f"http://127.0.0.1:{free_port()}",  # nothing listens: no download possible
    }
    proc = subprocess.run([str(REPO / "start.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert (
        "error: cannot get the collector (otelcol-contrib 0.159.0): the official download failed (no network?), "
        "and Go is not installed to build it from source"
    ) in proc.stderr
    proc = subprocess.run(
        [str(REPO / "start.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "TOKENBRIDGE_OTELCOL_BIN": str(tmp_path / "nope")},
    )
    assert f"error: TOKENBRIDGE_OTELCOL_BIN={tmp_path / 'nope'} is not executable" in proc.stderr


def test_init_writes_env_with_a_secret_it_does_not_print(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for f in ("scripts/_lib.sh", "scripts/init.sh", ".env.example"):
        shutil.copy(REPO / f, repo / f)
    env = {"PATH": _path_without_go(tmp_path), "HOME": str(tmp_path), "TOKENBRIDGE_MODE": "native"}
    proc = subprocess.run([str(repo / "scripts/init.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = (repo / ".env").read_text()
    pw = re.search(r"^GRAFANA_ADMIN_PASSWORD=(\w+)$", text, re.M).group(1)
    assert len(pw) >= 24 and pw != "change-me-please"
    assert pw not in proc.stdout + proc.stderr
    assert oct((repo / ".env").stat().st_mode & 0o777) == "0o600"
    assert f"TOKENBRIDGE_UID={os.getuid()}" in text
    assert re.search(r"^TOKENBRIDGE_INSTANCE_ID=tokenbridge@\S+$", text, re.M)
    token = re.findall(r"^TOKENBRIDGE_EVENTS_TOKEN=(.*)$", text, re.M)
    assert len(token) == 1 and re.fullmatch(r"[0-9a-f]{48}", token[0]), token
    assert token[0] not in proc.stdout + proc.stderr
    again = subprocess.run([str(repo / "scripts/init.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert ".env exists; left unchanged" in again.stdout and (repo / ".env").read_text() == text


def test_init_gives_an_existing_env_without_an_events_token_one(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for f in ("scripts/_lib.sh", "scripts/init.sh", ".env.example"):
        shutil.copy(REPO / f, repo / f)
    old = "GRAFANA_ADMIN_PASSWORD=mine-already\n# TOKENBRIDGE_EVENTS_TOKEN=\n"
    (repo / ".env").write_text(old)
    env = {"PATH": _path_without_go(tmp_path), "HOME": str(tmp_path), "TOKENBRIDGE_MODE": "native"}
    proc = subprocess.run([str(repo / "scripts/init.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = (repo / ".env").read_text()
    assert text.startswith(old)  # nothing else touched
    token = re.search(r"^TOKENBRIDGE_EVENTS_TOKEN=([0-9a-f]{48})$", text, re.M).group(1)
    assert "added a random TOKENBRIDGE_EVENTS_TOKEN" in proc.stdout and token not in proc.stdout + proc.stderr
    again = subprocess.run([str(repo / "scripts/init.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert ".env exists; left unchanged" in again.stdout and (repo / ".env").read_text() == text


def test_native_mode_starts_a_local_grafana_with_our_provisioning(native, tmp_path):
    """GRAFANA_HOME=<unpacked Grafana>: start.sh runs `bin/grafana server` with the repo's datasource and dashboards.
    A stand-in binary records what it was given (no Grafana server can be installed here)."""
    gh = tmp_path / "grafana-home"
    (gh / "bin").mkdir(parents=True)
    record = tmp_path / "grafana-invocation.txt"
    fake = gh / "bin" / "grafana"
    fake.write_text(
        f'#!/usr/bin/env bash\n{{ echo "ARGS $*"; env | grep -E "^(GF_|TOKENBRIDGE_GRAFANA)"; }} > {record}\n'
        'exec -a "$0" sleep 300\n'
    )
    fake.chmod(0o755)
    # .env.example's placeholder password is refused like an empty one: Grafana stays off, the rest runs.
    placeholder = native(
        REPO / "start.sh", "--no-bridge", extra={"GRAFANA_HOME": str(gh), "GRAFANA_ADMIN_PASSWORD": "change-me-please"}
    )
    assert placeholder.returncode == 0, placeholder.stderr
    assert f"Grafana (found at {gh}) not started: GRAFANA_ADMIN_PASSWORD is still the placeholder" in placeholder.stdout
    assert " grafana started" not in placeholder.stdout and not record.exists()
    assert native(REPO / "scripts/stop.sh").returncode == 0
    secret = "s3cret-grafana-pw-123456"
    start = native(REPO / "start.sh", "--no-bridge", extra={"GRAFANA_HOME": str(gh), "GRAFANA_ADMIN_PASSWORD": secret})
    assert start.returncode == 0, start.stdout + start.stderr
    assert re.search(r"  grafana started \(pid \d+", start.stdout)
    assert "Missing:" not in start.stdout and secret not in start.stdout + start.stderr
    assert f"Grafana     http://127.0.0.1:{native.ports['GRAFANA_PORT']}" in start.stdout
    wait_until(record.exists, 10, "the Grafana stand-in to start")
    wait_until(lambda: "GF_PATHS_PROVISIONING" in record.read_text(), 10, "its environment")
    got = dict(line.split("=", 1) for line in record.read_text().splitlines()[1:])
    assert record.read_text().splitlines()[0] == f"ARGS server --homepath {gh}"
    assert got["TOKENBRIDGE_GRAFANA_PROMETHEUS_URL"] == f"http://127.0.0.1:{native.ports['PROMETHEUS_PORT']}"
    assert got["GF_SERVER_HTTP_PORT"] == native.ports["GRAFANA_PORT"] and got["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert got["GF_SECURITY_ADMIN_PASSWORD"] == secret
    prov = Path(got["GF_PATHS_PROVISIONING"])
    ds = yaml.safe_load((prov / "datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["uid"] == "tokenbridge-prometheus"
    dash = yaml.safe_load((prov / "dashboards/tokenbridge.yml").read_text())["providers"][0]
    assert Path(dash["options"]["path"]) == REPO / "grafana/dashboards"
    stop = native(REPO / "scripts/stop.sh")
    assert "stopped grafana (pid" in stop.stdout


def test_view_opens_grafana_when_it_answers_else_the_bridge_page(tmp_path):
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    grafana, web = (str(s.server_address[1]) for s in servers)
    env = {**os.environ, "TOKENBRIDGE_NO_BROWSER": "1", "GRAFANA_PORT": grafana, "WEB_PORT": web, "HOME": str(tmp_path)}
    try:
        view = subprocess.run([str(REPO / "view.sh")], capture_output=True, text=True, env=env, timeout=30)
        assert view.stdout.strip() == f"http://127.0.0.1:{grafana}/d/tokenbridge-overview"
        servers[0].shutdown()
        servers[0].server_close()
        view = subprocess.run([str(REPO / "view.sh")], capture_output=True, text=True, env=env, timeout=30)
        assert view.stdout.strip() == f"http://127.0.0.1:{web}/"
    finally:
        servers[1].shutdown()
        servers[1].server_close()
