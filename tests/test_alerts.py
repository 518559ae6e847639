"""Budgets, alert levels and the webhook from the config file and the environment: one set of values for
`status`, the generated Prometheus thresholds and the Alertmanager config; a bad value names its key and file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from bridge import alerts
from bridge.cli import main
from bridge.config import load
from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.record import Tokens, UsageRecord

REPO = Path(__file__).resolve().parents[1]
SECRET = "https://hooks.example.com/services/T000/B000/s3cr3tPart"
CONFIG = f"""
[budgets]
daily_usd = 7.5
monthly_usd = 300

[alerts]
quota_percent = 90
source_silent_hours = 2
balance_low_by_provider = {{ openrouter = 10 }}
webhook_url = "{SECRET}"
webhook_format = "webhook"
repeat = "2h"
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(CONFIG)
    return p


def test_file_values_by_variable_and_the_environment_over_them(cfg, tmp_path):
    s = load({"TOKENBRIDGE_BUDGET_MONTHLY_USD": "400", "TOKENBRIDGE_ALERT_REPEAT": ""}, tmp_path, cfg)
    assert s.alert_values == {
        "TOKENBRIDGE_BUDGET_DAILY_USD": "7.5",
        "TOKENBRIDGE_BUDGET_MONTHLY_USD": "400",  # the environment wins
        "TOKENBRIDGE_QUOTA_ALERT_PERCENT": "90",
        "TOKENBRIDGE_SOURCE_SILENT_HOURS": "2",
        "TOKENBRIDGE_BALANCE_LOW_OPENROUTER": "10",
        "TOKENBRIDGE_ALERT_WEBHOOK_URL": SECRET,
        "TOKENBRIDGE_ALERT_WEBHOOK_FORMAT": "webhook",
        "TOKENBRIDGE_ALERT_REPEAT": "2h",  # an empty variable does not unset the file's value
    }


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[budgets]\ndaily_usd = -1\n", "budgets.daily_usd"),
        ("[budgets]\nmonthly_usd = 'lots'\n", "budgets.monthly_usd"),
        ("[budgets]\nmonthly_usd = true\n", "budgets.monthly_usd"),
        ("[budgets]\nmonthly_usd = nan\n", "budgets.monthly_usd"),
        ("[alerts]\nquota_percent = [80]\n", "alerts.quota_percent"),
        ("[alerts]\nwebhook_format = 'teams'\n", "alerts.webhook_format"),
        ("[alerts]\nrepeat = 'sometimes'\n", "alerts.repeat"),
        ("[alerts]\nwebhook_url = 42\n", "alerts.webhook_url"),
        ("[alerts]\nbalance_low_by_provider = 5\n", "alerts.balance_low_by_provider"),
        ("[alerts]\nbalance_low_by_provider = { Open-Router = 5 }\n", "alerts.balance_low_by_provider.Open-Router"),
        ("[alerts]\nbalance_low_by_provider = { openrouter = -5 }\n", "alerts.balance_low_by_provider.openrouter"),
    ],
)
def test_a_bad_file_value_names_the_file_and_key(tmp_path, text, key):
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load({}, tmp_path, p)
    assert exc.value.key == f"{p}: {key}"


