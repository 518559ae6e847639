"""docker-compose.yml, the bridge image and the configuration files it mounts, validated without a Docker engine:
structurally with PyYAML, and with the real binaries (`otelcol validate`, `promtool check config`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest
import yaml

from tests._stack import REPO, collector_env, compose, otelcol_bin, promtool_bin

SERVICES = {"otel-collector", "otel-collector-queue", "prometheus", "grafana", "tokenbridge", "alertmanager"}
TEAM_SERVICES = {"team-collector", "victoriametrics", "team-vmalert", "team-grafana"}  # profile `team` (docs/team.md)


def _manifest() -> dict:
    return yaml.safe_load((REPO / "otelcol-builder.yaml").read_text())


def _lib_var(name: str) -> str:
    m = re.search(rf'^{name}="([^"]+)"', (REPO / "scripts/_lib.sh").read_text(), re.M)
    assert m, name
    return m.group(1)


def test_services_and_pinned_images():
    c = compose()
    assert set(c["services"]) == SERVICES | TEAM_SERVICES
    profiled = {n for n, svc in c["services"].items() if "profiles" in svc}
    assert profiled == TEAM_SERVICES  # `docker compose up` alone starts the personal stack only
    assert all(c["services"][n]["profiles"] == ["team"] for n in TEAM_SERVICES)
    images = {n: s.get("image") for n, s in c["services"].items()}
    assert images["otel-collector"] == f"otel/opentelemetry-collector-contrib:{_manifest()['dist']['version']}"
    assert images["prometheus"] == f"prom/prometheus:v{_lib_var('TB_PROMETHEUS_VERSION')}"
    assert images["alertmanager"] == f"prom/alertmanager:v{_lib_var('TB_ALERTMANAGER_VERSION')}"
    assert images["grafana"] == f"grafana/grafana:{_lib_var('TB_GRAFANA_VERSION')}"  # scripts/get-grafana.sh's pin
    assert images["otel-collector-queue"] == images["prometheus"]  # a one-shot chown: no image of its own
    assert c["services"]["tokenbridge"]["build"] == "."
    assert images["victoriametrics"] == f"victoriametrics/victoria-metrics:v{_lib_var('TB_VICTORIAMETRICS_VERSION')}"
    assert images["team-vmalert"] == f"victoriametrics/vmalert:v{_lib_var('TB_VICTORIAMETRICS_VERSION')}"
    assert images["team-grafana"] == images["grafana"]
    assert c["services"]["team-collector"]["build"] == {"context": ".", "dockerfile": "Dockerfile.collector"}
    for img in images.values():
        assert not img.endswith(":latest")


def test_collector_manifest_matches_compose_and_build_script():
    m = _manifest()
    version = m["dist"]["version"]
    assert version == _lib_var("TB_OTELCOL_VERSION") == "0.159.0"
    assert _lib_var("TB_OCB_VERSION") == f"v{version}"
    mods = [e["gomod"] for kind in ("receivers", "processors", "exporters", "extensions") for e in m[kind]]
    for mod in mods:
        assert mod.endswith(f" v{version}"), mod
    for p in m["providers"]:
        assert p["gomod"].endswith(" v1.65.0"), p
    # Every component the config uses is in the manifest.
    cfg = yaml.safe_load((REPO / "otel-collector-config.yml").read_text())
    needed = {
        "otlpreceiver",
        "memorylimiterprocessor",
        "transformprocessor",
        "deltatocumulativeprocessor",
        "batchprocessor",
        "prometheusexporter",
        "prometheusremotewriteexporter",
        "debugexporter",
        "healthcheckextension",
    }
    have = {mod.split()[0].rsplit("/", 1)[1] for mod in mods}
    assert needed <= have
    assert set(cfg["processors"]) == {
        "memory_limiter",
        "transform/claude_code_labels",
        "transform/event_metrics_start",
        "transform/claude_code_events",
        "delta_to_cumulative",
        "batch",
    }


def test_event_connector_is_in_the_manifest_at_the_version_the_proxy_has():
    # The one documented exception to "same version everywhere": the Go module proxy has no v0.159.0 of
    # signaltometricsconnector, so the build pins v0.158.0 (the Docker image ships its own 0.159.0 build).
    m = _manifest()
    connectors = [e["gomod"] for e in m["connectors"]]
    assert connectors == [
        "github.com/open-telemetry/opentelemetry-collector-contrib/connector/signaltometricsconnector v0.158.0"
    ]
    cfg = yaml.safe_load((REPO / "otel-collector-config.yml").read_text())
    assert set(cfg["connectors"]) == {"signal_to_metrics"}
    pipes = cfg["service"]["pipelines"]
    assert "signal_to_metrics" in pipes["logs"]["exporters"]
    assert "signal_to_metrics" in pipes["metrics"]["receivers"]


def test_ports_bound_to_loopback_by_default_and_configurable():
    c = compose()["services"]
    expect = {
        "otel-collector": {
            "${TOKENBRIDGE_BIND:-127.0.0.1}:${OTLP_GRPC_PORT:-14317}:4317",
            "${TOKENBRIDGE_BIND:-127.0.0.1}:${OTLP_HTTP_PORT:-14318}:4318",
            "${TOKENBRIDGE_BIND:-127.0.0.1}:${OTELCOL_HEALTH_PORT:-13133}:13133",
        },
        "prometheus": {"${TOKENBRIDGE_BIND:-127.0.0.1}:${PROMETHEUS_PORT:-9090}:9090"},
        "grafana": {"${TOKENBRIDGE_BIND:-127.0.0.1}:${GRAFANA_PORT:-3000}:3000"},
    }
    for svc, ports in expect.items():
        assert set(c[svc]["ports"]) == ports
    assert "ports" not in c["tokenbridge"]


def test_volumes_retention_healthchecks_and_password():
    c = compose()
    assert set(c["volumes"]) == {
        "otelcol_queue",
        "prometheus_data",
        "grafana_data",
        "tokenbridge_state",
        "alertmanager_data",
        "victoriametrics_data",
        "team_grafana_data",
    }
    s = c["services"]
    assert "prometheus_data:/prometheus" in s["prometheus"]["volumes"]
    assert "grafana_data:/var/lib/grafana" in s["grafana"]["volumes"]
    assert "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-90d}" in s["prometheus"]["command"]
    for svc in ("prometheus", "grafana", "tokenbridge", "alertmanager"):
        assert s[svc]["healthcheck"]["test"][0] == "CMD", svc
    env = s["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "admin" not in env["GF_SECURITY_ADMIN_PASSWORD"].split(":?")[0]


def test_prometheus_flags_enable_the_chosen_delivery_path():
    cmd = compose()["services"]["prometheus"]["command"]
    for flag in (
        "--enable-feature=created-timestamp-zero-ingestion",
        "--enable-feature=promql-extended-range-selectors",
        "--web.enable-otlp-receiver",
        "--web.enable-remote-write-receiver",
        "--config.file=/etc/prometheus/prometheus.yml",
    ):
        assert flag in cmd
    vols = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in vols
    # rule_files are relative to the config file: /etc/prometheus/prometheus/rules/*.yml
    assert "./prometheus/rules:/etc/prometheus/prometheus/rules:ro" in vols


AGENT_DIRS = {  # compose variable -> the directory under HOME each source reads by default
    "CLAUDE_HOME": ".claude",
    "CLAUDE_XDG_DIR": ".config/claude",
    "CODEX_HOST_DIR": ".codex",
    "OPENCLAW_HOST_DIR": ".openclaw",
    "GEMINI_HOST_DIR": ".gemini",
    "OPENCODE_HOST_DIR": ".local/share/opencode",
    "AMP_HOST_DIR": ".local/share/amp",
}


def test_bridge_service_reads_every_agent_dir_read_only_and_keeps_its_ledger():
    s = compose()["services"]["tokenbridge"]
    env = s["environment"]
    assert env["TOKENBRIDGE_STATE_DIR"] == "/var/lib/tokenbridge"
    # The sources' defaults under HOME find the mounts; no explicit CLAUDE_CONFIG_DIR (it makes a missing
    # projects/ an error).
    assert env["HOME"] == "/host-home" and "CLAUDE_CONFIG_DIR" not in env
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=${TOKENBRIDGE_INSTANCE_ID:-tokenbridge}"
    binds = [v for v in s["volumes"] if isinstance(v, dict)]
    assert {b["source"]: b["target"] for b in binds} == {
        f"${{{var}:-${{HOME}}/{rel}}}": f"/host-home/{rel}" for var, rel in AGENT_DIRS.items()
    }
    for b in binds:
        # Read-only, and Docker must never create a missing one (it would be root-owned in the user's home).
        assert b["type"] == "bind" and b["read_only"] is True and b["bind"] == {"create_host_path": False}, b
    assert "tokenbridge_state:/var/lib/tokenbridge" in s["volumes"]
    # The same list start.sh prepares before `docker compose up`.
    lib = (REPO / "scripts/_lib.sh").read_text()
    for var, rel in AGENT_DIRS.items():
        assert f'"{var} {rel}"' in lib, var
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "CLAUDE_CONFIG_DIR" not in dockerfile
    assert dockerfile.startswith("# ") and "\nFROM python:3.11-slim\n" in dockerfile
    assert (
        "RUN pip install ." in dockerfile and 'CMD ["run"]' in dockerfile and 'ENTRYPOINT ["tokenbridge"]' in dockerfile
    )
    assert "TOKENBRIDGE_STATE_DIR=/var/lib/tokenbridge" in dockerfile
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!bridge"]


def test_bind_mount_sources_exist():
    for svc in compose()["services"].values():
        for v in svc.get("volumes", []):
            src = v["source"] if isinstance(v, dict) else v.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), v


def test_bridge_healthcheck_needs_no_projects_folder():
    test = compose()["services"]["tokenbridge"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "os.listdir('/host-home/.claude')" in test[3] and "projects" not in test[3]
    # The check itself passes on a Claude home without projects/ and fails on a missing one.
    with tempfile.TemporaryDirectory() as home:
        os.mkdir(os.path.join(home, ".claude"))
        listdir_only = test[3].split(";")[0] + ";" + test[3].split(";")[1].replace("/host-home", home)
        assert subprocess.run([sys.executable, "-c", listdir_only]).returncode == 0
        os.rmdir(os.path.join(home, ".claude"))
        assert subprocess.run([sys.executable, "-c", listdir_only], capture_output=True).returncode != 0


def test_env_example_covers_compose_variables():
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(?::[-?][^}]*)?\}", text)) - {"HOME"}
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert used <= documented, used - documented
    assert "GRAFANA_ADMIN_PASSWORD=" in example


def test_collector_config_validates_with_the_built_collector():
    cfg = REPO / "otel-collector-config.yml"
    for extra in (
        {},
        {
            "TOKENBRIDGE_METRICS_EXPORTERS": "[prometheus, prometheus_remote_write]",
            "TOKENBRIDGE_REMOTE_WRITE_URL": "https://example.invalid/api/v1/push",
        },
        {"TOKENBRIDGE_LOGS_EXPORTERS": "[debug, signal_to_metrics]"},  # start.sh --no-bridge
    ):
        env = {**collector_env(1, 2, 3, 4, 5), **extra}
        proc = subprocess.run(
            [otelcol_bin(), "validate", f"--config={cfg}"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **env},
        )
        assert proc.returncode == 0, proc.stderr
    # A wrong exporter name is refused (the validation is real).
    proc = subprocess.run(
        [otelcol_bin(), "validate", f"--config={cfg}"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TOKENBRIDGE_METRICS_EXPORTERS": "[nope]"},
    )
    assert proc.returncode != 0


def test_collector_config_choices():
    cfg = yaml.safe_load((REPO / "otel-collector-config.yml").read_text())
    prom = cfg["exporters"]["prometheus"]
    # Idle series stay exposed (not the exporter's 5m default) and delta state lives as long.
    assert prom["metric_expiration"] == "${env:TOKENBRIDGE_SERIES_TTL:-24h}"
    assert cfg["processors"]["delta_to_cumulative"]["max_stale"] == prom["metric_expiration"]
    assert prom["resource_to_telemetry_conversion"] == {"enabled": False}
    stmts = cfg["processors"]["transform/claude_code_labels"]["metric_statements"]
    group, gemini, codex = stmts
    (cond,) = group["conditions"]
    for s in ('"claude-code"', '"claude-code-desktop"', '"claude_code.token.usage"', '"claude_code.cost.usage"'):
        assert s in cond
    assert group["statements"] == [
        'set(datapoint.attributes["provider"], "anthropic")',
        'set(datapoint.attributes["source"], "claude_code_otel")',
    ]
    # Gemini CLI's and Codex's native token metrics get the same two labels (their names are their own).
    for g, name, provider, source in (
        (gemini, "gemini_cli.token.usage", "google", "gemini_cli_otel"),
        (codex, "codex.turn.token_usage", "openai", "codex_otel"),
    ):
        assert g["conditions"] == [f'metric.name == "{name}"']
        assert g["statements"] == [
            f'set(datapoint.attributes["provider"], "{provider}")',
            f'set(datapoint.attributes["source"], "{source}")',
        ]
    pipe = cfg["service"]["pipelines"]["metrics"]
    assert pipe["exporters"] == "${env:TOKENBRIDGE_METRICS_EXPORTERS:-[prometheus]}"
    assert pipe["processors"].index("delta_to_cumulative") < pipe["processors"].index("batch")
    logs = cfg["service"]["pipelines"]["logs"]
    # Claude Code's events also go to the bridge's receiver (docs/events.md), as compressed protobuf.
    assert logs["exporters"] == "${env:TOKENBRIDGE_LOGS_EXPORTERS:-[debug, signal_to_metrics, otlphttp/tokenbridge]}"
    to_bridge = cfg["exporters"]["otlphttp/tokenbridge"]
    assert to_bridge["endpoint"] == "${env:TOKENBRIDGE_EVENTS_ENDPOINT:-http://tokenbridge:14319}"
    services = compose()["services"]
    assert services["otel-collector"]["environment"]["TOKENBRIDGE_EVENTS_ENDPOINT"] == "http://tokenbridge:14319"
    bridge_env = services["tokenbridge"]["environment"]
    assert (bridge_env["TOKENBRIDGE_EVENTS_HOST"], bridge_env["TOKENBRIDGE_EVENTS_PORT"]) == ("0.0.0.0", "14319")
    assert not any("14319" in p for p in services["tokenbridge"].get("ports", []))  # never published


def test_events_wait_in_a_persistent_queue_on_a_volume_the_collector_can_write():
    cfg = yaml.safe_load((REPO / "otel-collector-config.yml").read_text())
    storage = cfg["extensions"]["file_storage/events"]
    assert storage == {
        "directory": "${env:TOKENBRIDGE_EVENTS_QUEUE_DIR:-/var/lib/otelcol/events-queue}",
        "create_directory": True,
        "fsync": True,
    }
    assert "file_storage/events" in cfg["service"]["extensions"]
    to_bridge = cfg["exporters"]["otlphttp/tokenbridge"]
    assert to_bridge["sending_queue"] == {"enabled": True, "storage": "file_storage/events", "num_consumers": 1}
    assert to_bridge["retry_on_failure"]["max_elapsed_time"] == "${env:TOKENBRIDGE_EVENTS_RETRY:-24h}"
    m = _manifest()
    assert "github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage v0.159.0" in [
        e["gomod"] for e in m["extensions"]
    ]
    services = compose()["services"]
    col = services["otel-collector"]
    assert col["environment"]["TOKENBRIDGE_EVENTS_QUEUE_DIR"] == "/var/lib/otelcol/events-queue"
    assert "otelcol_queue:/var/lib/otelcol/events-queue" in col["volumes"]
    # A new named volume is root's; the one-shot service hands it to the contrib image's user before the collector.
    init = services["otel-collector-queue"]
    assert col["depends_on"] == {"otel-collector-queue": {"condition": "service_completed_successfully"}}
    assert init["volumes"] == ["otelcol_queue:/queue"] and init["user"] == "0:0" and init["restart"] == "no"
    assert init["entrypoint"] == ["/bin/sh", "-c", "chown 10001:10001 /queue && chmod 700 /queue"]
    assert "ports" not in init


def test_the_collector_sends_the_token_the_bridge_requires_on_the_compose_network():
    cfg = yaml.safe_load((REPO / "otel-collector-config.yml").read_text())
    headers = cfg["exporters"]["otlphttp/tokenbridge"]["headers"]
    assert headers == {"Authorization": "Bearer ${env:TOKENBRIDGE_EVENTS_TOKEN:-}"}
    services = compose()["services"]
    for svc in ("otel-collector", "tokenbridge"):
        assert services[svc]["environment"]["TOKENBRIDGE_EVENTS_TOKEN"] == "${TOKENBRIDGE_EVENTS_TOKEN:-}", svc
    # Beyond loopback in the container: without the token `tokenbridge run` refuses to start (tests/test_daemon.py).
    assert services["tokenbridge"]["environment"]["TOKENBRIDGE_EVENTS_HOST"] == "0.0.0.0"
    # .env.example documents it commented out: an empty uncommented line would shadow the one init.sh appends.
    assert "\n# TOKENBRIDGE_EVENTS_TOKEN=\n" in (REPO / ".env.example").read_text()


def test_prometheus_config_is_valid_for_promtool():
    proc = subprocess.run(
        [promtool_bin(), "check", "config", str(REPO / "prometheus.yml")], capture_output=True, text=True, cwd=str(REPO)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    p = yaml.safe_load((REPO / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in p["scrape_configs"]}
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == ["otel-collector:8889"]
    assert jobs["otel-collector"]["honor_labels"] is True
    assert p["global"]["scrape_protocols"][0] == "PrometheusProto"
    assert p["storage"]["tsdb"]["out_of_order_time_window"] == "31d"
    assert p["rule_files"] == ["prometheus/rules/*.yml"]


def test_alertmanager_receives_prometheus_alerts_and_reads_its_generated_config():
    p = yaml.safe_load((REPO / "prometheus.yml").read_text())
    (am,) = p["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
    s = compose()["services"]["alertmanager"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in s["command"]
    assert "./alertmanager:/etc/alertmanager:ro" in s["volumes"]
    assert s["ports"] == ["${TOKENBRIDGE_BIND:-127.0.0.1}:${ALERTMANAGER_PORT:-9093}:9093"]
    # The generated config holds the webhook URL: never committed.
    assert "alertmanager/alertmanager.yml" in (REPO / ".gitignore").read_text().split()
    assert (REPO / "alertmanager/templates/tokenbridge.tmpl").is_file()


# ------------------------------------------------------------------ team mode (central side)


def test_team_manifest_is_the_personal_one_plus_teamauth():
    personal = _manifest()
    team = yaml.safe_load((REPO / "otelcol-team-builder.yaml").read_text())
    assert team["dist"]["version"] == personal["dist"]["version"]
    assert team["dist"]["name"] == "otelcol-tokenbridge-team"
    for kind in ("receivers", "processors", "exporters", "connectors", "providers"):
        assert team[kind] == personal[kind], kind
    extra = [e for e in team["extensions"] if e not in personal["extensions"]]
    assert extra == [
        {"gomod": "github.com/tokenbridge/tokenbridge/collector/teamauth v0.1.0", "path": "./collector/teamauth"}
    ]
    gomod = (REPO / "collector/teamauth/go.mod").read_text()
    assert gomod.startswith("module github.com/tokenbridge/tokenbridge/collector/teamauth\n")
    # The Docker image builds the same manifest with the same ocb.
    dockerfile = (REPO / "Dockerfile.collector").read_text()
    assert f"ARG OCB_VERSION={_lib_var('TB_OCB_VERSION')}" in dockerfile
    assert "COPY otelcol-team-builder.yaml" in dockerfile and "COPY collector ./collector" in dockerfile
    ignore = (REPO / "Dockerfile.collector.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:3] == ["*", "!otelcol-team-builder.yaml", "!collector"]


def test_team_collector_requires_a_token_on_both_receivers_and_stamps_the_user_first():
    cfg = yaml.safe_load((REPO / "otel-collector-team.yml").read_text())
    for proto in ("grpc", "http"):
        assert cfg["receivers"]["otlp"]["protocols"][proto]["auth"] == {"authenticator": "teamauth"}
    assert "teamauth" in cfg["service"]["extensions"]
    assert cfg["processors"]["resource/team_user"]["attributes"] == [
        {"key": "user", "action": "delete"},
        {"key": "user", "from_context": "auth.user", "action": "insert"},
    ]
    pipes = cfg["service"]["pipelines"]
    # Stamped before anything that could drop the request's context (batch) and before any other processor.
    assert pipes["metrics"]["processors"][:3] == ["memory_limiter", "resource/team_user", "transform/team_labels"]
    assert pipes["logs"]["processors"][:2] == ["memory_limiter", "resource/team_user"]
    assert pipes["metrics/events"]["receivers"] == ["signal_to_metrics"]
    assert "prometheus" not in cfg["exporters"]  # the team server writes to VictoriaMetrics only
    rw = cfg["exporters"]["prometheus_remote_write"]
    assert rw["max_batch_request_parallelism"] == 1  # one request at a time: samples in order
    assert rw["resource_to_telemetry_conversion"] == {"enabled": False}


def test_team_collector_config_validates_with_and_without_tls(tmp_path):
    from tests._stack import team_otelcol_bin

    tokens = tmp_path / "tokens"
    tokens.write_text("alice:alice-0123456789abcdef\n")
    env = {"PATH": "/usr/bin:/bin", "TOKENBRIDGE_TEAM_TOKENS_FILE": str(tokens)}
    base = f"--config={REPO / 'otel-collector-team.yml'}"
    tls = f"--config={REPO / 'otel-collector-team-tls.yml'}"
    tls_env = {"TOKENBRIDGE_TEAM_TLS_CERT_FILE": "/c.pem", "TOKENBRIDGE_TEAM_TLS_KEY_FILE": "/k.pem"}
    for argv, extra in (([base], {}), ([base, base], {}), ([base, tls], tls_env)):
        proc = subprocess.run(
            [team_otelcol_bin(), "validate", *argv], capture_output=True, text=True, env={**env, **extra}
        )
        assert proc.returncode == 0, proc.stderr
    # The personal collector lacks teamauth: the team config is refused there (the validation is real).
    proc = subprocess.run([otelcol_bin(), "validate", base], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "teamauth" in proc.stderr


def test_team_services_mount_what_they_read():
    s = compose()["services"]
    col = s["team-collector"]
    assert "${TOKENBRIDGE_TEAM_CONFIG_DIR:-./team}:/etc/tokenbridge-team:ro" in col["volumes"]
    assert col["environment"]["TOKENBRIDGE_TEAM_TOKENS_FILE"] == "/etc/tokenbridge-team/tokens"
    assert col["environment"]["TOKENBRIDGE_TEAM_REMOTE_WRITE_URL"] == "http://victoriametrics:8428/api/v1/write"
    assert set(col["ports"]) == {
        "${TEAM_BIND:-0.0.0.0}:${TEAM_OTLP_GRPC_PORT:-4317}:4317",
        "${TEAM_BIND:-0.0.0.0}:${TEAM_OTLP_HTTP_PORT:-4318}:4318",
        "${TOKENBRIDGE_BIND:-127.0.0.1}:${TEAM_OTELCOL_HEALTH_PORT:-13134}:13133",
        "${TOKENBRIDGE_BIND:-127.0.0.1}:${TEAM_OTELCOL_METRICS_PORT:-18898}:8888",  # read by status.sh --team-server
    }
    vm = s["victoriametrics"]
    assert "victoriametrics_data:/storage" in vm["volumes"]
    assert vm["ports"] == ["${TOKENBRIDGE_BIND:-127.0.0.1}:${VICTORIAMETRICS_PORT:-8428}:8428"]
    graf = s["team-grafana"]
    assert "./grafana/provisioning-team:/etc/grafana/provisioning:ro" in graf["volumes"]
    # Only the team dashboards (Team usage and the personal ones' team variants): the personal ones use Prometheus
    # 3's `anchored` ranges, which VictoriaMetrics v1.151.0 rejects (`unexpected token "anchored"`).
    assert not any(v.startswith("./grafana/dashboards:") for v in graf["volumes"])
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/team/team-usage.json"
    assert sorted(p.name for p in (REPO / "grafana/provisioning-team/dashboards").iterdir()) == ["team.yml"]
    assert graf["environment"]["TOKENBRIDGE_GRAFANA_VICTORIAMETRICS_URL"] == "http://victoriametrics:8428"
    ds = yaml.safe_load((REPO / "grafana/provisioning-team/datasources/victoriametrics.yml").read_text())
    (source,) = ds["datasources"]
    # The personal dashboards reference this uid: they run unchanged on the team's data.
    assert (source["uid"], source["url"]) == ("tokenbridge-prometheus", "${TOKENBRIDGE_GRAFANA_VICTORIAMETRICS_URL}")


def test_native_victoriametrics_flags_match_compose():
    proc = subprocess.run(
        ["bash", "-c", f"source {REPO / 'scripts/_lib.sh'}; tb_victoriametrics_flags"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "VICTORIAMETRICS_RETENTION": "400d"},
    )
    shipped = [
        re.sub(r"\$\{VICTORIAMETRICS_RETENTION:-([^}]*)\}", r"\1", a)
        for a in compose()["services"]["victoriametrics"]["command"]
        if not a.startswith(("-storageDataPath", "-httpListenAddr"))
    ]
    assert proc.stdout.split() == shipped


def _vmalert_flags(vm_url: str, rule: str, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        ["bash", "-c", f'source {REPO / "scripts/_lib.sh"}; tb_vmalert_flags "$0" "$1"', vm_url, rule],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    return proc.stdout.splitlines()


@pytest.mark.parametrize("env", [{}, {"TEAM_ALERTMANAGER_URL": "http://am.example:9093"}])
def test_native_vmalert_flags_match_compose(env):
    svc = compose()["services"]["team-vmalert"]
    assert svc["command"][0] == "-httpListenAddr=:8880"  # native: 127.0.0.1:$TEAM_VMALERT_PORT
    # Compose interpolates ${VAR:+x} and ${VAR:-x} as bash does: let bash expand the shipped arguments.
    expand = 'for a; do eval "printf \'%s\\n\' "$a""; done'
    shipped = subprocess.run(["bash", "-c", expand, "_", *svc["command"][1:]], capture_output=True, text=True,
                             check=True, env={"PATH": "/usr/bin:/bin", **env}).stdout.splitlines()  # fmt: skip
    native = _vmalert_flags("http://victoriametrics:8428", "/etc/vmalert/team/*.yml", env)
    assert native == shipped
    notifier = f"-notifier.url={env['TEAM_ALERTMANAGER_URL']}" if env else "-notifier.blackhole"
    assert notifier in native and "-remoteRead.url=http://victoriametrics:8428" in native


def test_team_vmalert_mounts_the_rules_and_the_generated_budgets_read_only():
    svc = compose()["services"]["team-vmalert"]
    assert svc["volumes"] == ["./prometheus/team:/etc/vmalert/team:ro"]
    # generate_team_rules.py writes both files there by default (rules.yml in git, thresholds.yml from .env).
    assert (REPO / "prometheus/team/rules.yml").is_file()
    gen = (REPO / "prometheus/generate_team_rules.py").read_text()
    assert 'THRESHOLDS_OUT = HERE / "team" / "thresholds.yml"' in gen
    assert svc["ports"] == ["${TOKENBRIDGE_BIND:-127.0.0.1}:${TEAM_VMALERT_PORT:-8880}:8880"]
    assert svc["depends_on"] == ["victoriametrics"]
