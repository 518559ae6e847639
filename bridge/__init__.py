"""tokenbridge: AI coding usage from local files and provider APIs, exported as Claude Code's OTLP metrics."""

__version__ = "0.1.0"
