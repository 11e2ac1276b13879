# syntax=docker/dockerfile:1
# Build: the same `go build` the tests exercise, static, no cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/apns-worker ./cmd/apns-worker

# Run: distroless static, non-root, CA roots included for api.push.apple.com.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/apns-worker /usr/local/bin/apns-worker
USER nonroot:nonroot
ENV APNS_WORKER_HTTP_ADDR=0.0.0.0:8080 \
    APNS_WORKER_EMBEDDED_DATA_DIR=/data/nats
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/apns-worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/apns-worker"]
