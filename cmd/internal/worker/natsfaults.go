package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/jetpush/apns-worker/config"
)

// natsFaults watches the connection's asynchronous errors for a
// permissions violation on a subject the worker cannot run without: the
// pull requests, the acks (ack, nak, InProgress, term), the events, and
// its subscriptions (its inboxes). The server refuses those only
// asynchronously, so without this a worker that may not pull would stay
// "running" and never take a job, and one that may not ack would send
// every job to APNs again each ACK_WAIT, for ever. The first such
// violation is logged at ERROR, naming the subject and the login variable,
// and closes Done: Run then stops as at SIGTERM (the jobs it holds are
// naked or, if the server refuses that too, redelivered after ACK_WAIT)
// and returns Err (exit 1). Other violations (JetStream API requests,
// which the set-up reports itself) stay WARNs.
type natsFaults struct {
	log      *slog.Logger
	events   string // events subject prefix, with the trailing dot
	durable  string // <jobs stream>.<durable consumer>
	v, value string // the login variable
	once     sync.Once
	done     chan struct{}
	mu       sync.Mutex
	err      error
}

func newNATSFaults(cfg *config.Config, log *slog.Logger) *natsFaults {
	f := &natsFaults{log: log, events: cfg.Events.Subject + ".", durable: cfg.Jobs.Stream + "." + cfg.Jobs.Consumer,
		done: make(chan struct{})}
	f.v, f.value = loginVar(cfg.NATS)
	return f
}

// violationRe finds what a permissions violation refused, in the server's
// words: `Permissions Violation for Publish to "subject"`, or for
// Subscription to "subject" (maybe followed by ` using queue "q"`).
var violationRe = regexp.MustCompile(`(?i)violation for (publish|subscription) to "([^"]+)"`)

// vital tells whether op (publish or subscription) on subj is one the
// worker cannot run without, what the worker needs it for, and the
// permission to grant.
func (f *natsFaults) vital(op, subj string) (need, grant string, ok bool) {
	if strings.EqualFold(op, "subscription") {
		return "subscribe to its inboxes (pulled jobs, JetStream replies)", "subscribe _INBOX.>", true
	}
	switch {
	case strings.HasPrefix(subj, "$JS.API.CONSUMER.MSG.NEXT."):
		return "pull jobs from the durable consumer", "publish $JS.API.CONSUMER.MSG.NEXT." + f.durable, true
	case strings.HasPrefix(subj, "$JS.ACK."):
		return "ack, nak and keep in progress the jobs it takes", "publish $JS.ACK." + f.durable + ".>", true
	case strings.HasPrefix(subj, f.events):
		return "publish events", "publish " + f.events + ">", true
	}
	return "", "", false
}

// report handles an asynchronous error of the connection. It returns true
// if it was a vital permissions violation (logged at ERROR here, the first
// one; the caller logs anything else).
func (f *natsFaults) report(err error) bool {
	if f == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	m := violationRe.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	op, subj := strings.ToLower(m[1]), m[2]
	need, grant, ok := f.vital(op, subj)
	if !ok {
		return false
	}
	f.once.Do(func() {
		verb := "publish to"
		if op == "subscription" {
			verb = "subscribe to"
		}
		f.mu.Lock()
		f.err = fmt.Errorf("the NATS server refuses %s=%s permission to %s %q: the worker needs it to %s; grant %q to this user, or use another login: %w",
			f.v, f.value, verb, subj, need, grant, err)
		f.mu.Unlock()
		f.log.Error("nats refused a permission the worker cannot run without; stopping",
			slog.String("subject", subj), slog.String("refused", verb), slog.String("grant", grant),
			slog.String("var", f.v), slog.String("value", f.value), slog.Any("error", err))
		close(f.done)
	})
	return true
}

// Done is closed at the first vital violation.
func (f *natsFaults) Done() <-chan struct{} { return f.done }

// Err is the first vital violation, nil if none.
func (f *natsFaults) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
