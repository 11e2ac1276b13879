package worker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/jetpush/apns-worker/config"
	"github.com/jetpush/apns-worker/internal/rawconn"
)

// connectNATS connects to the configured servers, or, with no URL set,
// starts an embedded nats-server with JetStream and connects to it. The
// first connection is retried with back-off for NATS.ConnectTimeout; every
// dead end is a *DeadEnd naming its variable, and ctx ends the wait at
// once. The returned close drains the connection within timeout, then
// stops the embedded server and releases its data dir.
//
// The connection's asynchronous errors go to faults (which may be nil)
// first; those it does not take are logged at WARN.
func connectNATS(ctx context.Context, cfg *config.Config, log *slog.Logger, faults *natsFaults) (*nats.Conn, func(timeout time.Duration) error, error) {
	n := cfg.NATS
	var closing atomic.Bool
	opts := []nats.Option{
		nats.Name(n.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(n.ReconnectWait),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if closing.Load() || err == nil {
				return // our own drain or close: not news
			}
			log.Warn("nats disconnected", slog.Any("error", err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", slog.String("url", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if faults.report(err) {
				return
			}
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("nats async error", slog.String("subject", subj), slog.Any("error", err))
		}),
	}
	stopEmbedded := func() {}
	url := strings.Join(n.URLs, ",")
	timeout := n.ConnectTimeout
	if url == "" {
		ns, stop, err := startEmbedded(ctx, cfg.Embedded, log)
		if err != nil {
			return nil, nil, err
		}
		stopEmbedded = stop
		url = ns.ClientURL()
		timeout = 5 * time.Second // our own server, already ready
	} else {
		auth, err := authOptions(n)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, auth...)
	}
	start := time.Now()
	nc, err := connectRetry(ctx, url, n, timeout, opts, cfg.SocketCalls == config.SocketCallsDirect, log)
	if err != nil {
		stopEmbedded()
		return nil, nil, err
	}
	stepDone(log, "nats connected", "APNS_WORKER_NATS_URL", nc.ConnectedUrlRedacted(), start)
	return nc, func(timeout time.Duration) error {
		closing.Store(true)
		var err error
		if nc.IsReconnecting() {
			// NATS is down: nothing can be drained. The consumer's stop
			// said what it could not flush; its jobs come back to a
			// worker after ACK_WAIT.
			unsent, _ := nc.Buffered()
			log.Warn("nats not connected at stop; closing without a drain", slog.Int("unsent_bytes", unsent))
			nc.Close()
		} else {
			err = DrainNATS(nc, timeout)
		}
		stopEmbedded()
		return err
	}, nil
}

// connectRetry connects to url, retrying with back-off (100 ms doubling to
// 2 s) while the servers are unreachable, for timeout at most; with direct,
// its connections make direct socket calls (directDialer). Refused
// credentials and certificates are dead ends at once: retrying cannot cure
// them.
func connectRetry(ctx context.Context, url string, n config.NATS, timeout time.Duration, opts []nats.Option, direct bool, log *slog.Logger) (*nats.Conn, error) {
	retry := newStartupRetry(timeout)
	for attempt := 1; ; attempt++ {
		dial := min(2*time.Second, max(retry.left(), 500*time.Millisecond))
		o := append(opts[:len(opts):len(opts)], nats.Timeout(dial))
		if direct {
			o = append(o, nats.SetCustomDialer(&directDialer{net.Dialer{Timeout: dial}}))
		}
		nc, err := nats.Connect(url, o...)
		if err == nil {
			return nc, nil
		}
		if v, val, ok := refusedBy(err, n); ok {
			return nil, deadEnd(v, val, fmt.Errorf("nats server at %s refused the connection: %w", url, err))
		}
		var load *loadError
		if errors.As(err, &load) {
			return nil, deadEnd(load.v, load.value, fmt.Errorf("cannot load it to connect to %s: %w", url, load.err))
		}
		if alert, ok := certAlert(err); ok {
			return nil, clientCertRefusal(n, url, alert, err)
		}
		if closedAfterTLSHandshake(err) {
			// Whether the server refused the client certificate, nats.go
			// may not have read: ask the server again, only listening.
			if at, refusal := probeClientCert(n, strings.Split(url, ","), dial); refusal != nil {
				alert, _ := certAlert(refusal)
				return nil, clientCertRefusal(n, at, alert, fmt.Errorf("%w (then, asked again: %w)", err, refusal))
			}
		}
		left := retry.left()
		if left <= 0 {
			return nil, deadEnd("APNS_WORKER_NATS_URL", url, fmt.Errorf("no NATS server reachable within %s (APNS_WORKER_NATS_CONNECT_TIMEOUT), %d attempts: %w", timeout, attempt, err))
		}
		pause := retry.pause()
		log.Warn("nats not reachable yet, retrying", slog.String("var", "APNS_WORKER_NATS_URL"), slog.String("value", url),
			slog.Int("attempt", attempt), slog.String("retry_in", pause.String()),
			slog.String("gives_up_in", left.Round(time.Second).String()), slog.Any("error", err))
		if !retry.sleep(ctx, pause) {
			return nil, fmt.Errorf("nats: stopped while connecting to %s: %w", url, context.Cause(ctx))
		}
	}
}

