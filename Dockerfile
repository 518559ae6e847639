# tokenbridge bridge image: reads Claude Code's local files (mounted read-only) and exports OTLP to the collector.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENBRIDGE_STATE_DIR=/var/lib/tokenbridge

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && rm -rf /src

# Runs as an unprivileged user. docker-compose.yml overrides the uid with the host user's (TOKENBRIDGE_UID, written
# by scripts/init.sh) so files under ~/.claude with mode 600 stay readable; the state dir is writable by any uid.
RUN useradd --system --uid 10001 --home-dir /var/lib/tokenbridge tokenbridge \
    && mkdir -p /var/lib/tokenbridge && chmod 1777 /var/lib/tokenbridge
ENV HOME=/var/lib/tokenbridge
USER tokenbridge
WORKDIR /var/lib/tokenbridge
VOLUME ["/var/lib/tokenbridge"]

ENTRYPOINT ["tokenbridge"]
CMD ["run"]
