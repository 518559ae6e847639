"""Settings: defaults, then the config file, then environment variables, then CLI flags.

Config errors fail fast with the exact key (``config.toml: export.interval_seconds: ...``).
"""

from __future__ import annotations

import getpass
import math
import os
import re
import socket
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import platformdirs

from bridge import alerts
from bridge.errors import ConfigError
from bridge.teamtoken import read_token

_PROVIDERS = ("openai", "anthropic", "openrouter", "moonshot", "deepseek")
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "export": {
        "interval_seconds": (int, float),
        "include_session_id": bool,
        "prometheus_port": int,
        "otlp": bool,
        "include_project": bool,
    },
    "sources": {"enabled": list},
    "pricing": {"overrides": str, "refresh": bool},
    # Provider APIs: base URLs, poll intervals, and the *name* of the environment variable that
    # holds each key (a secret never goes into the config file).
    "providers": {
        **{f"{p}_{k}": t for p in _PROVIDERS for k, t in (("base_url", str), ("key_env", str))},
        **{f"{p}_poll_interval_seconds": (int, float) for p in _PROVIDERS},
        "openrouter_management_key_env": str,
        "moonshot_currency": str,
    },
    "terminal": {"patterns": list},
    # Budgets, alert levels and the webhook (values checked by bridge.alerts); plan prices (bridge.plans).
    **alerts.schema(),
    "plans": {"pro": (int, float), "max5": (int, float), "max20": (int, float)},
    # Team mode (docs/team.md): the `user` and `machine` resource attributes on the exported series.
    "team": {"enabled": bool, "user": str, "machine": str, "token_file": str},
}

# A label value on every series of a user or machine: the team collector's user-name alphabet (collector/teamauth).
_TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True, slots=True)
class TeamIdentity:
    """Who and where, in team mode. The central collector replaces ``user`` with the user its token
    belongs to; ``machine`` is taken as sent (one series set per machine)."""

    user: str
    machine: str
    # The bearer token's file, re-read before every export (bridge/teamtoken.py); None: the token, if any, is
    # the static one in OTEL_EXPORTER_OTLP_HEADERS.
    token_file: Path | None = None


@dataclass(slots=True)
class Settings:
    state_dir: Path
    config_path: Path | None = None
    interval_s: float = 60.0
    include_session_id: bool = False
    include_project: bool = False  # the ``project`` metric attribute (cardinality: one per project)
    prometheus_port: int | None = None
    otlp: bool = True
    enabled_sources: tuple[str, ...] | None = None  # None: every source enabled by default
    prices_path: Path | None = None
    rescan_s: float = 600.0
    env: dict[str, str] = field(default_factory=dict)
    providers: dict[str, Any] = field(default_factory=dict)  # the config file's [providers] table
    terminal_patterns: list[Any] = field(default_factory=list)  # user patterns (bridge.terminal)
    # Budgets and alert settings by environment variable name, file values under the environment's (bridge.alerts).
    alert_values: dict[str, str] = field(default_factory=dict)
    plan_prices: dict[str, Decimal] = field(default_factory=dict)  # [plans]: USD per month (bridge.plans)
    team: TeamIdentity | None = None  # team mode on: user and machine attributes
    # The OTLP/HTTP receiver of ``tokenbridge run`` for Claude Code's events (bridge/receiver.py);
    # None: off. Loopback unless set otherwise (in Docker the collector reaches it by service name).
    events_port: int | None = 14319
    events_host: str = "127.0.0.1"
    # The receiver's shared token (TOKENBRIDGE_EVENTS_TOKEN): required beyond loopback. Never shown (repr).
    events_token: str | None = field(default=None, repr=False)
    # ``tokenbridge run`` refreshes the price table through genai-prices' update mechanism
    # (bridge/price_data.py); None URL: genai-prices' own.
    prices_refresh: bool = True
    prices_url: str | None = None


def default_state_dir(env: dict[str, str]) -> Path:
    explicit = env.get("TOKENBRIDGE_STATE_DIR", "").strip()
    if explicit:
        return Path(os.path.expanduser(explicit))
    return Path(platformdirs.user_state_dir("tokenbridge"))


