package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/consumer"
)

// The worker's default names (config defaults).
const (
	jobsStream    = "APNS_JOBS"
	jobsSubject   = "apns.jobs"
	durable       = "apns-worker"
	eventsStream  = "APNS_EVENTS"
	eventsPrefix  = "apns.events"
	subjRejected  = eventsPrefix + "." + consumer.KindRejected
	subjBadTokens = eventsPrefix + "." + consumer.KindBadToken
	helloPayload  = `{"aps":{"alert":"hi"}}`
)

// ctxT returns a context bounded by d and the test.
func ctxT(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// startNATS starts an embedded nats-server with JetStream (file storage in
// a temporary directory) on 127.0.0.1; it is shut down at cleanup.
func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	return startServer(tb, &server.Options{
		JetStream: true, StoreDir: tb.TempDir(), Host: "127.0.0.1", Port: -1,
		NoLog: true, NoSigs: true,
	})
}

// startServer starts a nats-server with o and waits until it takes
// connections; it is shut down at cleanup.
func startServer(tb testing.TB, o *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(o)
	require.NoError(tb, err)
	go s.Start()
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	require.True(tb, s.ReadyForConnections(30*time.Second), "nats-server %s not ready", o.ServerName)
	return s
}

// connect connects the test to url (comma-separated for a cluster); the
// connection is closed at cleanup (registered after the servers', so it
// closes first).
func connect(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024), jetstream.WithPublishAsyncTimeout(10*time.Second))
	require.NoError(tb, err)
	return nc, js
}

// freeAddr returns a loopback address that was free a moment ago and that
// it has not returned before in this process.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(tb, err)
		addr := ln.Addr().String()
		require.NoError(tb, ln.Close())
		// The kernel may give a port just closed again: one test asking
		// for two addresses got the same one twice (NATS and HTTP), and
		// the worker dialled its own HTTP server.
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut is every address freeAddr returned in this process.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// token returns a distinct 32-byte device token for (tag, i).
func token(tag byte, i int) apns.Token {
	t := make(apns.Token, 32)
	t[0] = tag
	t[1] = 0x5a
	binary.BigEndian.PutUint64(t[24:], uint64(i))
	return t
}

// job is one published job.
type job struct {
	ID    string
	Token apns.Token
	Seq   uint64 // jobs stream sequence
}

// publishJobs publishes n jobs to the jobs subject with PublishAsync
// (bounded pending), ids "<prefix>-<i>" (also their Nats-Msg-Id) and the
// tokens tok(i), and waits for every PubAck.
func publishJobs(tb testing.TB, js jetstream.JetStream, prefix string, n int, tok func(i int) apns.Token) []job {
	tb.Helper()
	return publish(tb, js, prefix, n, tok, false)
}

// publishJobsRetrying is publishJobs for a cluster losing a node: a publish
// without a PubAck is repeated (same Nats-Msg-Id, so never stored twice)
// until it is stored, as a careful producer does.
func publishJobsRetrying(tb testing.TB, js jetstream.JetStream, prefix string, n int, tok func(i int) apns.Token) []job {
	tb.Helper()
	return publish(tb, js, prefix, n, tok, true)
}

func publish(tb testing.TB, js jetstream.JetStream, prefix string, n int, tok func(i int) apns.Token, retry bool) []job {
	jobs := make([]job, n)
	futs := make([]jetstream.PubAckFuture, n)
	for i := range n {
		j := consumer.Job{ID: fmt.Sprintf("%s-%d", prefix, i), Token: tok(i).String(), Payload: json.RawMessage(helloPayload)}
		data, err := json.Marshal(j)
		require.NoError(tb, err)
		jobs[i] = job{ID: j.ID, Token: tok(i)}
		m := &nats.Msg{Subject: jobsSubject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{j.ID}}}
		futs[i], err = js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second))
		require.NoError(tb, err, "publish job %d", i)
	}
	retries := 0
	for i, f := range futs {
		if !retry {
			jobs[i].Seq = awaitPubAck(tb, f)
			continue
		}
		select {
		case ack := <-f.Ok():
			jobs[i].Seq = ack.Sequence
			continue
		case <-f.Err():
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			retries++
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ack, err := js.PublishMsg(ctx, f.Msg())
			cancel()
			if err == nil {
				jobs[i].Seq = ack.Sequence
				break
			}
			require.False(tb, time.Now().After(deadline), "job %d not stored within 90s: %v", i, err)
			time.Sleep(100 * time.Millisecond) // retry pause
		}
	}
	if retries > 0 {
		tb.Logf("%d publishes repeated", retries)
	}
	return jobs
}

