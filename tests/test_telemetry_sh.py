"""telemetry.sh / telemetry-grpc.sh in real bash and zsh (zsh: apt-get install -y zsh; required in CI).
That a client configured only by these variables reaches the collector is in tests/test_stack_e2e.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests._stack import IN_CI, REPO

TELEMETRY = REPO / "telemetry.sh"
GRPC = REPO / "telemetry-grpc.sh"
VARS = (
    "CLAUDE_CODE_ENABLE_TELEMETRY",
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_LOGS_EXPORT_INTERVAL",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def _shell(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        if IN_CI or name == "bash":
            pytest.fail(f"{name} is not installed (apt-get install -y {name})")
        pytest.skip(f"{name} not installed (never skipped in CI)")
    return exe


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CLAUDE_CODE_", "OTLP_"))}
    env.update(extra)
    return env


def _run(shell: str, script: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_shell(shell), "-c", script], capture_output=True, text=True, timeout=30, env=_clean_env(**env), cwd=cwd
    )


def _vars_after(shell: str, source_cmd: str, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    script = f"{source_cmd}; rc=$?; echo __RC=$rc; env"
    proc = _run(shell, script, **env)
    out = {}
    for line in proc.stdout.splitlines():
        k, _, v = line.partition("=")
        if k in VARS or k == "__RC":
            out[k] = v
    return proc, out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_default_is_http_protobuf_to_14318(shell):
    proc, v = _vars_after(shell, f"source {TELEMETRY}")
    assert v.pop("__RC") == "0", proc.stderr
    assert re.fullmatch(r"service\.instance\.id=tb-[A-Za-z0-9.-]+", v["OTEL_RESOURCE_ATTRIBUTES"])
    assert f"OTEL_RESOURCE_ATTRIBUTES={v.pop('OTEL_RESOURCE_ATTRIBUTES')}" in proc.stdout
    assert v == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "cumulative",
        "OTEL_METRIC_EXPORT_INTERVAL": "10000",
        "OTEL_LOGS_EXPORT_INTERVAL": "5000",
    }
    # It prints what it set.
    for k, val in v.items():
        assert f"{k}={val}" in proc.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_grpc_host_port_options(shell):
    _, v = _vars_after(shell, f"source {TELEMETRY} --protocol=grpc")
    assert (v["OTEL_EXPORTER_OTLP_PROTOCOL"], v["OTEL_EXPORTER_OTLP_ENDPOINT"]) == ("grpc", "http://127.0.0.1:14317")
    _, v = _vars_after(shell, f"source {GRPC}")
    assert (v["OTEL_EXPORTER_OTLP_PROTOCOL"], v["OTEL_EXPORTER_OTLP_ENDPOINT"]) == ("grpc", "http://127.0.0.1:14317")
    _, v = _vars_after(shell, f"source {TELEMETRY} --protocol=http --host=10.1.2.3 --port=4318")
    assert (v["OTEL_EXPORTER_OTLP_PROTOCOL"], v["OTEL_EXPORTER_OTLP_ENDPOINT"]) == (
        "http/protobuf",
        "http://10.1.2.3:4318",
    )
    _, v = _vars_after(shell, f"source {GRPC} --port=5555")
    assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:5555"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_ports_from_environment(shell):
    _, v = _vars_after(shell, f"source {TELEMETRY}", OTLP_HTTP_PORT="24318")
    assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:24318"
    _, v = _vars_after(shell, f"source {TELEMETRY} --protocol=grpc", OTLP_GRPC_PORT="24317")
    assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:24317"


def test_ports_from_dotenv_next_to_the_script(tmp_path):
    shutil.copy(TELEMETRY, tmp_path / "telemetry.sh")
    (tmp_path / ".env").write_text('OTLP_HTTP_PORT=34318\nOTLP_GRPC_PORT="34317"\n')
    for shell in ("bash", "zsh"):
        _, v = _vars_after(shell, f"source {tmp_path / 'telemetry.sh'}")
        assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:34318", shell
        _, v = _vars_after(shell, f"source {tmp_path / 'telemetry.sh'} --protocol=grpc")
        assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:34317", shell


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_unset_removes_everything(shell):
    _, v = _vars_after(shell, f"source {TELEMETRY} >/dev/null; source {TELEMETRY} --unset")
    assert v == {"__RC": "0"}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_each_shell_gets_its_own_instance_id_and_the_users_attributes_stay(shell):
    ids = {_vars_after(shell, f"source {TELEMETRY}")[1]["OTEL_RESOURCE_ATTRIBUTES"] for _ in range(3)}
    assert len(ids) == 3, ids
    _, v = _vars_after(shell, f"source {TELEMETRY} >/dev/null; source {TELEMETRY}", OTEL_RESOURCE_ATTRIBUTES="team=eng")
    attrs = v["OTEL_RESOURCE_ATTRIBUTES"].split(",")
    assert attrs[0] == "team=eng" and len(attrs) == 2, "re-sourcing replaces its own id, never adds a second"
    assert attrs[1].startswith("service.instance.id=tb-")
    _, v = _vars_after(
        shell, f"source {TELEMETRY} >/dev/null; source {TELEMETRY} --unset", OTEL_RESOURCE_ATTRIBUTES="team=eng"
    )
    assert v["OTEL_RESOURCE_ATTRIBUTES"] == "team=eng"
    _, v = _vars_after(shell, f"source {TELEMETRY}", OTEL_RESOURCE_ATTRIBUTES="service.instance.id=mine")
    assert v["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=mine", "a user-set id wins"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_conflicting_per_signal_variables_are_cleared(shell):
    proc, v = _vars_after(
        shell,
        f"source {TELEMETRY}",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://elsewhere:4318/v1/metrics",
    )
    assert (
        "unset (would override the above): OTEL_EXPORTER_OTLP_METRICS_ENDPOINT OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
        in proc.stdout
    )
    env_lines = proc.stdout.split("__RC=0", 1)[1]
    assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=" not in env_lines
    assert "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=" not in env_lines
    assert v["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_bad_arguments_fail_without_setting_anything(shell):
    for arg in ("--protocol=udp", "--port=abc", "--bogus"):
        proc, v = _vars_after(shell, f"source {TELEMETRY} {arg}")
        assert v == {"__RC": "2"}, (arg, v)
        assert "telemetry.sh:" in proc.stderr


@pytest.mark.parametrize("script", [TELEMETRY, GRPC])
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_refuses_when_executed(shell, script):
    proc = subprocess.run([_shell(shell), str(script)], capture_output=True, text=True, timeout=30, env=_clean_env())
    assert proc.returncode == 1
    assert "must be sourced, not executed" in proc.stderr
    assert "OTEL_" not in proc.stdout


@pytest.mark.parametrize("script", [TELEMETRY, GRPC])
def test_refuses_when_run_directly(script):
    assert os.access(script, os.X_OK)
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=30, env=_clean_env())
    assert proc.returncode == 1 and "must be sourced" in proc.stderr


def test_sourcing_leaves_no_helper_functions_or_variables():
    proc = _run(
        "bash",
        f"source {TELEMETRY} >/dev/null; declare -F | grep -c _tb_ || true; compgen -v | grep -c '^_tb_' || true",
    )
    assert proc.stdout.split() == ["0", "0"]
    proc = _run(
        "zsh",
        f"source {TELEMETRY} >/dev/null; print -l ${{(k)functions}} | grep -c _tb_ || true; "
        "print -l ${(k)parameters} | grep -c '^_tb_' || true",
    )
    assert proc.stdout.split() == ["0", "0"]


def test_sh_without_bash_or_zsh_is_refused():
    dash = shutil.which("dash") or shutil.which("sh")
    proc = subprocess.run(
        [dash, "-c", f". {TELEMETRY}; echo rc=$?"], capture_output=True, text=True, timeout=30, env=_clean_env()
    )
    assert "needs bash or zsh" in proc.stderr
    assert "CLAUDE_CODE_ENABLE_TELEMETRY" not in proc.stdout


# ------------------------------------------------------------------ --team (docs/team.md)

TEAM_TOKEN = "tb-team-7c1d9e2f4a6b"  # must never be printed
TEAM_VARS = (*VARS, "OTEL_EXPORTER_OTLP_HEADERS", "TOKENBRIDGE_TEAM")


def _team_vars(shell: str, source_cmd: str, **env: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    proc = _run(shell, f"{source_cmd}; rc=$?; echo __RC=$rc; env", **env)
    out = {}
    for line in proc.stdout.splitlines():
        k, _, v = line.partition("=")
        if k in TEAM_VARS or k == "__RC":
            out[k] = v
    return proc, out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_team_points_at_the_central_collector_with_the_token_never_printed(shell, tmp_path):
    token_file = tmp_path / "team-token"
    token_file.write_text(TEAM_TOKEN + "\n")
    env = {
        "TOKENBRIDGE_TEAM_TOKEN_FILE": str(token_file),
        "TOKENBRIDGE_USER": "ann",
        "TOKENBRIDGE_MACHINE": "box-1.lan",
    }
    proc, v = _team_vars(shell, f"source {TELEMETRY} --team --host=team.example --tls", **env)
    assert v["__RC"] == "0", proc.stderr
    assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://team.example:4318"
    assert v["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Bearer%20{TEAM_TOKEN}"
    assert v["TOKENBRIDGE_TEAM"] == "1"
    assert v["OTEL_RESOURCE_ATTRIBUTES"].endswith(",user=ann,machine=box-1")
    printed = proc.stdout.split("__RC=")[0] + proc.stderr
    assert TEAM_TOKEN not in printed and "otelHeadersHelper" in printed
    proc, v = _team_vars(
        shell, f"source {TELEMETRY} --team --host=team.example --protocol=grpc", TEAM_OTLP_GRPC_PORT="5317", **env
    )
    assert v["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://team.example:5317"
    # Sourcing twice keeps one user= and machine=; --unset removes what --team set.
    _, v = _team_vars(
        shell, f"source {TELEMETRY} --team --host=h >/dev/null; source {TELEMETRY} --team --host=h >/dev/null", **env
    )
    assert v["OTEL_RESOURCE_ATTRIBUTES"].count("user=") == 1
    _, v = _team_vars(shell, f"source {TELEMETRY} --team --host=h >/dev/null; source {TELEMETRY} --unset", **env)
    assert v == {"__RC": "0"}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_team_exports_the_absolute_token_file_for_the_bridge(shell, tmp_path):
    (tmp_path / "team-token").write_text(TEAM_TOKEN + "\n")
    proc = _run(shell, f"cd {tmp_path} && source {TELEMETRY} --team --host=h --token-file=team-token >/dev/null; env")
    exported = [line for line in proc.stdout.splitlines() if line.startswith("TOKENBRIDGE_TEAM_TOKEN_FILE=")]
    assert exported == [f"TOKENBRIDGE_TEAM_TOKEN_FILE={tmp_path / 'team-token'}"], proc.stderr


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        ("--team", TEAM_TOKEN, "--team needs --host"),
        ("--team --host=h", None, "is not readable"),
        ("--team --host=h", "", "is empty"),
        ("--team --host=h", "bad,token" + TEAM_TOKEN, "characters a header cannot carry"),
    ],
)
def test_team_problems_fail_without_setting_anything(tmp_path, args, token, message):
    token_file = tmp_path / "team-token"
    if token is not None:
        token_file.write_text(token)
    proc, v = _team_vars("bash", f"source {TELEMETRY} {args}", TOKENBRIDGE_TEAM_TOKEN_FILE=str(token_file))
    assert v == {"__RC": "2"}
    assert message in proc.stderr and TEAM_TOKEN not in proc.stdout.split("__RC=")[0] + proc.stderr


def test_headers_helper_prints_the_current_token_as_json(tmp_path):
    import json

    token_file = tmp_path / "team-token"
    helper = REPO / "scripts" / "team-headers.sh"
    for token in (TEAM_TOKEN, TEAM_TOKEN + "-rotated"):
        token_file.write_text(token + "\n")
        r = subprocess.run(
            [str(helper)], capture_output=True, text=True, env=_clean_env(TOKENBRIDGE_TEAM_TOKEN_FILE=str(token_file))
        )
        assert r.returncode == 0 and json.loads(r.stdout) == {"Authorization": f"Bearer {token}"}
    token_file.write_text("has space" + TEAM_TOKEN)
    r = subprocess.run(
        [str(helper)], capture_output=True, text=True, env=_clean_env(TOKENBRIDGE_TEAM_TOKEN_FILE=str(token_file))
    )
    assert r.returncode == 1 and TEAM_TOKEN not in r.stdout + r.stderr
