# syntax=docker/dockerfile:1
#
# Event Runner image: the `runner` binary on a small Debian base, as a
# non-root user. Build:   docker build -t event-runner .
# With agent CLIs:        docker build --target with-agents -t event-runner:agents .
# Check:                  docker run --rm event-runner --version
# See docs/deploy.md.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY . .
# Only the two binaries; the WASM example plugins are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runner-plugins --bin runner --bin mcp-test-server \
 && install -D -m 0755 target/release/runner /out/runner \
 && install -D -m 0755 target/release/mcp-test-server /out/mcp-test-server

FROM debian:${DEBIAN}-slim AS runtime
# ca-certificates: TLS to MCP servers, Slack and model APIs. tini: reaps the
# agents' orphaned grandchildren and forwards SIGTERM. The shell stays: the
# agent sink runs AGENT_COMMAND with `sh -c`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 runner \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/event-runner --create-home --shell /usr/sbin/nologin runner
COPY --from=build /out/runner /out/mcp-test-server /usr/local/bin/
COPY pipeline.toml /etc/event-runner/pipeline.toml
USER 10001:10001
WORKDIR /var/lib/event-runner
ENV WORKSPACE_ROOT=/var/lib/event-runner/incidents \
    HOME=/var/lib/event-runner \
    LOG_FORMAT=json
# The admin server listens on loopback unless ADMIN_LISTEN says otherwise;
# a non-loopback address needs ADMIN_TOKEN (or ADMIN_TOKEN_FILE).
EXPOSE 9469
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/runner"]
CMD ["run", "--config", "/etc/event-runner/pipeline.toml"]

# Optional layer: the agent CLIs the presets call (claude, codex, gemini).
# They come from npm; pin versions for reproducible images.
FROM runtime AS with-agents
ARG CLAUDE_CODE_VERSION=latest
ARG CODEX_VERSION=latest
ARG GEMINI_CLI_VERSION=latest
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm git \
 && npm install -g --omit=dev \
      "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
      "@openai/codex@${CODEX_VERSION}" \
      "@google/gemini-cli@${GEMINI_CLI_VERSION}" \
 && npm cache clean --force \
 && rm -rf /var/lib/apt/lists/*
# kubectl for the agents' read-only investigation (the ServiceAccount's
# ClusterRole grants view without Secrets): install from your distribution
# or copy a pinned binary in a derived image.
USER 10001:10001