// publishRaw publishes raw bytes as a job and returns its sequence.
func publishRaw(tb testing.TB, js jetstream.JetStream, data []byte) uint64 {
	tb.Helper()
	ack, err := js.Publish(ctxT(tb, 30*time.Second), jobsSubject, data)
	require.NoError(tb, err)
	return ack.Sequence
}

func awaitPubAck(tb testing.TB, f jetstream.PubAckFuture) uint64 {
	tb.Helper()
	select {
	case ack := <-f.Ok():
		require.False(tb, ack.Duplicate, "job %s published twice", f.Msg().Header.Get(jetstream.MsgIDHeader))
		return ack.Sequence
	case err := <-f.Err():
		require.NoError(tb, err, "publish %s", f.Msg().Header.Get(jetstream.MsgIDHeader))
	case <-time.After(60 * time.Second):
		tb.Fatal("no PubAck within 60s")
	}
	return 0
}

// streamState returns the stream's state, with the deleted sequences.
func streamState(tb testing.TB, js jetstream.JetStream, name string) jetstream.StreamState {
	tb.Helper()
	ctx := ctxT(tb, 30*time.Second)
	s, err := js.Stream(ctx, name)
	require.NoError(tb, err)
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	require.NoError(tb, err)
	return info.State
}

// subjectCount returns how many messages the events stream holds on subj.
func subjectCount(tb testing.TB, js jetstream.JetStream, subj string) int {
	tb.Helper()
	ctx := ctxT(tb, 30*time.Second)
	s, err := js.Stream(ctx, eventsStream)
	require.NoError(tb, err)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	require.NoError(tb, err)
	return int(info.State.Subjects[subj])
}

func consumerInfo(tb testing.TB, js jetstream.JetStream) *jetstream.ConsumerInfo {
	tb.Helper()
	ctx := ctxT(tb, 30*time.Second)
	c, err := js.Consumer(ctx, jobsStream, durable)
	require.NoError(tb, err)
	info, err := c.Info(ctx)
	require.NoError(tb, err)
	return info
}

// started holds each test's worker processes, so that waitDrained can give
// up at once when none is left to drain the stream.
var started struct {
	sync.Mutex
	by map[testing.TB][]*worker
}

func registerWorker(tb testing.TB, w *worker) {
	started.Lock()
	defer started.Unlock()
	if started.by == nil {
		started.by = map[testing.TB][]*worker{}
	}
	if started.by[tb] == nil {
		tb.Cleanup(func() {
			started.Lock()
			delete(started.by, tb)
			started.Unlock()
		})
	}
	started.by[tb] = append(started.by[tb], w)
}

// allWorkersExited reports whether tb started workers and every one of them
// has exited.
func allWorkersExited(tb testing.TB) bool {
	started.Lock()
	ws := started.by[tb]
	started.Unlock()
	for _, w := range ws {
		select {
		case <-w.done:
		default:
			return false
		}
	}
	return len(ws) > 0
}

