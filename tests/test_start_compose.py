"""./start.sh in Docker mode, up to `docker compose up`: the Grafana password check and the agents' directories it
prepares so that Docker never creates a root-owned directory in $HOME. No Docker engine can run here, so a stand-in
`docker` on PATH answers `info`/`compose version` and records what `compose up` was given (variables and args)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests._stack import REPO

AGENT_VARS = ("CLAUDE_HOME", "CLAUDE_XDG_DIR", "CODEX_HOST_DIR", "OPENCLAW_HOST_DIR", "GEMINI_HOST_DIR",
              "OPENCODE_HOST_DIR", "AMP_HOST_DIR")  # fmt: skip


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of what start.sh reads, so its generated files and .env stay out of the checkout."""
    r = tmp_path / "repo"
    for d in ("scripts", "prometheus", "alertmanager", "grafana"):
        shutil.copytree(REPO / d, r / d, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    for f in ("start.sh", "docker-compose.yml", ".env.example"):
        shutil.copy(REPO / f, r / f)
    return r


def _run(repo: Path, tmp_path: Path, password: str) -> tuple[subprocess.CompletedProcess, Path]:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True, exist_ok=True)  # one agent present, the others absent
    (repo / ".env").write_text(f"GRAFANA_ADMIN_PASSWORD={password}\n")
    record = tmp_path / "compose-up.txt"
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    docker = bindir / "docker"
    names = " ".join((*AGENT_VARS, "TOKENBRIDGE_EVENTS_TOKEN"))
    docker.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '  "info "*|"compose version") exit 0 ;;\n'
        f'  "compose up") {{ echo "ARGS $*"; for v in {names}; do eval "echo $v=\\$$v"; done; }} >{record}; exit ;;\n'
        "esac\n"
        "exit 1\n"
    )
    docker.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENBRIDGE_", "GRAFANA_", "XDG_"))}
    env.update({"HOME": str(home), "PATH": f"{bindir}:{env['PATH']}"})
    for v in AGENT_VARS:
        env.pop(v, None)
    proc = subprocess.run([str(repo / "start.sh")], capture_output=True, text=True, env=env, timeout=120)
    return proc, record


@pytest.mark.parametrize(
    ("password", "says"),
    [("change-me-please", "still the placeholder from .env.example"), ("", "not set")],
)
def test_docker_mode_refuses_the_example_password_like_an_empty_one(repo, tmp_path, password, says):
    proc, record = _run(repo, tmp_path, password)
    assert proc.returncode == 1
    assert f"error: GRAFANA_ADMIN_PASSWORD is {says}: set your own in {repo / '.env'}" in proc.stderr
    assert not record.exists()  # compose was never started


def test_docker_mode_prepares_every_agent_dir_as_the_user_before_compose_up(repo, tmp_path):
    secret = "a-real-password-4f9c2e"
    proc, record = _run(repo, tmp_path, secret)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    home = tmp_path / "home"
    lines = record.read_text().splitlines()
    assert lines[0] == "ARGS compose up -d --build"
    got = dict(line.split("=", 1) for line in lines[1:])
    # ~/.claude did not exist: created by the user (not by Docker as root), private.
    claude = home / ".claude"
    st = claude.stat()
    assert got["CLAUDE_HOME"] == str(claude) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert f"created {claude}" in proc.stderr
    # A present agent dir is mounted as is; absent ones get an empty placeholder, nothing is created in their place.
    assert got["CODEX_HOST_DIR"] == str(home / ".codex")
    for var, rel in (
        ("CLAUDE_XDG_DIR", ".config/claude"),
        ("GEMINI_HOST_DIR", ".gemini"),
        ("AMP_HOST_DIR", ".local/share/amp"),
    ):
        placeholder = Path(got[var])
        assert placeholder.is_dir() and not any(placeholder.iterdir()), var
        assert placeholder.is_relative_to(home / ".local/state/tokenbridge/absent")
        assert not (home / rel).exists(), rel
        assert f"{home / rel} not present" in proc.stderr
    for var in AGENT_VARS:
        assert Path(got[var]).is_dir(), var  # every bind source exists: create_host_path: false never trips
    assert "First data:" in proc.stdout
    # The .env (written before the events token existed) got a random one, which compose sees and nothing prints.
    token = got["TOKENBRIDGE_EVENTS_TOKEN"]
    assert len(token) == 48 and f"TOKENBRIDGE_EVENTS_TOKEN={token}\n" in (repo / ".env").read_text()
    assert token not in proc.stdout + proc.stderr
    assert "added a random TOKENBRIDGE_EVENTS_TOKEN" in proc.stderr