def test_unknown_keys_are_refused_and_the_webhook_is_never_echoed(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[budgets]\nweekly_usd = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load({}, tmp_path, p)
    p.write_text('[alerts]\nwebhook_url = "ftp://hooks.example.com/s3cr3tPart"\n')
    with pytest.raises(ConfigError) as exc:
        load({}, tmp_path, p)
    assert "s3cr3tPart" not in str(exc.value) and "alerts.webhook_url" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load({"TOKENBRIDGE_ALERT_WEBHOOK_URL": "hooks.example.com/s3cr3tPart"}, tmp_path, tmp_path / "none.toml")
    assert exc.value.key == "TOKENBRIDGE_ALERT_WEBHOOK_URL" and "s3cr3tPart" not in str(exc.value)


def test_status_uses_the_file_budgets_and_the_environment_over_them(cfg, tmp_path, capsys, monkeypatch):
    for key in list(os.environ):
        if key.startswith("TOKENBRIDGE_"):
            monkeypatch.delenv(key)

    class Price:
        def cost(self, provider, model, tokens, at=None):
            return Decimal("0.75")

    with Ledger.open(tmp_path / "state") as led:
        rec = UsageRecord("claude_transcripts", "anthropic", "m", datetime.now(UTC), "k", Tokens(input=1))
        led.commit([rec], Price())
    args = ["--state-dir", str(tmp_path / "state"), "--config", str(cfg), "status", "--json"]
    assert main(args) == 0
    budgets = json.loads(capsys.readouterr().out)["budgets"]
    assert budgets["daily"] == {"budget": "7.5", "spent": "0.75", "used_percent": "10"}
    assert budgets["monthly"]["budget"] == "300"
    monkeypatch.setenv("TOKENBRIDGE_BUDGET_DAILY_USD", "3")
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["budgets"]["daily"]["used_percent"] == "25"
    cfg.write_text("[budgets]\ndaily_usd = 'ten'\n")
    monkeypatch.delenv("TOKENBRIDGE_BUDGET_DAILY_USD")
    assert main(args) == 2
    assert (
        capsys.readouterr().err.strip() == f"tokenbridge: config error: {cfg}: budgets.daily_usd: not a number: 'ten'"
    )


def test_read_env_file_is_shared_by_both_scripts(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# c\n\nexport TOKENBRIDGE_BUDGET_DAILY_USD='4'\nTOKENBRIDGE_ALERT_REPEAT=\"1h\"\nnot a pair\n")
    assert alerts.read_env_file(env_file) == {"TOKENBRIDGE_BUDGET_DAILY_USD": "4", "TOKENBRIDGE_ALERT_REPEAT": "1h"}
    for script in ("prometheus/generate_rules.py", "scripts/alertmanager_config.py"):
        text = (REPO / script).read_text()
        assert "def read_env_file" not in text and "from bridge import alerts" in text


# ------------------------------------------------------------------ the scripts and start.sh's tb_alert_config


def _script(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _thresholds(path: Path) -> dict[str, float]:
    """Recorded threshold name (with /provider for per-provider ones) -> value."""
    (group,) = yaml.safe_load(path.read_text())["groups"]
    out = {}
    for r in group["rules"]:
        name = r["record"].removeprefix("tokenbridge:threshold_config:")
        name += "".join(f"/{v}" for v in r.get("labels", {}).values())
        out[name] = float(r["expr"].removeprefix("vector(").removesuffix(")"))
    return out


def test_scripts_read_the_config_file_then_env_file_then_environment(cfg, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("TOKENBRIDGE_BUDGET_MONTHLY_USD=400\nTOKENBRIDGE_QUOTA_ALERT_PERCENT=85\n")
    out = tmp_path / "thresholds.yml"
    env = {"TOKENBRIDGE_CONFIG": str(cfg), "TOKENBRIDGE_QUOTA_ALERT_PERCENT": "95"}
    proc = _script("prometheus/generate_rules.py", "--thresholds", "--env-file", str(env_file), "--out", str(out),
                   env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _thresholds(out) == {
        "budget_daily_usd": 7.5,  # config file
        "budget_monthly_usd": 400,  # .env over the file
        "quota_used_percent": 95,  # the environment over .env
        "source_silent_seconds": 7200,
        "balance_low/openrouter": 10,
    }
    am = tmp_path / "alertmanager.yml"
    proc = _script("scripts/alertmanager_config.py", "--config", str(cfg), "--out", str(am), env={})
    assert proc.returncode == 0, proc.stderr
    conf = yaml.safe_load(am.read_text())
    assert conf["receivers"][1] == {"name": "webhook", "webhook_configs": [{"url": SECRET, "send_resolved": True}]}
    assert conf["route"]["repeat_interval"] == "2h"
    other = "https://hooks.example.com/other"
    proc = _script("scripts/alertmanager_config.py", "--config", str(cfg), "--out", str(am),
                   env={"TOKENBRIDGE_ALERT_WEBHOOK_URL": other})  # fmt: skip
    assert proc.returncode == 0 and yaml.safe_load(am.read_text())["receivers"][1]["webhook_configs"][0]["url"] == other


def test_scripts_name_the_bad_file_key_in_one_line(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text('[alerts]\nburn_spike_factor = "x3"\nwebhook_url = "mailto:s3cr3tPart"\n')
    cases = (("prometheus/generate_rules.py", "generate_rules", ["--thresholds"]),
             ("scripts/alertmanager_config.py", "alertmanager_config", []))  # fmt: skip
    for script, prog, extra in cases:
        out = tmp_path / f"{prog}.yml"
        proc = _script(script, *extra, "--out", str(out), env={"TOKENBRIDGE_CONFIG": str(bad)})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == f"{prog}: config error: {bad}: alerts.burn_spike_factor: not a number: 'x3'\n"
        assert not out.exists()


def _repo_copy(tmp_path: Path) -> Path:
    """The files tb_alert_config runs, in a scratch repo (it writes into the repo's prometheus/ and alertmanager/)."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("bridge", "grafana", "alertmanager/templates"):
        shutil.copytree(REPO / d, repo / d, ignore=ignore)
    for f in ("scripts/_lib.sh", "scripts/alertmanager_config.py", "prometheus/generate_rules.py"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    (repo / "prometheus/rules").mkdir()
    return repo


def test_start_sh_alert_config_picks_the_config_file_values(cfg, tmp_path):
    repo = _repo_copy(tmp_path)
    (repo / ".env").write_text("TOKENBRIDGE_BUDGET_DAILY_USD=9\n")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TOKENBRIDGE_CONFIG": str(cfg),
    }
    run = ["bash", "-c", f"source {repo}/scripts/_lib.sh && tb_alert_config"]
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    th = _thresholds(repo / "prometheus/rules/thresholds.yml")
    assert (th["budget_daily_usd"], th["budget_monthly_usd"], th["quota_used_percent"]) == (9, 300, 90)
    am = yaml.safe_load((repo / "alertmanager/alertmanager.yml").read_text())
    assert am["receivers"][1]["webhook_configs"][0]["url"] == SECRET
    assert SECRET not in proc.stdout + proc.stderr
    cfg.write_text("[budgets]\nmonthly_usd = -300\n")
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{cfg}: budgets.monthly_usd: must be a number >= 0, got -300" in proc.stderr
    assert "error: fix the alert threshold named above (config file or .env)" in proc.stderr
