# syntax=docker/dockerfile:1
# pgshard container image: built in the Rust image, run in Debian slim as a non-root user.
#
#   docker build -t pgshard .
#   docker run --rm -p 6432:6432 -p 9930:9930 \
#     -v "$PWD/shardmap.toml:/etc/pgshard/shardmap.toml:ro" pgshard
#
# The map is a mounted file (it holds the shard credentials, so it is not baked in); its
# `listen` (and `[server] metrics_listen`, for /metrics and /health) must bind 0.0.0.0 to
# be reachable from outside the container. Linted, not built, on the machine these files
# were written on (no container engine there).

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole tree: Cargo.toml declares [[test]] and [[bench]] targets whose files cargo
# requires even for `--bin`. The cache mounts (BuildKit) keep the crate registry and the
# compiled dependencies between builds; the binary is copied out of the cached target
# directory in the same step.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pgshard \
    && install -m 0755 target/release/pgshard /usr/local/bin/pgshard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pgshard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pgshard \
    && mkdir -p /etc/pgshard
COPY --from=build /usr/local/bin/pgshard /usr/local/bin/pgshard
# numeric, so that Kubernetes' runAsNonRoot can verify it
USER 10001:10001
# Postgres protocol; metrics and /health (when [server] metrics_listen is set)
EXPOSE 6432 9930
# No HEALTHCHECK: the slim image has no HTTP client. Probe GET /health on the metrics
# port from outside (Kubernetes readinessProbe), or pg_isready against 6432.
# SIGTERM drains: idle sessions are closed, transactions get up to 30 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pgshard", "serve"]
CMD ["-c", "/etc/pgshard/shardmap.toml"]
