package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/consumer"
)

// How the bench knows a job is finished: it subscribes, on its own
// connection, to the ack subject of the jobs stream ($JS.ACK.<stream>.>).
// The worker's ack is a NATS message to that subject; the server's
// consumer and this subscription each get a copy, so a job counts as
// finished at the moment its ack (+ACK, or +TERM) passes through the
// server — when the work-queue stream drops it — and not earlier (an
// outcome inside the worker) or later. The ack subject carries the job's
// stream sequence; the job's PubAck maps it to the job. Rejections are told
// apart by their rejection event (<events>.rejected, carrying the same
// sequence), which the worker stores before it acks.
const (
	kindNone uint8 = iota
	kindAck
	kindTerm
)

// tracker records when each job was published and when its final ack
// passed through the server.
type tracker struct {
	// rejectedTokens, if any, replace the bad0… tokens of the rejected
	// share, in turn (-rejected-tokens).
	rejectedTokens []apns.Token
	n              int
	// tokenBase numbers the jobs' tokens from it: job i gets
	// tokenFor(tokenBase+i), so runs against one APNs server do not
	// overlap (-compare).
	tokenBase int
	start     time.Time
	base      uint64 // stream sequence before the first job
	stream    string

	pubAt     []int64  // ns since start, by job index; publisher goroutine
	seqOf     []uint64 // stream sequence by job index; collector goroutine
	published atomic.Int64
	stored    atomic.Int64

	mu       sync.Mutex // ack and event handlers
	ackAt    []int64    // ns since start, by sequence - base - 1
	final    []uint8
	rejected []bool
	reacks   int // final acks for jobs already finished
	foreign  int // acks for messages this run did not publish

	finished    atomic.Int64
	naks        atomic.Int64
	inProgress  atomic.Int64
	deadLetters atomic.Int64
	done        chan struct{}
}

func newTracker(n int, stream string, base uint64) *tracker {
	return &tracker{
		n: n, stream: stream, base: base,
		pubAt: make([]int64, n), seqOf: make([]uint64, n),
		ackAt: make([]int64, n), final: make([]uint8, n), rejected: make([]bool, n),
		done: make(chan struct{}),
	}
}

func (t *tracker) now() int64 { return int64(time.Since(t.start)) }

// index maps a stream sequence to this run's slot.
func (t *tracker) index(seq uint64) (int, bool) {
	if seq <= t.base || seq > t.base+uint64(t.n) {
		return 0, false
	}
	return int(seq - t.base - 1), true
}

// ackSeq parses the stream and stream sequence out of an ack subject:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or
// the longer form with a domain and an account hash after ACK. It runs for
// every ack, so it does not allocate.
func ackSeq(subject string) (stream string, seq uint64, ok bool) {
	var tok [12]string
	n := 0
	for rest := subject; n < len(tok); n++ {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			tok[n] = rest
			n++
			break
		}
		tok[n], rest = rest[:i], rest[i+1:]
	}
	var s string
	switch {
	case n == 9:
		stream, s = tok[2], tok[5]
	case n >= 11:
		stream, s = tok[4], tok[7]
	default:
		return "", 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return stream, seq, err == nil
}

// appendJob appends the JSON of a job with id, hex token and payload, as
// json.Marshal(consumer.Job) writes it (same members, same order), for ids
// and tokens that need no escaping (a UUID, hex): the publisher is the
// bench's load generator, and reflection cost it a microsecond a job.
func appendJob(dst []byte, id, token string, payload []byte) []byte {
	dst = append(dst, `{"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","token":"`...)
	dst = append(dst, token...)
	dst = append(dst, `","payload":`...)
	dst = append(dst, payload...)
	return append(dst, '}')
}

// jobLen is the length of appendJob's JSON.
func jobLen(id, token string, payload []byte) int {
	return len(`{"id":"","token":"","payload":}`) + len(id) + len(token) + len(payload)
}

func (t *tracker) onAck(m *nats.Msg) {
	now := t.now()
	stream, seq, ok := ackSeq(m.Subject)
	if !ok || stream != t.stream {
		return
	}
	var kind uint8
	switch d := m.Data; {
	case len(d) == 0, strings.HasPrefix(string(d), "+ACK"):
		kind = kindAck
	case strings.HasPrefix(string(d), "+TERM"):
		kind = kindTerm
	case strings.HasPrefix(string(d), "-NAK"):
		t.naks.Add(1)
		return
	default: // +WPI (in progress), +NXT
		t.inProgress.Add(1)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.index(seq)
	switch {
	case !ok:
		t.foreign++
	case t.final[i] != kindNone:
		t.reacks++
	default:
		t.ackAt[i], t.final[i] = now, kind
		if t.finished.Add(1) == int64(t.n) {
			close(t.done)
		}
	}
}

func (t *tracker) onRejected(m *nats.Msg) {
	var ev struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(m.Data, &ev) != nil {
		return
	}
	t.mu.Lock()
	if i, ok := t.index(ev.Seq); ok {
		t.rejected[i] = true
	}
	t.mu.Unlock()
}

func (t *tracker) onDeadLetter(*nats.Msg) { t.deadLetters.Add(1) }

// subscribe starts the ack and event subscriptions on nc, with no pending
// limit: a dropped ack would count as a lost job.
func (t *tracker) subscribe(nc *nats.Conn, eventsSubject string) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for subj, h := range map[string]nats.MsgHandler{
		"$JS.ACK.>":                   t.onAck,
		eventsSubject + ".rejected":   t.onRejected,
		eventsSubject + ".deadletter": t.onDeadLetter,
	} {
		s, err := nc.Subscribe(subj, h)
		if err != nil {
			return subs, err
		}
		if err := s.SetPendingLimits(-1, -1); err != nil {
			return subs, err
		}
		subs = append(subs, s)
	}
	return subs, nc.Flush()
}

