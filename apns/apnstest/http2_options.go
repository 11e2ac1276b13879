package apnstest

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jetpush/apns-worker/apns"
)

// The HTTP2Server's options: what it checks, how it behaves, the faults it
// injects.

// HTTP2Option configures an HTTP2Server.
type HTTP2Option func(*h2config) error

type h2config struct {
	addr        string
	pki         *PKI
	requireCert bool
	keyID       string
	teamID      string
	key         *ecdsa.PrivateKey
	maxStreams  uint32
	window      uint32
	now         func() time.Time
	record      bool
	latency     time.Duration
	goAwayAfter int
	topics      []string
	tokenTopics map[string]string
	reasons     map[string]h2reply
	reasonFunc  func(tok apns.Token) (status int, reason string, ok bool)
	injects     []h2inject
	refuse      int
	faults      h2faults
}

// HTTP2Listen sets the listen address (default "127.0.0.1:0").
func HTTP2Listen(addr string) HTTP2Option {
	return func(c *h2config) error { c.addr = addr; return nil }
}

// HTTP2PKI makes the server use p (for example one shared with other test
// servers) instead of a new PKI.
func HTTP2PKI(p *PKI) HTTP2Option {
	return func(c *h2config) error {
		if p == nil {
			return errors.New("apnstest: HTTP2PKI: nil PKI")
		}
		c.pki = p
		return nil
	}
}

// HTTP2ClientCertAuth makes the TLS handshake require a client certificate
// of the PKI (certificate auth); requests then need no JWT. Without it a
// certificate is optional, and a connection that presents one needs no JWT.
func HTTP2ClientCertAuth() HTTP2Option {
	return func(c *h2config) error { c.requireCert = true; return nil }
}

// HTTP2Key sets the provider signing key and its ids instead of generated
// ones (for a server in its own process whose key a client must load).
func HTTP2Key(keyID, teamID string, key *ecdsa.PrivateKey) HTTP2Option {
	return func(c *h2config) error {
		if len(keyID) != 10 || len(teamID) != 10 || key == nil {
			return errors.New("apnstest: HTTP2Key: key id and team id must have 10 characters, key non-nil")
		}
		c.keyID, c.teamID, c.key = keyID, teamID, key
		return nil
	}
}

// HTTP2MaxStreams sets the SETTINGS_MAX_CONCURRENT_STREAMS the server
// advertises and enforces (default 1000). Streams beyond it are refused
// with RST_STREAM REFUSED_STREAM and counted by StreamLimitExceeded.
func HTTP2MaxStreams(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 {
			return fmt.Errorf("apnstest: HTTP2MaxStreams(%d) < 1", n)
		}
		c.maxStreams = uint32(n)
		return nil
	}
}

// HTTP2Window sets the initial stream flow-control window the server
// advertises (default 1 MiB); a small one exercises the client's flow
// control. The connection window is 16 MiB, or n if larger.
func HTTP2Window(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 1 || n > math.MaxInt32 {
			return fmt.Errorf("apnstest: HTTP2Window(%d) out of range", n)
		}
		c.window = uint32(n)
		return nil
	}
}

// HTTP2Clock sets the clock for JWT iat checks and 410 timestamps
// (default time.Now). Latency uses the real clock.
func HTTP2Clock(now func() time.Time) HTTP2Option {
	return func(c *h2config) error {
		if now == nil {
			return errors.New("apnstest: HTTP2Clock: nil clock")
		}
		c.now = now
		return nil
	}
}

// HTTP2Record makes the server keep the headers and payload of every
// accepted request (see Requests). Off by default, for benchmarks.
func HTTP2Record(on bool) HTTP2Option {
	return func(c *h2config) error { c.record = on; return nil }
}

// HTTP2Latency delays every response by d (see SetLatency).
func HTTP2Latency(d time.Duration) HTTP2Option {
	return func(c *h2config) error {
		if d < 0 {
			return fmt.Errorf("apnstest: HTTP2Latency(%v) < 0", d)
		}
		c.latency = d
		return nil
	}
}

// HTTP2GoAwayAfter makes every connection send GOAWAY after its n-th
// request (see SetGoAwayAfter).
func HTTP2GoAwayAfter(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 {
			return fmt.Errorf("apnstest: HTTP2GoAwayAfter(%d) < 0", n)
		}
		c.goAwayAfter = n
		return nil
	}
}

// HTTP2Topics restricts apns-topic to the given topics; others get
// 400 TopicDisallowed.
func HTTP2Topics(topics ...string) HTTP2Option {
	return func(c *h2config) error { c.topics = append(c.topics, topics...); return nil }
}

// HTTP2TokenTopic binds a device token to a topic: requests for tok with
// another topic get 400 DeviceTokenNotForTopic.
func HTTP2TokenTopic(tok apns.Token, topic string) HTTP2Option {
	return func(c *h2config) error {
		if c.tokenTopics == nil {
			c.tokenTopics = map[string]string{}
		}
		c.tokenTopics[tok.String()] = topic
		return nil
	}
}

// HTTP2Reason answers every valid request for tok with status and reason
// (see Reason).
func HTTP2Reason(tok apns.Token, status int, reason string) HTTP2Option {
	return func(c *h2config) error {
		if status < 200 || status > 599 {
			return fmt.Errorf("apnstest: HTTP2Reason: bad status %d", status)
		}
		if c.reasons == nil {
			c.reasons = map[string]h2reply{}
		}
		c.reasons[tok.String()] = h2reply{status: status, reason: reason}
		return nil
	}
}

// HTTP2ReasonFunc makes the server ask f about each valid request's token
// (after HTTP2Reason): when f says ok, the request gets status and reason.
// f is called concurrently.
func HTTP2ReasonFunc(f func(tok apns.Token) (status int, reason string, ok bool)) HTTP2Option {
	return func(c *h2config) error {
		c.reasonFunc = f
		return nil
	}
}

// HTTP2Inject answers the next n otherwise valid requests with status and
// reason (see Inject).
func HTTP2Inject(n, status int, reason string) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 || status < 200 || status > 599 {
			return fmt.Errorf("apnstest: HTTP2Inject(%d, %d): bad count or status", n, status)
		}
		c.injects = append(c.injects, h2inject{n: n, h2reply: h2reply{status: status, reason: reason}})
		return nil
	}
}

// HTTP2RefuseStreams answers the next n otherwise valid requests with
// RST_STREAM REFUSED_STREAM (see RefuseStreams).
func HTTP2RefuseStreams(n int) HTTP2Option {
	return func(c *h2config) error {
		if n < 0 {
			return fmt.Errorf("apnstest: HTTP2RefuseStreams(%d) < 0", n)
		}
		c.refuse += n
		return nil
	}
}
