"""The typed shape of a Claude Code transcript line, as far as a usage record needs it (msgspec).

Imported only by ``_claude_fast.available()``: it needs msgspec, an optional speed-up.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Split(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = 0
    ephemeral_1h_input_tokens: int | None = 0


class ServerTools(msgspec.Struct):
    web_search_requests: int | None = 0
    web_fetch_requests: int | None = 0


class Usage(msgspec.Struct):
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cache_read_input_tokens: int | None = 0
    cache_creation_input_tokens: int | None = 0
    cache_creation: Split | None = None
    speed: str | None = None
    server_tool_use: ServerTools | None = None


class Message(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: Usage | None = None


class Line(msgspec.Struct):
    type: str | None = None
    isSidechain: Any = None  # the JSON key; compared with ``is True`` like parse_line
    message: Message | None = None
    timestamp: str | None = None
    requestId: str | None = None
    costUSD: int | float | None = None
    sessionId: str | None = None
    cwd: str | None = None


def decoder() -> tuple[Any, tuple[type[Exception], ...]]:
    """The line decoder and the errors it raises for a line it cannot take."""
    return msgspec.json.Decoder(Line).decode, (msgspec.DecodeError, msgspec.ValidationError)