// publishAll publishes the n jobs with PublishMsgAsync (at most maxPending
// unconfirmed), paced at rate jobs/s if rate > 0 (see pacer), recording each job's publish
// time; a collector goroutine records each job's stream sequence from its
// PubAck and republishes on an error. With msgID the republish carries the
// same Nats-Msg-Id, so the stream never stores a job twice; without it, a
// job stored twice would show as a duplicate at the APNs test server.
func (t *tracker) publishAll(ctx context.Context, js jetstream.JetStream, subject string, share float64, o offer, payload []byte, maxPending int, msgID bool) error {
	type pending struct {
		i int
		f jetstream.PubAckFuture
	}
	futs := make(chan pending, maxPending)
	collectErr := make(chan error, 1)
	go func() {
		var first error
		for p := range futs {
			var ack *jetstream.PubAck
			select {
			case ack = <-p.f.Ok():
			case err := <-p.f.Err():
				ack, err = republish(ctx, js, p.f.Msg(), err)
				if err != nil && first == nil {
					first = fmt.Errorf("publish job %d: %w", p.i, err)
				}
			}
			if ack != nil {
				t.seqOf[p.i] = ack.Sequence
				t.stored.Add(1)
			}
		}
		collectErr <- first
	}()

	var pubErr error
	pace := newPacer(o, t.start)
	defer pace.stop()
	for i := range t.n {
		if !pace.wait(ctx, i) {
			pubErr = ctx.Err()
			break
		}
		tok := tokenFor(t.tokenBase+i, share)
		if len(t.rejectedTokens) > 0 && isRejected(i, share) {
			tok = t.rejectedTokens[rejectedIndex(i, share)%len(t.rejectedTokens)]
		}
		job := consumer.NewJob(tok, payload)
		m := jobMsg(subject, job, payload, msgID)
		t.pubAt[i] = t.now()
		var (
			f   jetstream.PubAckFuture
			err error
		)
		for attempt := 0; ; attempt++ {
			f, err = js.PublishMsgAsync(m)
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || attempt >= 100 || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			pubErr = fmt.Errorf("publish job %d: %w", i, err)
			break
		}
		t.published.Add(1)
		futs <- pending{i, f}
	}
	close(futs)
	return errors.Join(pubErr, <-collectErr)
}

// jobMsg is the message of one job; with msgID it carries the job id as
// its Nats-Msg-Id.
func jobMsg(subject string, job consumer.Job, payload []byte, msgID bool) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: appendJob(make([]byte, 0, jobLen(job.ID, job.Token, payload)), job.ID, job.Token, payload)}
	if msgID {
		m.Header = nats.Header{jetstream.MsgIDHeader: []string{job.ID}}
	}
	return m
}

// republish publishes m synchronously after an async error; with a
// Nats-Msg-Id the stream drops it if the first attempt was stored.
func republish(ctx context.Context, js jetstream.JetStream, m *nats.Msg, err error) (*jetstream.PubAck, error) {
	for range 5 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var ack *jetstream.PubAck
		ack, err = js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			return ack, nil
		}
	}
	return nil, err
}

// outcome is what the tracker saw, once the run is over.
type outcome struct {
	finished, delivered, rejected, terminated, lost int
	reacks, foreign                                 int
	latencies                                       []time.Duration // sorted
	firstPub, lastPub, lastAck                      time.Duration
	p10, p90                                        time.Duration // when 10% and 90% of jobs were finished
}

func (t *tracker) outcome() outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := outcome{reacks: t.reacks, foreign: t.foreign}
	var acks []int64
	pub := int(t.published.Load())
	if pub > 0 {
		o.firstPub, o.lastPub = time.Duration(t.pubAt[0]), time.Duration(t.pubAt[pub-1])
	}
	for i := range t.n {
		if t.final[i] == kindNone {
			continue
		}
		o.finished++
		acks = append(acks, t.ackAt[i])
		switch {
		case t.final[i] == kindTerm:
			o.terminated++
		case t.rejected[i]:
			o.rejected++
		default:
			o.delivered++
		}
	}
	o.lost = t.n - o.finished
	for i := range pub {
		if j, ok := t.index(t.seqOf[i]); ok && t.final[j] != kindNone {
			o.latencies = append(o.latencies, time.Duration(t.ackAt[j]-t.pubAt[i]))
		}
	}
	slices.Sort(o.latencies)
	slices.Sort(acks)
	if len(acks) > 0 {
		o.lastAck = time.Duration(acks[len(acks)-1])
		o.p10 = time.Duration(acks[len(acks)/10])
		o.p90 = time.Duration(acks[len(acks)*9/10])
	}
	return o
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
