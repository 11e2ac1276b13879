package config

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// LogValue implements slog.LogValuer: every setting, with secrets and the
// user information of URLs redacted, and file paths absolute.
func (c Config) LogValue() slog.Value {
	n, a := c.NATS, c.APNs
	urls := make([]string, len(n.URLs))
	for i, u := range n.URLs {
		urls[i] = logURL(u)
	}
	attrs := []slog.Attr{
		slog.Group("nats",
			slog.Any("urls", urls),
			slog.String("creds", absPath(n.CredsFile)),
			slog.String("nkey", absPath(n.NKeyFile)),
			slog.String("user", n.User),
			slog.Any("password", n.Password),
			slog.Any("token", n.Token),
			slog.String("tls_ca", absPath(n.TLSCAFile)),
			slog.String("tls_cert", absPath(n.TLSCertFile)),
			slog.String("tls_key", absPath(n.TLSKeyFile)),
			dur("connect_timeout", n.ConnectTimeout),
			dur("reconnect_wait", n.ReconnectWait),
			slog.String("name", n.Name)),
	}
	if len(n.URLs) == 0 {
		attrs = append(attrs, slog.Group("embedded",
			slog.String("data_dir", absPath(c.Embedded.DataDir)),
			slog.String("listen", c.Embedded.Listen)))
	}
	attrs = append(attrs,
		slog.Group("jobs",
			slog.String("stream", c.Jobs.Stream),
			slog.String("subject", c.Jobs.Subject),
			slog.String("consumer", c.Jobs.Consumer),
			dur("ack_wait", c.Jobs.AckWait),
			slog.Int("max_deliver", c.Jobs.MaxDeliver),
			slog.Any("backoff", durations(c.Jobs.Backoff))),
		slog.Group("events",
			slog.String("stream", c.Events.Stream),
			dur("max_age", c.Events.MaxAge),
			slog.String("subject", c.Events.Subject),
			slog.Bool("receipts", c.Events.Receipts)),
		slog.Group("apns",
			slog.String("mode", string(a.Mode)),
			slog.String("environment", string(a.Environment)),
			slog.String("addr", logURL(a.Addr)),
			slog.String("ca_file", absPath(a.CAFile)),
			slog.String("cert_file", absPath(a.CertFile)),
			slog.Any("cert_password", a.CertPassword),
			slog.String("key_file", absPath(a.KeyFile)),
			slog.String("p8_file", absPath(a.P8File)),
			slog.String("key_id", a.KeyID),
			slog.String("team_id", a.TeamID),
			slog.String("topic", a.Topic),
			slog.Int("conns", a.Conns),
			dur("assumed_delivered", a.AssumedDelivered),
			dur("confirm_after", a.ConfirmAfter),
			dur("idle_timeout", a.IdleTimeout),
			slog.Int("max_payload", a.MaxPayload),
			dur("request_timeout", a.RequestTimeout)),
		slog.Group("feedback",
			slog.String("addr", c.Feedback.Addr),
			dur("interval", c.Feedback.Interval)),
		slog.Int("replicas", c.Replicas),
		slog.Int("max_in_flight", c.MaxInFlight),
		slog.String("http_addr", c.HTTPAddr),
		slog.Group("log",
			slog.String("level", c.Log.Level.String()),
			slog.String("format", string(c.Log.Format))),
		dur("shutdown_grace", c.ShutdownGrace),
		slog.String("procs", string(c.Procs)),
		slog.String("socket_calls", string(c.SocketCalls)),
		slog.Int("gc_floor_mib", c.GCFloorMiB),
	)
	return slog.GroupValue(attrs...)
}

// String renders LogValue as logfmt, so printing a Config reveals no secret.
func (c Config) String() string {
	var b strings.Builder
	h := slog.NewTextHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)
	r.AddAttrs(c.LogValue().Group()...)
	_ = h.Handle(context.Background(), r)
	return strings.TrimSuffix(b.String(), "\n")
}

// logURL hides a URL's user information, which may hold a password or a
// token.
func logURL(s string) string { return redactURL(s) }

// absPath makes a set path absolute, so the log says which file the
// worker reads whatever its working directory.
func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func durations(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// dur logs d as "1m30s" in every handler (slog.Duration is nanoseconds in
// JSON).
func dur(key string, d time.Duration) slog.Attr { return slog.String(key, d.String()) }
