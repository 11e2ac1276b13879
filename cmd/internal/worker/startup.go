package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DeadEnd is a start-up failure that waiting will not cure: a variable's
// value is wrong for this machine (a data dir that cannot be written, a
// port in use, credentials that do not load, NATS unreachable or the
// JetStream cluster not ready for the whole connect timeout, more replicas
// than the cluster has servers). The command exits 2 on one, as for a bad
// variable.
type DeadEnd struct {
	Var   string // the variable at fault, e.g. APNS_WORKER_EMBEDDED_DATA_DIR
	Value string // its value (never a secret)
	Err   error
}

func (e *DeadEnd) Error() string {
	return fmt.Sprintf("%s=%s: %v", e.Var, e.Value, e.Err)
}

func (e *DeadEnd) Unwrap() error { return e.Err }

func deadEnd(v, value string, err error) *DeadEnd { return &DeadEnd{Var: v, Value: value, Err: err} }

// stepDone logs a start-up step that succeeded, with the variable it
// checked and how long it took.
func stepDone(log *slog.Logger, msg, v, value string, start time.Time) {
	log.Info(msg, slog.String("var", v), slog.String("value", value),
		slog.String("took", time.Since(start).Round(time.Microsecond).String()))
}

const dataDirVar = "APNS_WORKER_EMBEDDED_DATA_DIR"

// lockFileName is the lock file in the embedded data dir; it holds the
// PID of the process that holds the lock.
const lockFileName = "apns-worker.lock"

// prepareDataDir makes dir (absolute) usable by the embedded nats-server:
// it exists or is created, is a directory, is writable, and no other
// process holds it. The returned unlock releases the lock. Every failure is
// a DeadEnd naming the variable and the directory; none of it waits.
func prepareDataDir(dir string) (unlock func(), err error) {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, deadEnd(dataDirVar, dir, errors.New("not a directory: a file of that name is in the way"))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, deadEnd(dataDirVar, dir, fmt.Errorf("cannot create it: %w", unwrapPath(err)))
	}
	probe, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return nil, deadEnd(dataDirVar, dir, fmt.Errorf("not writable by this process (uid %d): %w", os.Getuid(), unwrapPath(err)))
	}
	probe.Close()
	os.Remove(probe.Name())
	unlock, err = lockDir(filepath.Join(dir, lockFileName))
	if err != nil {
		return nil, deadEnd(dataDirVar, dir, err)
	}
	return unlock, nil
}

// unwrapPath drops the *fs.PathError's path, which the DeadEnd names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// startupRetry paces the retries of a start-up step until its deadline:
// pauses of 100 ms doubling to 2 s, the last one cut short so that the
// last attempt is at the deadline (what waited gets the whole timeout).
type startupRetry struct {
	deadline time.Time
	wait     time.Duration
}

func newStartupRetry(timeout time.Duration) *startupRetry {
	return &startupRetry{deadline: time.Now().Add(timeout), wait: 100 * time.Millisecond}
}

// left is the time until the deadline.
func (r *startupRetry) left() time.Duration { return time.Until(r.deadline) }

// pause is how long to wait before the next attempt.
func (r *startupRetry) pause() time.Duration { return min(r.wait, r.left()) }

// sleep waits d, then doubles the next pause; false if ctx ended first.
func (r *startupRetry) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
	}
	r.wait = min(2*r.wait, 2*time.Second)
	return true
}

// checkJetStream fails with a DeadEnd when the NATS server keeps saying it
// has no JetStream for 3 s (a server started without -js; a cluster still
// electing its leader answers within that time). Other errors are left to
// the streams' set-up, which reports them.
func checkJetStream(ctx context.Context, js jetstream.JetStream, url string) error {
	giveUp := time.Now().Add(3 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
			return nil
		case time.Now().After(giveUp):
			return deadEnd("APNS_WORKER_NATS_URL", url, fmt.Errorf("the NATS server has no JetStream for this account (%w): start nats-server with -js, or enable JetStream for the account", err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for JetStream: %w", context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}