// waitDrained waits until the jobs stream is empty and the durable has
// nothing pending or waiting for an ack. It fails at once if every worker
// the test started has exited (their logs follow at cleanup).
func waitDrained(tb testing.TB, js jetstream.JetStream, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var msgs uint64
		var ci *jetstream.ConsumerInfo
		s, err := js.Stream(ctx, jobsStream)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil {
				msgs = info.State.Msgs
				var c jetstream.Consumer
				if c, err = js.Consumer(ctx, jobsStream, durable); err == nil {
					ci, err = c.Info(ctx)
				}
			}
		}
		cancel()
		if err == nil {
			if msgs == 0 && ci.NumPending == 0 && ci.NumAckPending == 0 {
				return
			}
			last = fmt.Sprintf("stream msgs %d, consumer pending %d, ack pending %d, redelivered %d",
				msgs, ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("jobs not drained within %s: %s", within, last)
		}
		if allWorkersExited(tb) {
			tb.Fatalf("jobs not drained and every worker has exited: %s", last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitFor polls cond every 20ms until it holds, failing after within.
func waitFor(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// readEvents returns every event stored on subj, decoded, in order.
func readEvents[T any](tb testing.TB, js jetstream.JetStream, subj string) []T {
	tb.Helper()
	n := subjectCount(tb, js, subj)
	ctx := ctxT(tb, 60*time.Second)
	// Read whole again after a failed fetch: in the cluster tests the
	// events stream may be electing a leader (no responders) as it is read.
	for {
		out, err := fetchEvents[T](ctx, tb, js, subj, n)
		if err == nil {
			return out
		}
		if ctx.Err() != nil {
			require.NoError(tb, err, "reading %d events on %s", n, subj)
		}
		tb.Logf("reading events on %s again: %v", subj, err)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fetchEvents reads the n events on subj, or says why it could not; an
// event that does not decode fails the test.
func fetchEvents[T any](ctx context.Context, tb testing.TB, js jetstream.JetStream, subj string, n int) ([]T, error) {
	c, err := js.OrderedConsumer(ctx, eventsStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, n)
	for len(out) < n {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			var ev T
			require.NoError(tb, json.Unmarshal(m.Data(), &ev), "event %s", m.Data())
			out = append(out, ev)
			got++
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if got == 0 {
			return nil, fmt.Errorf("no events fetched: have %d of %d on %s", len(out), n, subj)
		}
	}
	return out, nil
}

// pkiFiles writes a PKI's CA, client certificate and key as PEM files.
type pkiFiles struct{ CA, Cert, Key string }

func writePKI(tb testing.TB, p *apnstest.PKI) pkiFiles {
	tb.Helper()
	dir := tb.TempDir()
	f := pkiFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "client.pem"), Key: filepath.Join(dir, "client-key.pem")}
	require.NoError(tb, os.WriteFile(f.CA, p.CAPEM, 0o600))
	require.NoError(tb, os.WriteFile(f.Cert, p.ClientCertPEM, 0o600))
	require.NoError(tb, os.WriteFile(f.Key, p.ClientKeyPEM, 0o600))
	return f
}

// startGateway starts a binary test gateway, closed at cleanup.
func startGateway(tb testing.TB, opts ...apnstest.GatewayOption) *apnstest.Gateway {
	tb.Helper()
	gw, err := apnstest.ListenGateway(opts...)
	require.NoError(tb, err)
	tb.Cleanup(gw.Close)
	return gw
}

// binaryEnv is the environment of a worker in binary mode sending to gw
// through NATS at natsURL. The feedback poller is off (FEEDBACK_INTERVAL=0)
// unless the caller sets it.
func binaryEnv(tb testing.TB, natsURL string, gw *apnstest.Gateway, assumed time.Duration) map[string]string {
	tb.Helper()
	f := writePKI(tb, gw.PKI())
	return map[string]string{
		"APNS_WORKER_NATS_URL":               natsURL,
		"APNS_WORKER_APNS_MODE":              "binary",
		"APNS_WORKER_APNS_ADDR":              gw.Addr,
		"APNS_WORKER_APNS_CA_FILE":           f.CA,
		"APNS_WORKER_APNS_CERT_FILE":         f.Cert,
		"APNS_WORKER_APNS_KEY_FILE":          f.Key,
		"APNS_WORKER_APNS_ASSUMED_DELIVERED": assumed.String(),
		"APNS_WORKER_FEEDBACK_INTERVAL":      "0",
		"APNS_WORKER_JOBS_BACKOFF":           "200ms,1s",
	}
}

// worker is a worker process.
type worker struct {
	tb       testing.TB
	name     string
	cmd      *exec.Cmd
	log      *procLog
	done     chan struct{} // closed when the process has exited
	waitErr  error         // valid after done
	HTTPAddr string        // "" when /metrics is off
}

// startWorker runs the worker binary with a clean environment: PATH, HOME
// and env (APNS_WORKER_* only), plus JSON logs and, unless env says
// otherwise, no HTTP endpoint. It waits until the worker logs that it
// runs. At cleanup a worker still running is killed, and its log is
// printed if the test failed.
func startWorker(tb testing.TB, name string, env map[string]string) *worker {
	tb.Helper()
	w := spawnWorker(tb, name, env)
	w.waitRunning(tb, 90*time.Second, "")
	return w
}

// waitRunning waits until w logs that it runs; it fails the test if w
// exits first or within passes (after, if not empty, says after what).
func (w *worker) waitRunning(tb testing.TB, within time.Duration, after string) {
	tb.Helper()
	if after != "" {
		after = " " + after
	}
	select {
	case <-w.log.running:
	case <-w.done:
		tb.Fatalf("worker %s exited before running: %v\n%s", w.name, w.waitErr, w.log.tail())
	case <-time.After(within):
		tb.Fatalf("worker %s not running %s%s\n%s", w.name, within, after, w.log.tail())
	}
}

// spawnWorker starts the process without waiting for it to run.
func spawnWorker(tb testing.TB, name string, env map[string]string) *worker {
	tb.Helper()
	full := map[string]string{
		"APNS_WORKER_LOG_FORMAT":     "json",
		"APNS_WORKER_HTTP_ADDR":      "",
		"APNS_WORKER_SHUTDOWN_GRACE": "30s",
	}
	maps.Copy(full, env)
	cmdEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range slices.Sorted(maps.Keys(full)) {
		require.True(tb, strings.HasPrefix(k, "APNS_WORKER_"), "env %s", k)
		cmdEnv = append(cmdEnv, k+"="+full[k])
	}
	w := &worker{tb: tb, name: name, log: newProcLog(), done: make(chan struct{}), HTTPAddr: full["APNS_WORKER_HTTP_ADDR"]}
	w.cmd = exec.Command(workerBin)
	w.cmd.Env = cmdEnv
	w.cmd.Dir = tb.TempDir()
	w.cmd.Stdout = w.log
	w.cmd.Stderr = w.log
	require.NoError(tb, w.cmd.Start())
	go func() {
		w.waitErr = w.cmd.Wait()
		close(w.done)
	}()
	registerWorker(tb, w)
	tb.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		if tb.Failed() {
			tb.Logf("worker %s log (tail):\n%s", name, w.log.tail())
		}
	})
	return w
}

// stop sends SIGTERM and waits for the exit, returning the exit code.
func (w *worker) stop(within time.Duration) int {
	w.tb.Helper()
	require.NoError(w.tb, w.cmd.Process.Signal(syscall.SIGTERM))
	return w.wait(within)
}

// wait waits for the process to exit and returns its exit code.
func (w *worker) wait(within time.Duration) int {
	w.tb.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		_ = w.cmd.Process.Kill()
		<-w.done
		w.tb.Fatalf("worker %s did not exit within %s\n%s", w.name, within, w.log.tail())
	}
	return w.cmd.ProcessState.ExitCode()
}

func (w *worker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// metric scrapes the worker's /metrics and returns the value of the
// un-labelled sample name.
func (w *worker) metric(name string) float64 {
	w.tb.Helper()
	require.NotEmpty(w.tb, w.HTTPAddr, "worker %s has no HTTP address", w.name)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + w.HTTPAddr + "/metrics")
	require.NoError(w.tb, err)
	defer resp.Body.Close()
	require.Equal(w.tb, http.StatusOK, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(w.tb, err, "metric line %q", line)
			return f
		}
	}
	require.NoError(w.tb, sc.Err())
	w.tb.Fatalf("metric %s not found at %s", name, w.HTTPAddr)
	return 0
}

