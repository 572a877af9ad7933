# Meridian shard image: `meridian` (serve, migrate) and the load-test tools.
#
#   docker build -t meridian .
#   docker run -p 7000:7000 meridian          # embedded SQLite, one shard
#
# Build stage: the workspace, compiled once with the committed Cargo.lock.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meridian-server -p meridian-loadtest \
 && install -D -m 0755 target/release/meridian target/release/meridian-loadtest \
      target/release/meridian-baseline -t /out/

# Runtime stage: Debian slim with curl for the health checks, run as a
# non-root user. Migrations are embedded in the binary.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/meridian --create-home meridian
COPY --from=build /out/ /usr/local/bin/
USER meridian
WORKDIR /var/lib/meridian
# Inside a container the ports must listen on every interface; publish only
# the game port, and keep the ops port on a private network.
ENV GAME_ADDR=0.0.0.0:7000 \
    OPS_ADDR=0.0.0.0:9100 \
    DATA_DIR=/var/lib/meridian/data \
    LOG_FORMAT=json
EXPOSE 7000 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:9100/healthz || exit 1
ENTRYPOINT ["meridian"]
CMD ["serve"]
