# Multi-stage build of pgshard. Untested here (no Docker engine on the build machine);
# kept minimal. Run: docker run -v $PWD/shardmap.toml:/etc/pgshard/shardmap.toml -p 6432:6432 pgshard
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgshard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 pgshard
COPY --from=build /src/target/release/pgshard /usr/local/bin/pgshard
USER pgshard
EXPOSE 6432
ENTRYPOINT ["pgshard", "serve", "-c", "/etc/pgshard/shardmap.toml"]
