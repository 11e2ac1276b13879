package worker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/config"
)

const (
	natsCredsVar   = "APNS_WORKER_NATS_CREDS"
	natsNKeyVar    = "APNS_WORKER_NATS_NKEY"
	natsUserVar    = "APNS_WORKER_NATS_USER"
	natsTokenVar   = "APNS_WORKER_NATS_TOKEN"
	natsTLSCAVar   = "APNS_WORKER_NATS_TLS_CA"
	natsTLSCertVar = "APNS_WORKER_NATS_TLS_CERT"
)

// loadError is a credentials or certificate file that nats.go could not
// load, when the options are applied or at a connect (it reads the creds
// file and the TLS files again each time): a dead end naming its
// variable, never a server to wait for.
type loadError struct {
	v, value string
	err      error
}

func (e *loadError) Error() string { return fmt.Sprintf("%s=%s: %v", e.v, e.value, e.err) }
func (e *loadError) Unwrap() error { return e.err }

// named makes the errors of opt, and of the callbacks it installs, a
// *loadError naming v.
func named(v, value string, opt nats.Option) nats.Option {
	return func(o *nats.Options) error {
		fail := func(err error) error { return &loadError{v, value, err} }
		var set nats.Options // which callbacks opt installs
		if err := opt(&set); err != nil {
			return fail(err)
		}
		if err := opt(o); err != nil {
			return fail(err)
		}
		if set.UserJWT != nil {
			f := o.UserJWT
			o.UserJWT = func() (string, error) {
				s, err := f()
				if err != nil {
					return "", fail(err)
				}
				return s, nil
			}
		}
		if set.SignatureCB != nil {
			f := o.SignatureCB
			o.SignatureCB = func(nonce []byte) ([]byte, error) {
				b, err := f(nonce)
				if err != nil {
					return nil, fail(err)
				}
				return b, nil
			}
		}
		if set.TLSCertCB != nil {
			f := o.TLSCertCB
			o.TLSCertCB = func() (tls.Certificate, error) {
				c, err := f()
				if err != nil {
					return c, fail(err)
				}
				return c, nil
			}
		}
		if set.RootCAsCB != nil {
			f := o.RootCAsCB
			o.RootCAsCB = func() (*x509.CertPool, error) {
				p, err := f()
				if err != nil {
					return nil, fail(err)
				}
				return p, nil
			}
		}
		return nil
	}
}

// authOptions are the login and TLS options of n. A file nats.go cannot
// load (config.Load checked them with the same loaders) is a *DeadEnd
// naming its variable, now or at a connect (see connectRetry).
func authOptions(n config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.CredsFile != "":
		opts = append(opts, named(natsCredsVar, n.CredsFile, nats.UserCredentials(n.CredsFile)))
	case n.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(n.NKeyFile)
		if err != nil {
			return nil, deadEnd(natsNKeyVar, n.NKeyFile, fmt.Errorf("no NKey user seed: %w", err))
		}
		opts = append(opts, named(natsNKeyVar, n.NKeyFile, o))
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password.Reveal()))
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token.Reveal()))
	}
	if n.TLSCAFile != "" {
		opts = append(opts, named(natsTLSCAVar, n.TLSCAFile, nats.RootCAs(n.TLSCAFile)))
	}
	if n.TLSCertFile != "" {
		opts = append(opts, named(natsTLSCertVar, n.TLSCertFile, nats.ClientCert(n.TLSCertFile, n.TLSKeyFile)))
	}
	return opts, nil
}

// loginVar names the variable that says who the worker is to the NATS
// server, and its value (never a secret): the login method set, else the
// TLS client certificate (a server may map it to a user), else the URL.
func loginVar(n config.NATS) (v, value string) {
	switch {
	case n.CredsFile != "":
		return natsCredsVar, n.CredsFile
	case n.NKeyFile != "":
		return natsNKeyVar, n.NKeyFile
	case n.User != "":
		return natsUserVar, n.User
	case n.Token != "":
		return natsTokenVar, "[redacted]"
	case n.TLSCertFile != "":
		return natsTLSCertVar, n.TLSCertFile
	}
	return natsURLVar, strings.Join(n.URLs, ",")
}

// certAlert returns the TLS alert the server sent (err is a "remote
// error: tls: …"), if it is one a server sends when it refuses the client
// certificate (apns.CertificateRefused: certificate alerts, unknown CA,
// access denied, certificate required), or requires one it did not get
// (handshake failure: TLS 1.2 without a certificate).
func certAlert(err error) (string, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return "", false
	}
	a := op.Err.Error() // "tls: unknown certificate authority"
	if apns.CertificateRefused(err) || a == "tls: handshake failure" {
		return a, true
	}
	return "", false
}

// clientCertRefusal is the dead end for a client certificate the server
// refused (alert: what it said).
func clientCertRefusal(n config.NATS, url, alert string, err error) *DeadEnd {
	if n.TLSCertFile == "" {
		return deadEnd(natsTLSCertVar, "", fmt.Errorf("the NATS server at %s requires a TLS client certificate (it answered %q): set APNS_WORKER_NATS_TLS_CERT and APNS_WORKER_NATS_TLS_KEY: %w", url, alert, err))
	}
	return deadEnd(natsTLSCertVar, n.TLSCertFile, fmt.Errorf("the NATS server at %s refused the TLS client certificate (it answered %q): it needs one issued by a CA it trusts: %w", url, alert, err))
}

// closedAfterTLSHandshake reports nats.go's error for a server that closed
// the connection right after the TLS handshake. A server that refuses the
// client certificate does that once it has sent its alert, which nats.go
// then may or may not have read (TLS 1.3: the refusal comes after the
// client's handshake is done, and nats.go writes CONNECT before it reads).
func closedAfterTLSHandshake(err error) bool {
	return errors.Is(err, nats.ErrTLS) && strings.Contains(err.Error(), "connection closed by remote after TLS handshake")
}

// probeClientCert asks each nats:// or tls:// server of urls, as nats.go
// would connect (INFO, then TLS with the worker's CA and client
// certificate), what it says after the handshake, without writing: a
// server that refuses the certificate sends its alert and closes. It
// returns the first such refusal (a "remote error: tls: …", see
// certAlert) and the server's URL, or a nil error when no server answered
// so within timeout (it then has to be waited for like any other failure).
func probeClientCert(n config.NATS, urls []string, timeout time.Duration) (at string, refusal error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if n.TLSCAFile != "" {
		pem, err := os.ReadFile(n.TLSCAFile)
		if err != nil {
			return "", nil
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pem)
	}
	if n.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(n.TLSCertFile, n.TLSKeyFile)
		if err != nil {
			return "", nil
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") {
			continue // websocket: TLS below the NATS protocol, not probed
		}
		port := u.Port()
		if port == "" {
			port = "4222"
		}
		c := cfg.Clone()
		c.ServerName = u.Hostname()
		if err := probeOne(net.JoinHostPort(u.Hostname(), port), c, timeout); err != nil {
			if _, refused := certAlert(err); refused {
				return raw, err
			}
		}
	}
	return "", nil
}

// probeOne reads the server's INFO, makes the TLS handshake with cfg and
// reads what the server says next; its error is the alert, if any.
func probeOne(addr string, cfg *tls.Config, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 1<<20)).ReadBytes('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("INFO ")) {
		return errors.New("no NATS INFO")
	}
	// The server writes nothing more before the client's TLS hello, so
	// the buffered reader holds nothing the handshake needs.
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	_, err = tc.Read(make([]byte, 1))
	return err
}
