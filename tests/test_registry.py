"""The source registry: a new source is one module exporting ``SPECS``."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge.sources as sources_pkg
from bridge import app, config
from bridge.errors import ConfigError
from bridge.ledger import Ledger
from bridge.sources import _registry

PLUGIN = '''
"""A source written for this test: one module, nothing else changed."""
from datetime import UTC, datetime

from bridge.record import Tokens, UsageRecord
from bridge.sources._base import BaseSource, ScanStats, SourceStatus
from bridge.sources._registry import SourceSpec


class Fake(BaseSource):
    name = "fake_usage_api"

    def status(self):
        return SourceStatus(self.name, True, True, [], 0)

    def scan(self, ledger, pricer, since=None, progress=None, paths=None):
        rec = UsageRecord(self.name, "openai", "gpt-5", datetime(2026, 3, 2, tzinfo=UTC), "fake:h10",
                          Tokens(input=100, output=10), requests=4, replace=True)
        r = ledger.commit([rec], pricer)
        return ScanStats(self.name, records=1, new_requests=r.new_requests)


SPECS = (
    SourceSpec("fake_usage_api", "polled", lambda s: Fake(), "a test source", group="fake", default_enabled=False),
)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    extra = tmp_path / "plugins"
    extra.mkdir()
    (extra / "fake_usage.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.setattr(sources_pkg, "__path__", [*sources_pkg.__path__, str(extra)])
    _registry.specs.cache_clear()
    yield extra
    _registry.specs.cache_clear()
    sys.modules.pop("bridge.sources.fake_usage", None)


def test_every_public_module_in_sources_is_registered_once():
    modules = sorted(p.stem for p in Path(sources_pkg.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    registered = {s.factory.__module__.rsplit(".", 1)[-1] for s in _registry.specs()}
    assert set(modules) <= registered
    assert len(_registry.names()) == len(set(_registry.names()))
    assert _registry.names()[:2] == ("claude_transcripts", "claude_stats_cache")  # ingest order


def test_a_new_source_is_one_module_and_every_entry_point_sees_it(plugin_dir, tmp_path):
    assert "fake_usage_api" in _registry.names()
    assert _registry.resolve(["fake"]) == ("fake_usage_api",)  # the group selects it
    settings = config.load(env={"TOKENBRIDGE_STATE_DIR": str(tmp_path / "state")}, config=tmp_path / "none.toml")
    assert "fake_usage_api" not in [s.name for s in app.select_sources(settings)]  # off by default
    result = app.sync(settings, ["fake"], export=False)
    assert [s.source for s in result.stats] == ["fake_usage_api"]
    with Ledger.open(settings.state_dir) as led:
        assert led.request_count() == 4
        assert led.health()["fake_usage_api"].last_error is None
    names = [r["name"] for r in app.source_rows(settings)]
    assert "fake_usage_api" in names


def test_config_file_enables_a_group_and_names_the_key_for_an_unknown_one(plugin_dir, tmp_path):
    cfg = tmp_path / "tokenbridge.toml"
    cfg.write_text('[sources]\nenabled = ["fake", "claude_transcripts"]\n')
    s = config.load(env={}, state_dir=tmp_path, config=cfg)
    assert s.enabled_sources == ("claude_transcripts", "fake_usage_api")
    cfg.write_text('[sources]\nenabled = ["nope"]\n')
    with pytest.raises(ConfigError) as err:
        config.load(env={}, state_dir=tmp_path, config=cfg)
    assert "tokenbridge.toml: sources.enabled" in str(err.value) and "'nope'" in str(err.value)


def test_unknown_source_on_the_command_line_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        app.resolve_selection(["claude", "nope"])
    assert str(err.value).startswith("--source: unknown source 'nope' (known: ")
    assert "claude, claude_stats_cache, claude_transcripts" in str(err.value)


def test_a_source_module_without_specs_is_refused_by_name(tmp_path, monkeypatch):
    extra = tmp_path / "broken"
    extra.mkdir()
    (extra / "nospecs.py").write_text("X = 1\n")
    monkeypatch.setattr(sources_pkg, "__path__", [*sources_pkg.__path__, str(extra)])
    _registry.specs.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"bridge\.sources\.nospecs is a source module without SPECS"):
            _registry.specs()
    finally:
        _registry.specs.cache_clear()
        sys.modules.pop("bridge.sources.nospecs", None)
