# syntax=docker/dockerfile:1
# Build: the same `go build` the tests exercise, static, no cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/apns-worker ./cmd/apns-worker \
 && mkdir -p /out/data/nats

# Run: distroless static, non-root, CA roots included for api.push.apple.com.
# `docker run -p 4222:4222 -v apns-data:/data IMAGE` works alone: with no
# APNS_WORKER_NATS_URL the worker runs an embedded nats-server, stores
# JetStream in /data/nats (a volume the non-root user owns; Docker seeds a
# new named volume with that ownership) and listens on 0.0.0.0:4222 so
# publishers outside the container reach it. That listener has NO
# authentication or TLS: publish the port to trusted hosts only (e.g.
# -p 127.0.0.1:4222:4222), or set APNS_WORKER_NATS_URL for a secured NATS.
# The worker logs a loud warning when it listens beyond loopback.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/apns-worker /usr/local/bin/apns-worker
COPY --from=build --chown=65532:65532 /out/data /data
USER nonroot:nonroot
ENV APNS_WORKER_HTTP_ADDR=0.0.0.0:8080 \
    APNS_WORKER_EMBEDDED_DATA_DIR=/data/nats \
    APNS_WORKER_EMBEDDED_LISTEN=0.0.0.0:4222
VOLUME /data
EXPOSE 4222 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/apns-worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/apns-worker"]
