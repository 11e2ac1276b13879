package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/jetpush/apns-worker/config"
)

// probeAPNs dials the APNs address once (3 s at most), with TLS as the
// engine will (its roots, its client certificate if any, ALPN h2 in http2
// mode), reads the server's first answer, and logs whether it answers. A
// failure is not a dead end: APNs or the network may come back, and the
// engine keeps trying; the log names the variable to check
// (APNS_WORKER_APNS_CA_FILE for a certificate the worker does not trust,
// APNS_WORKER_APNS_CERT_FILE for a client certificate the server refuses,
// else APNS_WORKER_APNS_ADDR).
func probeAPNs(ctx context.Context, a config.APNs, creds engineCreds, log *slog.Logger) {
	if a.Mode == config.ModeMock || a.Addr == "" {
		return
	}
	hostPort := a.Addr
	if u, err := url.Parse(a.Addr); err == nil && u.Scheme == "https" {
		hostPort = u.Host
		if u.Port() == "" {
			hostPort = net.JoinHostPort(u.Hostname(), "443")
		}
	}
	host, _, _ := net.SplitHostPort(hostPort)
	cfg := &tls.Config{ServerName: host, RootCAs: creds.roots, MinVersion: tls.VersionTLS12}
	hasCert := len(creds.cert.Certificate) > 0
	if hasCert {
		cfg.Certificates = []tls.Certificate{creds.cert}
	}
	if a.Mode == config.ModeHTTP2 {
		cfg.NextProtos = []string{"h2"}
	}
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	warn := func(msg, v, value string, attrs ...any) {
		log.Warn(msg, append([]any{slog.String("var", v), slog.String("value", value), slog.String("addr", a.Addr)}, attrs...)...)
	}
	dial := func() (*tls.Conn, error) {
		c, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", hostPort)
		if err != nil {
			return nil, err
		}
		return c.(*tls.Conn), nil
	}
	tc, err := dial()
	if err != nil {
		var unknown x509.UnknownAuthorityError
		var verify *tls.CertificateVerificationError
		switch {
		case errors.As(err, &unknown) || errors.As(err, &verify):
			warn("apns not reachable yet; the engine keeps trying", "APNS_WORKER_APNS_CA_FILE", a.CAFile, slog.Any("error", err))
		case hasCert && refusedTLS(err):
			warn("apns refused the TLS client certificate; the engine keeps trying", "APNS_WORKER_APNS_CERT_FILE", a.CertFile, slog.Any("error", err))
		default:
			warn("apns not reachable yet; the engine keeps trying", "APNS_WORKER_APNS_ADDR", a.Addr, slog.Any("error", err))
		}
		return
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; a.Mode == config.ModeHTTP2 && p != "h2" {
		warn("apns answers TLS but not HTTP/2 (ALPN h2); the engine keeps trying", "APNS_WORKER_APNS_ADDR", a.Addr, slog.String("alpn", p))
		return
	}
	err = firstAnswer(dctx, tc, a.Mode)
	if err != nil && hasCert && !refusedTLS(err) && closedByServer(err) {
		// TLS 1.3: a server that refuses the certificate sends its alert
		// and closes; a write of ours that meets the closed connection
		// fails first, and the alert may be lost. Ask again, only
		// listening, as in binary mode.
		if again, derr := dial(); derr == nil {
			if rerr := firstAnswer(dctx, again, config.ModeBinary); refusedTLS(rerr) {
				err = rerr
			}
			again.Close()
		}
	}
	if err != nil {
		switch {
		case hasCert && refusedTLS(err):
			// TLS 1.3: the server checks the client's certificate after
			// the client's side of the handshake is done, and its refusal
			// is the first thing read.
			warn("apns refused the TLS client certificate; the engine keeps trying", "APNS_WORKER_APNS_CERT_FILE", a.CertFile, slog.Any("error", err))
		default:
			warn("apns answers TLS but not HTTP/2 (no SETTINGS); the engine keeps trying", "APNS_WORKER_APNS_ADDR", a.Addr, slog.Any("error", err))
		}
		return
	}
	stepDone(log, "apns reachable", "APNS_WORKER_APNS_ADDR", a.Addr, start)
}

// firstAnswer reads what the server says first. In http2 mode it sends the
// client preface and an empty SETTINGS and wants the server's SETTINGS
// back (then says GOAWAY); nothing is sent to a device. The binary
// protocol's gateway says nothing unless it refuses, so there only a read
// of 300 ms is tried, and silence is fine.
func firstAnswer(ctx context.Context, c *tls.Conn, mode config.Mode) error {
	deadline, _ := ctx.Deadline()
	if mode != config.ModeHTTP2 {
		if d := time.Now().Add(300 * time.Millisecond); d.Before(deadline) {
			deadline = d
		}
		_ = c.SetReadDeadline(deadline)
		var b [1]byte
		_, err := c.Read(b[:])
		if refusedTLS(err) {
			return err
		}
		return nil
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	f, err := fr.ReadFrame()
	if err != nil {
		return err
	}
	if s, ok := f.(*http2.SettingsFrame); !ok || s.IsAck() {
		return errors.New("the first frame is not SETTINGS: " + f.Header().String())
	}
	_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	return nil
}

// refusedTLS reports whether err is a TLS alert from the server refusing
// the client certificate, or asking for one (certAlert).
func refusedTLS(err error) bool {
	_, ok := certAlert(err)
	return ok
}

// closedByServer reports whether err is the server closing the
// connection under a write or a read (broken pipe, reset, EOF).
func closedByServer(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
