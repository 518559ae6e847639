"""The personal dashboards on the team server (grafana/dashboards-team/, docs/team.md): AI usage overview, Claude
Code and Claude Code activity, built by grafana/generate_dashboards.py's own builders (passed in as `g`) in its team
mode, so no query is copied. What changes there (see `g.window`, `g.series`, `g.dedup`):

* every selector starts with `user=~"$user",machine=~"$machine"` (two more variables, multi, All = `.*`, which also
  matches native series without a `machine` label);
* every increase is an exact window of VictoriaMetrics' `increase_pure` over all time (Prometheus 3's `anchored`
  does not parse there), in instant and range queries alike;
* Claude Code's native telemetry gives way to the bridge per user and model, and providers' billing APIs are left
  out of the totals (they are organisation-wide): the rule of bridge.central.team_query and the Team usage
  dashboard.

Spend control is not among them: it reads the personal Prometheus' recording rules (prometheus/rules/spend.yml),
which the team server does not evaluate (its vmalert rules, prometheus/team/rules.yml, record other series).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

TEAM_TEXT = (
    "**Team server: each request counted once per user.** Pick users and machines above (All by default). Within "
    "a user, per model, the bridge's series are preferred (transcripts, Claude Code's request events, the stats "
    "cache, Codex, Gemini CLI) and native telemetry counts only for models that user's bridge has not seen; other "
    "tools are added. Providers' billing APIs are organisation-wide (they carry the user whose bridge polled them), "
    "so they are **not** in these totals; *Billed cost* shows them alone. Native telemetry has no `machine` unless "
    "`telemetry.sh --team` set it: picking a machine may leave it out. The *per source* panels are not additive."
)
# file name -> (builder in generate_dashboards, the variables' metric)
VARIANTS = {
    "ai-usage-overview.json": ("overview", "claude_code_token_usage_tokens_total"),
    "claude-code.json": ("claude_code", "claude_code_token_usage_tokens_total"),
    "claude-code-activity.json": ("activity", "claude_code_api_request_count_total"),
}


@contextlib.contextmanager
def _team_mode(g: Any) -> Iterator[None]:
    g._TEAM["on"] = True
    try:
        yield
    finally:
        g._TEAM["on"] = False


def variant(g: Any, builder: str, metric: str) -> dict:
    with _team_mode(g):
        d: dict = getattr(g, builder)()
    d["uid"] = d["uid"].replace("tokenbridge-", "tokenbridge-team-", 1)
    d["title"] += " (team)"
    d["tags"] = [*d["tags"], "team"]
    users = [g.variable("user", "User", metric), g.variable("machine", "Machine", metric)]
    d["templating"]["list"] = users + d["templating"]["list"]
    for p in d["panels"]:
        if p["type"] == "text" and p["title"] == "How these numbers are counted":
            p["options"]["content"] = TEAM_TEXT
    return d


def variants(g: Any) -> dict[str, dict]:
    return {name: variant(g, builder, metric) for name, (builder, metric) in VARIANTS.items()}