// procLog collects a process's output (its last 512 KiB) and notices the
// "worker running" log line.
type procLog struct {
	mu      sync.Mutex
	buf     []byte
	line    []byte
	running chan struct{}
	seen    bool
}

const procLogMax = 512 << 10

func newProcLog() *procLog { return &procLog{running: make(chan struct{})} }

func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 2*procLogMax {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-procLogMax:]...)
	}
	if !l.seen {
		l.line = append(l.line, p...)
		for {
			i := bytes.IndexByte(l.line, '\n')
			if i < 0 {
				break
			}
			if bytes.Contains(l.line[:i], []byte(`"worker running"`)) {
				l.seen = true
				close(l.running)
				l.line = nil
				break
			}
			l.line = l.line[i+1:]
		}
	}
	return len(p), nil
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

func (l *procLog) tail() string {
	s := l.String()
	if len(s) > 64<<10 {
		s = "…" + s[len(s)-64<<10:]
	}
	return s
}

var _ io.Writer = (*procLog)(nil)

// presentSeqs returns the sequences a stream still holds.
func presentSeqs(st jetstream.StreamState) map[uint64]bool {
	present := map[uint64]bool{}
	if st.Msgs == 0 {
		return present
	}
	deleted := map[uint64]bool{}
	for _, s := range st.Deleted {
		deleted[s] = true
	}
	for s := st.FirstSeq; s <= st.LastSeq; s++ {
		if !deleted[s] {
			present[s] = true
		}
	}
	return present
}

