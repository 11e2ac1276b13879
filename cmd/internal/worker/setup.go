package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/consumer"
)

// JetStream API error codes the set-up tells apart (nats-server's
// server/errors.json).
const (
	codeClusterNoPeers       jetstream.ErrorCode = 10005 // JSClusterNoPeersErrF: "no suitable peers for placement…"
	codeClusterNotActive     jetstream.ErrorCode = 10006 // JSClusterNotActiveErr: the server's cluster layer not up (starting, stopping)
	codeClusterNotAvail      jetstream.ErrorCode = 10008 // JSClusterNotAvailErr: no meta leader (being elected)
	codeClusterNotLeader     jetstream.ErrorCode = 10009 // JSClusterNotLeaderErr: asked a server that no longer leads
	codeReplicasNotSupported jetstream.ErrorCode = 10074 // JSStreamReplicasNotSupportedErr: replicas > 1 on a single server
	codeMemberChangeInflight jetstream.ErrorCode = 10202 // JSClusterServerMemberChangeInflightErr
)

// A 10005's description: this, then ", reason" for each kind of peer
// passed over (see nats-server's selectPeerError). A peer the meta group
// knows but has not heard from since it started (the cluster restarted
// without it) is a "miscellaneous issue"; so, rarely, is a peer at the
// operator's max_ha_assets, which then waits for the timeout too.
const (
	noPeersForPlacement  = "no suitable peers for placement"
	placementPeerOffline = "peer offline"
	placementPeerUnknown = "miscellaneous issue"
)

const (
	replicasVar = "APNS_WORKER_REPLICAS"
	natsURLVar  = "APNS_WORKER_NATS_URL"
)

// setupFault is what a failed set-up attempt says about waiting.
type setupFault int

const (
	// setupFails: waiting will not help, or nothing says it would
	// (a stream's config, subject overlap, permissions, insufficient
	// resources, anything unknown): fail at once.
	setupFails setupFault = iota
	// setupTooManyReplicas: more replicas than the cluster has JetStream
	// servers, every one of them online: it can never be placed.
	setupTooManyReplicas
	// setupPeerOffline: a server the replicas need is offline, or not yet
	// known to be online: wait.
	setupPeerOffline
	// setupClusterNotReady: no meta leader yet, no answer in time, no
	// responders (a server restarting): wait.
	setupClusterNotReady
)

// classifySetup tells, from the JetStream API error code where there is
// one, whether a set-up error is the cluster not being ready yet.
func classifySetup(err error) setupFault {
	if errors.Is(err, nats.ErrPermissionViolation) {
		return setupFails // the request timed out because the server refused it
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case codeClusterNoPeers:
			// The server lists why each peer was passed over; none listed:
			// every server it knows is online and eligible, and too few.
			d := strings.TrimSpace(api.Description)
			switch {
			case d == noPeersForPlacement:
				return setupTooManyReplicas
			case strings.HasPrefix(d, noPeersForPlacement) &&
				(strings.Contains(d, placementPeerOffline) || strings.Contains(d, placementPeerUnknown)):
				return setupPeerOffline
			}
			return setupFails // tags, storage, limits: an operator's matter
		case codeReplicasNotSupported:
			return setupTooManyReplicas
		case codeClusterNotActive, codeClusterNotAvail, codeClusterNotLeader, codeMemberChangeInflight:
			return setupClusterNotReady
		}
		return setupFails
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return setupClusterNotReady
	}
	return setupFails
}

// minSetupAttempt is how long the last attempt, made at the deadline, may
// take before it is given up on.
const minSetupAttempt = 2 * time.Second