def default_overrides_path() -> Path:
    """The price override file: ``$TOKENBRIDGE_PRICES_FILE``, else ``<user config dir>/prices.toml``."""
    env = os.environ.get("TOKENBRIDGE_PRICES_FILE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("tokenbridge")) / "prices.toml"


def default_config_path(env: dict[str, str]) -> Path:
    return alerts.default_config_path(env)  # the scripts find the file the same way


def _bool_env(env: dict[str, str], key: str) -> bool | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true/false, got {raw!r}")


# Both intervals: at least 0.1 s (less spins the CPU and floods the collector; tests use 0.5 s), at most
# a day (longer looks like a dead exporter to any alert on staleness).
INTERVAL_RANGE = (0.1, 86400.0)


def seconds(key: str, raw: object) -> float:
    """An interval in seconds from a file, variable or flag: finite and within ``INTERVAL_RANGE``."""
    if isinstance(raw, bool):  # TOML true is an int to Python
        raise ConfigError(key, f"not a number of seconds: {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a number of seconds: {raw!r}") from None
    lo, hi = INTERVAL_RANGE
    if not (math.isfinite(value) and lo <= value <= hi):  # also false for nan
        raise ConfigError(key, f"must be a finite number from {lo:g} to {hi:g} seconds, got {raw}")
    return value


def _seconds_env(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if not raw:
        return default
    return seconds(key, raw.strip())


def _port_env(env: dict[str, str], key: str, default: int | None) -> int | None:
    raw = env.get(key, "").strip()
    return port_value(key, raw) if raw else default


def port_value(key: str, raw: str) -> int | None:
    """A TCP port (0: any free one), or None for "off"."""
    raw = raw.strip()
    if raw.lower() in ("off", "none", "false", "no"):
        return None
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(key, f"expected a TCP port (0-65535) or 'off', got {raw!r}")
    return int(raw)


# Public name for source modules (poll intervals are read the same way).
seconds_env = _seconds_env


def _read_file(path: Path) -> dict[str, Any]:
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return {}
    import tomllib  # only with a config file: a one-off sync without one skips this 7 ms import

    try:
        with fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    for section, body in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"{path.name}: {section}", f"unknown section (known: {', '.join(_SCHEMA)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path.name}: {section}", "must be a table")
        for key, value in body.items():
            want = _SCHEMA[section].get(key)
            if want is None:
                raise ConfigError(
                    f"{path.name}: {section}.{key}", f"unknown key (known: {', '.join(_SCHEMA[section])})"
                )
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{path.name}: {section}.{key}", f"wrong type {type(value).__name__}")
    return data


def load(env: dict[str, str] | None = None, state_dir: Path | None = None, config: Path | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    cfg_path = config or default_config_path(env)
    data = _read_file(cfg_path)
    s = Settings(state_dir=state_dir or default_state_dir(env), config_path=cfg_path, env=env)
    export = data.get("export", {})
    if "interval_seconds" in export:
        s.interval_s = seconds(f"{cfg_path.name}: export.interval_seconds", export["interval_seconds"])
    s.include_session_id = bool(export.get("include_session_id", False))
    s.include_project = bool(export.get("include_project", False))
    s.prometheus_port = export.get("prometheus_port")
    s.otlp = bool(export.get("otlp", True))
    enabled = data.get("sources", {}).get("enabled")
    if enabled is not None:
        from bridge.sources import _registry

        try:
            s.enabled_sources = _registry.resolve([str(n) for n in enabled])
        except ValueError as exc:
            known = ", ".join(_registry.selectors())
            raise ConfigError(
                f"{cfg_path.name}: sources.enabled", f"unknown source {exc.args[0]!r} (known: {known})"
            ) from None
    s.providers = dict(data.get("providers", {}))
    for key, value in s.providers.items():
        if key.endswith("_poll_interval_seconds") and not (isinstance(value, int | float) and 0 < value < float("inf")):
            raise ConfigError(f"{cfg_path.name}: providers.{key}", "must be > 0 seconds")
    s.prices_refresh = bool(data.get("pricing", {}).get("refresh", True))
    overrides = data.get("pricing", {}).get("overrides")
    if overrides:
        s.prices_path = Path(os.path.expanduser(overrides))
    patterns = data.get("terminal", {}).get("patterns")
    if patterns:
        from bridge.terminal import load_patterns

        load_patterns(patterns, f"{cfg_path.name}: terminal.patterns")  # fail fast, naming the entry
        s.terminal_patterns = patterns
    s.interval_s = _seconds_env(env, "TOKENBRIDGE_EXPORT_INTERVAL", s.interval_s)
    s.rescan_s = _seconds_env(env, "TOKENBRIDGE_RESCAN_INTERVAL", s.rescan_s)
    session = _bool_env(env, "TOKENBRIDGE_INCLUDE_SESSION_ID")
    if session is not None:
        s.include_session_id = session
    project = _bool_env(env, "TOKENBRIDGE_INCLUDE_PROJECT")
    if project is not None:
        s.include_project = project
    s.alert_values = alerts.merged(env, data, cfg_path)
    for plan, price in data.get("plans", {}).items():
        if not (math.isfinite(price) and price > 0):
            raise ConfigError(f"{cfg_path}: plans.{plan}", f"must be a price in USD per month > 0, got {price}")
        s.plan_prices[plan] = Decimal(str(price))
    s.events_port = _port_env(env, "TOKENBRIDGE_EVENTS_PORT", s.events_port)
    s.events_host = env.get("TOKENBRIDGE_EVENTS_HOST", "").strip() or s.events_host
    s.events_token = env.get("TOKENBRIDGE_EVENTS_TOKEN", "").strip() or None  # checked by the receiver (run)
    refresh = _bool_env(env, "TOKENBRIDGE_PRICES_REFRESH")
    if refresh is not None:
        s.prices_refresh = refresh
    s.prices_url = env.get("TOKENBRIDGE_PRICES_URL", "").strip() or None
    prices_env = env.get("TOKENBRIDGE_PRICES_FILE")
    if prices_env:
        s.prices_path = Path(os.path.expanduser(prices_env))
    s.team = _team(env, data.get("team", {}), cfg_path.name)
    return s


def _team(env: dict[str, str], table: dict[str, Any], file: str) -> TeamIdentity | None:
    """Team mode from ``TOKENBRIDGE_TEAM`` (else ``[team] enabled``); names from ``TOKENBRIDGE_USER`` /
    ``TOKENBRIDGE_MACHINE`` (else the file, else the login name and the host name)."""
    on = _bool_env(env, "TOKENBRIDGE_TEAM")
    if not (table.get("enabled", False) if on is None else on):
        return None
    names: dict[str, str] = {}
    for attr, var, default in (("user", "TOKENBRIDGE_USER", _login), ("machine", "TOKENBRIDGE_MACHINE", _host)):
        if env.get(var, "").strip():
            key, value = var, env[var].strip()
        elif attr in table:
            key, value = f"{file}: team.{attr}", str(table[attr]).strip()
        else:
            key, value = var, default()
        if not _TEAM_NAME.fullmatch(value):
            raise ConfigError(key, f"{value!r} is not a usable {attr} name: 1-64 of A-Z a-z 0-9 . _ @ -")
        names[attr] = value
    return TeamIdentity(user=names["user"], machine=names["machine"], token_file=_team_token_file(env, table, file))


# The file telemetry.sh --team and scripts/team-headers.sh read when TOKENBRIDGE_TEAM_TOKEN_FILE is unset.
DEFAULT_TEAM_TOKEN_FILE = "~/.config/tokenbridge/team-token"  # noqa: S105 (a path, not a token)


def _team_token_file(env: dict[str, str], table: dict[str, Any], file: str) -> Path | None:
    """``TOKENBRIDGE_TEAM_TOKEN_FILE``, else ``[team] token_file``, else the default file when it exists and
    ``OTEL_EXPORTER_OTLP_[METRICS_]HEADERS`` carries no Authorization (an explicit header keeps working)."""
    if env.get("TOKENBRIDGE_TEAM_TOKEN_FILE", "").strip():
        key, raw = "TOKENBRIDGE_TEAM_TOKEN_FILE", env["TOKENBRIDGE_TEAM_TOKEN_FILE"].strip()
    elif str(table.get("token_file", "")).strip():
        key, raw = f"{file}: team.token_file", str(table["token_file"]).strip()
    else:
        headers = env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
        default = Path(env.get("HOME") or os.path.expanduser("~")) / DEFAULT_TEAM_TOKEN_FILE.removeprefix("~/")
        if "authorization" in headers.lower() or not default.is_file():
            return None
        key, raw = "TOKENBRIDGE_TEAM_TOKEN_FILE", str(default)
    path = Path(os.path.expanduser(raw)).absolute()  # `tokenbridge run` may be started from anywhere
    try:
        read_token(path)
    except ValueError as exc:
        raise ConfigError(key, f"team token file {path}: {exc}") from None
    return path


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def _host() -> str:
    # The short host name: `laptop`, not `laptop.corp.example.com` (one label per machine either way).
    return (socket.gethostname() or "unknown").split(".", 1)[0]
