"""The team token file (bridge/teamtoken.py): a running ``tokenbridge run`` re-reads it before every export, so
replacing it rotates the token without a restart; a broken file keeps the last good token. Real processes and a
real loopback OTLP receiver (HTTP and gRPC) that records the headers each export arrived with."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.teamtoken import TokenFile, headers_with_token
from tests._otlp_sink import Daemon, running_sink
from tests.conftest import ClaudeHome, assistant_line

OLD = "tok-old-0123456789abcdef"
NEW = "tok-new-fedcba9876543210"


def _bearer(sink) -> str | None:  # type: ignore[no-untyped-def]
    reqs = sink.requests()
    return reqs[-1].headers.get("authorization") if reqs else None


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_running_bridge_sends_the_token_file_as_it_changes(protocol, claude_home: ClaudeHome, cli_env, tmp_path):
    claude_home.append(claude_home.session_file(), assistant_line("msg_A", "req_A", output=187))
    token_file = tmp_path / "team-token"
    token_file.write_text(OLD + "\n")
    with running_sink(protocol) as sink:
        env = {
            **cli_env,
            **sink.env(),
            "TOKENBRIDGE_TEAM": "1",
            "TOKENBRIDGE_TEAM_TOKEN_FILE": str(token_file),
            "TOKENBRIDGE_EXPORT_INTERVAL": "0.3",
            # A stale token in the header and another header: the file's token wins, the other header stays.
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20stale-token-xyz,x-scope-orgid=team-7",
        }
        daemon = Daemon(env)
        try:
            daemon.wait_ready(30)
            sink.wait_until(lambda s: _bearer(s) == f"Bearer {OLD}")
            token_file.write_text(NEW + "\n")
            sink.wait_until(lambda s: _bearer(s) == f"Bearer {NEW}")
            assert sink.requests()[-1].headers["x-scope-orgid"] == "team-7"
            # A half-written file: the last good token goes on, one warning naming the file.
            token_file.write_text("")
            seen = len(sink.requests())
            sink.wait_until(lambda s: len(s.requests()) >= seen + 3)
            assert {r.headers["authorization"] for r in sink.requests()[seen:]} == {f"Bearer {NEW}"}
        finally:
            daemon.stop()
            daemon.close()
    err = daemon.stderr()
    assert err.count(f"team token file {token_file}: its first line is empty") == 1, err
    assert err.count("changed: exporting with the new token") == 1, err
    assert OLD not in err and NEW not in err and "stale-token-xyz" not in err


def test_token_file_keeps_the_last_good_token_and_reports_each_problem_once(tmp_path: Path, caplog):
    f = tmp_path / "team-token"
    f.write_text(OLD + "\r\n")
    tokens = TokenFile(f)
    assert tokens.current() == OLD
    with caplog.at_level(logging.INFO, logger="tokenbridge.export"):
        f.write_text("has space " + NEW)
        assert [tokens.current() for _ in range(3)] == [OLD] * 3
        f.unlink()
        assert tokens.current() == OLD
        f.write_text(NEW)
        assert tokens.current() == NEW
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "characters a header cannot carry" in m]) == 1
    assert len([m for m in messages if "cannot read it" in m]) == 1
    assert any("readable again" in m for m in messages)
    assert not any(OLD in m or NEW in m for m in messages)


def test_token_header_replaces_any_authorization_and_keeps_the_other_headers():
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "ignored=1",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "AUTHORIZATION=Basic%20abc,X-Scope-OrgID=t%207",
    }
    assert headers_with_token(env, NEW) == {"x-scope-orgid": "t 7", "authorization": f"Bearer {NEW}"}
    assert headers_with_token({}, NEW) == {"authorization": f"Bearer {NEW}"}