// counter counts what an APNs test server accepted for a token:
// Gateway.Count or HTTP2Server.AcceptedFor.
type counter interface{ count(apns.Token) int }

type gatewayCounter struct{ *apnstest.Gateway }

func (g gatewayCounter) count(t apns.Token) int { return g.Count(t) }

type h2Counter struct{ *apnstest.HTTP2Server }

func (h h2Counter) count(t apns.Token) int { return h.AcceptedFor(t) }

// requireNoAckWithoutDelivery checks that every job no longer in the jobs
// stream reached the server (or was told to be rejected by it): nothing was
// acked or terminated without an outcome.
func requireNoAckWithoutDelivery(tb testing.TB, js jetstream.JetStream, gw counter, jobs []job, rejected func(apns.Token) bool) (gone int) {
	tb.Helper()
	present := presentSeqs(streamState(tb, js, jobsStream))
	var lost []string
	for _, j := range jobs {
		if present[j.Seq] {
			continue
		}
		gone++
		if gw.count(j.Token) == 0 && (rejected == nil || !rejected(j.Token)) {
			lost = append(lost, j.ID)
		}
	}
	require.Empty(tb, lost, "%d jobs left the stream without reaching the gateway (first: %v)", len(lost), lost[:min(len(lost), 10)])
	return gone
}

// requireAllDelivered checks that the gateway accepted every job's token
// (except those rejected), and returns the duplicates it saw.
func requireAllDelivered(tb testing.TB, gw *apnstest.Gateway, jobs []job, rejected func(apns.Token) bool) (dups int) {
	tb.Helper()
	return requireAllAccepted(tb, gatewayCounter{gw}, jobs, rejected)
}

func requireAllAccepted(tb testing.TB, gw counter, jobs []job, rejected func(apns.Token) bool) (dups int) {
	tb.Helper()
	var missing []string
	for _, j := range jobs {
		if rejected != nil && rejected(j.Token) {
			continue
		}
		switch n := gw.count(j.Token); {
		case n == 0:
			missing = append(missing, j.ID)
		case n > 1:
			dups += n - 1
		}
	}
	require.Empty(tb, missing, "%d jobs never reached the gateway (first: %v)", len(missing), missing[:min(len(missing), 10)])
	return dups
}
