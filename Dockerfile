# The one image every Kubernetes piece of datamon uses (the CSI node plugin and controller,
# and `datamon` itself for jobs): `datamon` with fuse3.
#
#   docker build -t datamon:latest .
#
# Build stage: the workspace, release profile, locked dependencies.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p datamon-cli \
 && cp target/release/datamon /usr/local/bin/datamon

# Runtime stage: fuse3 (fusermount3, the FUSE library's helpers) and CA certificates for the
# cloud stores.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/datamon /usr/local/bin/datamon
ENTRYPOINT ["/usr/local/bin/datamon"]
CMD ["--help"]
