"""Budgets, alert thresholds and the alert webhook: one set of settings, read the same way by ``tokenbridge
status``, ``prometheus/generate_rules.py --thresholds`` and ``scripts/alertmanager_config.py``.

Each setting has a config-file key (``[budgets]``, ``[alerts]``) and an environment variable; the environment wins
(for the two scripts, a ``.env`` file sits between: file < .env < environment). Every value is checked when it is
read, and a bad one is a ``ConfigError`` naming the file and ``section.key``, or the variable. The webhook URL
carries its secret in the path, so no message ever contains it.

Standard library only: the scripts import this module with the system Python, where the bridge's dependencies
may be missing.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import ConfigError

# (section, key) in the config file -> the environment variable.
KEYS: dict[tuple[str, str], str] = {
    ("budgets", "daily_usd"): "TOKENBRIDGE_BUDGET_DAILY_USD",
    ("budgets", "monthly_usd"): "TOKENBRIDGE_BUDGET_MONTHLY_USD",
    ("alerts", "balance_low"): "TOKENBRIDGE_BALANCE_LOW",
    ("alerts", "quota_percent"): "TOKENBRIDGE_QUOTA_ALERT_PERCENT",
    ("alerts", "burn_spike_factor"): "TOKENBRIDGE_BURN_SPIKE_FACTOR",
    ("alerts", "burn_spike_min_usd_per_hour"): "TOKENBRIDGE_BURN_SPIKE_MIN_USD_PER_HOUR",
    ("alerts", "source_silent_hours"): "TOKENBRIDGE_SOURCE_SILENT_HOURS",
    ("alerts", "source_failures"): "TOKENBRIDGE_SOURCE_FAILURES",
    ("alerts", "webhook_url"): "TOKENBRIDGE_ALERT_WEBHOOK_URL",
    ("alerts", "webhook_format"): "TOKENBRIDGE_ALERT_WEBHOOK_FORMAT",
    ("alerts", "repeat"): "TOKENBRIDGE_ALERT_REPEAT",
}
TEXT = frozenset({"TOKENBRIDGE_ALERT_WEBHOOK_URL", "TOKENBRIDGE_ALERT_WEBHOOK_FORMAT", "TOKENBRIDGE_ALERT_REPEAT"})
# Per provider: [alerts] balance_low_by_provider = { openrouter = 10 }  <->  TOKENBRIDGE_BALANCE_LOW_OPENROUTER=10
BALANCE_TABLE = "balance_low_by_provider"
BALANCE_PREFIX = "TOKENBRIDGE_BALANCE_LOW_"
FORMATS = ("slack", "webhook")
SECTIONS = ("budgets", "alerts")


def schema() -> dict[str, dict[str, type | tuple[type, ...]]]:
    """The sections' keys for ``bridge.config``'s file check (values are checked here, with their meaning)."""
    out: dict[str, dict[str, type | tuple[type, ...]]] = {s: {} for s in SECTIONS}
    for (section, key), _env in KEYS.items():
        out[section][key] = object
    out["alerts"][BALANCE_TABLE] = object
    return out


def number(key: str, raw: object) -> Decimal:
    """A finite number >= 0 (TOML number or text from a variable); ``key`` names it in the error."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigError(key, f"must be a number >= 0, got {type(raw).__name__}")
    try:
        v = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ConfigError(key, f"not a number: {raw!r}") from None
    if not v.is_finite() or v < 0:
        raise ConfigError(key, f"must be a number >= 0, got {raw!r}")
    return v


def _text(env_name: str, key: str, raw: object) -> None:
    if not isinstance(raw, str):
        raise ConfigError(key, f"must be a string, got {type(raw).__name__}")
    value = raw.strip()
    if env_name == "TOKENBRIDGE_ALERT_WEBHOOK_FORMAT" and value.lower() not in FORMATS:
        raise ConfigError(key, f"must be one of {', '.join(FORMATS)}, got {value!r}")
    if env_name == "TOKENBRIDGE_ALERT_REPEAT" and not re.fullmatch(r"([0-9]+[smhd])+", value):
        raise ConfigError(key, f"a duration like 30m or 4h, got {value!r}")
    if env_name == "TOKENBRIDGE_ALERT_WEBHOOK_URL":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(key, "must be an http:// or https:// URL")  # the value is never echoed


def check(env_name: str, raw: object, key: str | None = None) -> None:
    """Check one setting, known by its variable; errors name ``key`` (default: the variable)."""
    key = key or env_name
    if env_name in TEXT:
        _text(env_name, key, raw)
    elif env_name.startswith(BALANCE_PREFIX) and not re.fullmatch(r"[A-Za-z0-9_]+", env_name[len(BALANCE_PREFIX) :]):
        raise ConfigError(key, "the provider part must be letters, digits or _")
    else:
        number(key, raw)


def from_file(data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """The ``[budgets]``/``[alerts]`` values of a parsed config file, checked, as variable -> text."""
    out: dict[str, str] = {}
    for (section, key), env_name in KEYS.items():
        body = data.get(section) or {}
        if key in body:
            check(env_name, body[key], f"{path}: {section}.{key}")
            out[env_name] = str(body[key]).strip()
    table = (data.get("alerts") or {}).get(BALANCE_TABLE)
    if table is not None:
        where = f"{path}: alerts.{BALANCE_TABLE}"
        if not isinstance(table, dict):
            raise ConfigError(where, "must be a table of provider = amount")
        for provider, value in table.items():
            env_name = BALANCE_PREFIX + str(provider).upper()
            if not re.fullmatch(r"[a-z0-9_]+", str(provider)):
                raise ConfigError(f"{where}.{provider}", "the provider must be lower-case letters, digits or _")
            check(env_name, value, f"{where}.{provider}")
            out[env_name] = str(value)
    return out


def _known(name: str) -> bool:
    return name in KEYS.values() or name.startswith(BALANCE_PREFIX)


def merged(env: Mapping[str, str], data: Mapping[str, Any], path: Path) -> dict[str, str]:
    """File values, then the environment's (non-empty) ones over them; every value checked."""
    out = from_file(data, path)
    for name, raw in env.items():
        if _known(name) and raw.strip():
            check(name, raw)
            out[name] = raw.strip()
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blanks and ``export`` prefixes allowed; quotes stripped)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip().removeprefix("export ")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip("'\"")
    return out


def default_config_path(env: Mapping[str, str]) -> Path:
    """``$TOKENBRIDGE_CONFIG``, else ``config.toml`` in the user config directory (as ``bridge.config``)."""
    explicit = env.get("TOKENBRIDGE_CONFIG", "").strip()
    if explicit:
        return Path(os.path.expanduser(explicit))
    try:
        import platformdirs
    except ImportError:  # the system Python of the scripts: the XDG location platformdirs uses on Linux
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return Path(base) / "tokenbridge" / "config.toml"
    return Path(platformdirs.user_config_dir("tokenbridge")) / "config.toml"


def read_config(path: Path) -> dict[str, Any]:
    """The parsed config file ({} when there is none)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def for_scripts(environ: Mapping[str, str], env_file: Path | None, config: Path | None) -> dict[str, str]:
    """The settings as the scripts see them: config file, then ``env_file``, then ``environ``."""
    env = read_env_file(env_file) if env_file and env_file.exists() else {}
    env.update({k: v for k, v in environ.items() if k.startswith("TOKENBRIDGE_")})
    path = config or default_config_path(env)
    return merged(env, read_config(path), path)
