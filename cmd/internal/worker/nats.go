package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/jetpush/apns-worker/config"
)

// connectNATS connects to the configured servers, or, with no URL set,
// starts an embedded nats-server with JetStream and connects to it. The
// returned close drains the connection within timeout, then stops the
// embedded server.
func connectNATS(cfg *config.Config, log *slog.Logger) (*nats.Conn, func(timeout time.Duration) error, error) {
	n := cfg.NATS
	opts := []nats.Option{
		nats.Name(n.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(n.ReconnectWait),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", slog.Any("error", err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", slog.String("url", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("nats async error", slog.String("subject", subj), slog.Any("error", err))
		}),
	}
	var ns *server.Server
	url := strings.Join(n.URLs, ",")
	if url == "" {
		var err error
		if ns, err = startEmbedded(cfg.Embedded); err != nil {
			return nil, nil, err
		}
		url = ns.ClientURL()
		log.Warn("no APNS_WORKER_NATS_URL: running an embedded nats-server with JetStream; producers publish to it",
			slog.String("url", url), slog.String("data_dir", cfg.Embedded.DataDir))
	} else {
		opts = append(opts, authOptions(n)...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if ns != nil {
			ns.Shutdown()
		}
		return nil, nil, fmt.Errorf("nats: connect %s: %w", url, err)
	}
	log.Info("nats connected", slog.String("url", nc.ConnectedUrlRedacted()))
	return nc, func(timeout time.Duration) error {
		err := DrainNATS(nc, timeout)
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
		return err
	}, nil
}

func authOptions(n config.NATS) []nats.Option {
	var opts []nats.Option
	switch {
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	case n.NKeyFile != "":
		if o, err := nats.NkeyOptionFromSeed(n.NKeyFile); err == nil {
			opts = append(opts, o)
		} else {
			opts = append(opts, func(*nats.Options) error { return fmt.Errorf("nkey %s: %w", n.NKeyFile, err) })
		}
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password.Reveal()))
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token.Reveal()))
	}
	if n.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(n.TLSCAFile))
	}
	if n.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(n.TLSCertFile, n.TLSKeyFile))
	}
	return opts
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

// startEmbedded runs a single nats-server with JetStream on e.Listen.
func startEmbedded(e config.Embedded) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(e.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %s: %w", e.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: port %q: %w", portStr, err)
	}
	// Fail clearly when the port is taken, rather than inside the server.
	if ln, err := net.Listen("tcp", e.Listen); err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w (set APNS_WORKER_EMBEDDED_LISTEN, or APNS_WORKER_NATS_URL for an existing server)", err)
	} else {
		ln.Close()
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "apns-worker-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   e.DataDir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats-server: not ready after 30s")
	}
	return ns, nil
}