// setUpJetStream creates the streams and the consumer (newConsumer),
// retrying with back-off (100 ms doubling to 2 s) for timeout while the
// cluster is not ready (classifySetup); 0 tries once. Each retry is
// logged and shown by phase (/readyz). A cluster still not ready at the
// deadline is a DeadEnd naming the variable to look at; so are more
// replicas than the cluster has servers, at once. Other errors are
// returned at once, and ctx ends the wait at once. nc is js's connection.
func setUpJetStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, opts consumer.Options, timeout time.Duration, phase func(string), log *slog.Logger) (*consumer.Worker, error) {
	url := nc.ConnectedUrlRedacted()
	start := time.Now()
	retry := newStartupRetry(timeout)
	replicas := strconv.Itoa(opts.Replicas)
	for attempt := 1; ; attempt++ {
		var giveUp time.Time // none when trying once: consumer.New's own timeout bounds it
		if timeout > 0 {
			giveUp = retry.deadline
			if floor := time.Now().Add(minSetupAttempt); floor.After(giveUp) {
				giveUp = floor
			}
		}
		w, err := newConsumer(ctx, giveUp, js, opts)
		if err == nil {
			return w, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// A request the server refused (permissions) only times out; the
		// refusal itself reaches the connection.
		if last := nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) && !errors.Is(err, nats.ErrPermissionViolation) {
			err = fmt.Errorf("%w (the NATS server reported: %w)", err, last)
		}
		var v, val, why string
		switch classifySetup(err) {
		case setupFails:
			return nil, err
		case setupTooManyReplicas:
			return nil, deadEnd(replicasVar, replicas, fmt.Errorf("more replicas than the cluster has JetStream servers, and every one is online: this can never be placed; lower APNS_WORKER_REPLICAS or add servers: %w", err))
		case setupPeerOffline:
			v, val, why = replicasVar, replicas, "a server is offline or not yet known to be online, and "+replicas+" replicas cannot be placed without it"
		case setupClusterNotReady:
			v, val, why = natsURLVar, url, "the JetStream cluster has no leader or did not answer"
		}
		waited := time.Since(start)
		left := retry.left()
		if left <= 0 {
			return nil, deadEnd(v, val, fmt.Errorf("JetStream not ready within %s (APNS_WORKER_NATS_CONNECT_TIMEOUT), waited %s, %d attempts: %s: %w",
				timeout, waited.Round(time.Millisecond), attempt, why, err))
		}
		pause := retry.pause()
		phase(fmt.Sprintf("waiting for the JetStream cluster (%s=%s): %s", v, val, why))
		log.Warn("jetstream not ready yet, retrying", slog.String("var", v), slog.String("value", val),
			slog.Int("attempt", attempt), slog.String("waited", waited.Round(time.Millisecond).String()),
			slog.String("retry_in", pause.String()), slog.String("gives_up_in", left.Round(time.Second).String()),
			slog.Any("error", err))
		if !retry.sleep(ctx, pause) {
			return nil, fmt.Errorf("stopped while waiting for the JetStream cluster: %w", context.Cause(ctx))
		}
	}
}

// newConsumer is consumer.New, given up on when ctx ends (SIGTERM while
// JetStream is slow to answer) or at giveUp (zero: never); a worker it
// still makes is shut down.
func newConsumer(ctx context.Context, giveUp time.Time, js jetstream.JetStream, opts consumer.Options) (*consumer.Worker, error) {
	type result struct {
		w   *consumer.Worker
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := consumer.New(js, opts)
		done <- result{w, err}
	}()
	var late <-chan time.Time
	if !giveUp.IsZero() {
		t := time.NewTimer(time.Until(giveUp))
		defer t.Stop()
		late = t.C
	}
	abandon := func() {
		go func() {
			if r := <-done; r.w != nil {
				_ = r.w.Shutdown(context.Background(), nil)
			}
		}()
	}
	where := fmt.Sprintf("jetstream setup (APNS_WORKER_JOBS_STREAM=%s, APNS_WORKER_EVENTS_STREAM=%s)", opts.JobsStream, opts.EventsStream)
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("%s: %w", where, r.err)
		}
		return r.w, nil
	case <-late:
		abandon()
		return nil, fmt.Errorf("%s: no answer by the deadline: %w", where, context.DeadlineExceeded)
	case <-ctx.Done():
		abandon()
		return nil, fmt.Errorf("stopped while creating the streams and the consumer: %w", context.Cause(ctx))
	}
}
