# syntax=docker/dockerfile:1
# mokv as one executable on a small base image.
#
#   docker build -t mokv:0.1.0 .
#   docker run --rm mokv:0.1.0 --help
#
# Build stage: `deno task compile` (deno compile --allow-all --unstable-kv --unstable-net
# --output mokv main.ts) bakes the permissions, the unstable flags, the npm packages and the
# .proto texts into /app/mokv, which reads nothing from the source tree at run time.
FROM denoland/deno:2.9.6 AS build
WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src ./src
RUN deno install --frozen \
 && deno task compile \
 && ./mokv --version

# Final stage: Debian slim (glibc for the Deno runtime; bash runs the Helm chart's entrypoint
# and preStop scripts; curl lets the preStop hook ask the Kubernetes API for the replicas).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mokv \
 && useradd --system --uid 10001 --gid mokv --home-dir /var/lib/mokv --shell /usr/sbin/nologin mokv \
 && mkdir -p /var/lib/mokv /etc/mokv \
 && chown mokv:mokv /var/lib/mokv
COPY --from=build /app/mokv /usr/local/bin/mokv
USER 10001:10001
WORKDIR /var/lib/mokv
ENV HOME=/var/lib/mokv
# rpc-port (gRPC + Raft), bind-addr (UDP gossip), metrics-port (/metrics, /healthz)
EXPOSE 8400/tcp 8401/udp 4000/tcp
VOLUME /var/lib/mokv
ENTRYPOINT ["/usr/local/bin/mokv"]
CMD ["--help"]