// refusedBy tells a refusal (credentials, certificates) from an
// unreachable server, and names the variable that holds what was refused.
func refusedBy(err error, n config.NATS) (v, value string, refused bool) {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		host      x509.HostnameError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		switch {
		case n.CredsFile != "":
			return "APNS_WORKER_NATS_CREDS", n.CredsFile, true
		case n.NKeyFile != "":
			return "APNS_WORKER_NATS_NKEY", n.NKeyFile, true
		case n.User != "":
			return "APNS_WORKER_NATS_USER", n.User, true
		case n.Token != "":
			return "APNS_WORKER_NATS_TOKEN", "[redacted]", true
		}
		return "APNS_WORKER_NATS_URL", strings.Join(n.URLs, ","), true
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &host):
		return "APNS_WORKER_NATS_TLS_CA", n.TLSCAFile, true
	}
	return "", "", false
}

// DrainNATS flushes acks and publishes, then closes the connection, waiting
// up to timeout for it to close.
func DrainNATS(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("nats: drain: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return errors.New("nats: drain timed out")
	}
}

const listenVar = "APNS_WORKER_EMBEDDED_LISTEN"

// warnIfExposed logs, loudly, that the embedded server has no
// authentication or TLS when listen (host:port) is reachable beyond this
// host: any address but a loopback one (0.0.0.0 in the container image).
func warnIfExposed(log *slog.Logger, listen string) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if host == "localhost" {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return
	}
	log.Warn("EMBEDDED NATS LISTENS BEYOND THIS HOST WITHOUT AUTHENTICATION OR TLS: anyone who reaches it can publish jobs and read events; set APNS_WORKER_EMBEDDED_LISTEN=127.0.0.1:4222, or APNS_WORKER_NATS_URL for a secured server",
		slog.String("var", listenVar), slog.String("value", listen))
}

// startEmbedded runs a single nats-server with JetStream on e.Listen, in
// e.DataDir (made absolute), which it checks and locks first. stop shuts
// the server down and releases the data dir.
func startEmbedded(ctx context.Context, e config.Embedded, log *slog.Logger) (ns *server.Server, stop func(), err error) {
	start := time.Now()
	dir, err := filepath.Abs(e.DataDir)
	if err != nil {
		return nil, nil, deadEnd(dataDirVar, e.DataDir, err)
	}
	unlock, err := prepareDataDir(dir)
	if err != nil {
		return nil, nil, err
	}
	stepDone(log, "embedded data dir ready and locked", dataDirVar, dir, start)
	defer func() {
		if err != nil {
			unlock()
		}
	}()

	host, portStr, err := net.SplitHostPort(e.Listen)
	if err != nil {
		return nil, nil, deadEnd(listenVar, e.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, deadEnd(listenVar, e.Listen, fmt.Errorf("port %q: %w", portStr, err))
	}
	// Fail clearly when the port is taken, rather than inside the server.
	ln, err := net.Listen("tcp", e.Listen)
	if err != nil {
		return nil, nil, deadEnd(listenVar, e.Listen, fmt.Errorf("%w (or set APNS_WORKER_NATS_URL for an existing server)", err))
	}
	ln.Close()
	ns, err = server.NewServer(&server.Options{
		ServerName: "apns-worker-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, nil, deadEnd(dataDirVar, dir, fmt.Errorf("embedded nats-server: %w", err))
	}
	go ns.Start()
	// Recovering a large store takes a while; SIGTERM still ends the wait.
	for ready := time.Now().Add(60 * time.Second); !ns.ReadyForConnections(100 * time.Millisecond); {
		if ctx.Err() != nil || time.Now().After(ready) {
			ns.Shutdown()
			ns.WaitForShutdown()
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("embedded nats-server: stopped while starting: %w", context.Cause(ctx))
			}
			return nil, nil, deadEnd(dataDirVar, dir, errors.New("embedded nats-server not ready after 60s"))
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, nil, deadEnd(dataDirVar, dir, errors.New("embedded nats-server started without JetStream (see its log)"))
	}
	log.Warn("no APNS_WORKER_NATS_URL: running an embedded nats-server with JetStream; producers publish to it",
		slog.String("url", ns.ClientURL()), slog.String("listen", e.Listen), slog.String("data_dir", dir))
	warnIfExposed(log, e.Listen)
	stepDone(log, "embedded nats-server ready", listenVar, e.Listen, start)
	return ns, func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		unlock()
	}, nil
}

// directDialer dials the NATS servers for APNS_WORKER_SOCKET_CALLS=direct:
// the connection's reads and writes are direct system calls (package
// internal/rawconn).
type directDialer struct{ d net.Dialer }

func (d *directDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return rawconn.Wrap(c), nil
}
