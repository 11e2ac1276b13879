package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/jetpush/apns-worker/consumer"
)

// composeFile is the part of docker-compose.yml the test uses.
type composeFile struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
}

// TestComposeStackOutsideDocker runs docker-compose.yml's mock-apns and
// worker services as processes of the apns-worker binary, with the
// command and environment read from the compose file and only the
// addresses and the credentials volume mapped to this machine (service
// names to 127.0.0.1 ports, /home/nonroot and /creds to one directory), a
// nats-server with JetStream standing in for the nats service. Each
// service must pass the image's HEALTHCHECK (apns-worker healthcheck), and
// a job published to the stack must be delivered over HTTP/2: acked, and
// counted in the worker's apns_worker_jobs_delivered_total.
func TestComposeStackOutsideDocker(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var cf composeFile
	require.NoError(t, yaml.Unmarshal(b, &cf))
	mock, worker := cf.Services["mock-apns"], cf.Services["worker"]
	require.NotEmpty(t, mock.Command)
	require.Equal(t, "mock-apns", mock.Command[0])
	require.Equal(t, "http2", worker.Environment["APNS_WORKER_APNS_MODE"])

	dir := t.TempDir()
	bin := filepath.Join(dir, "apns-worker")
	build := exec.Command("go", "build", "-o", bin, "github.com/jetpush/apns-worker/cmd/apns-worker")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: filepath.Join(dir, "nats"), NoSigs: true, NoLog: true})
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(30*time.Second))

	creds := filepath.Join(dir, "creds")
	h2Port, mockHTTP, workerHTTP := freePort(t), freeAddr(t), freeAddr(t)
	local := strings.NewReplacer(
		"nats://nats:4222", ns.ClientURL(),
		"https://mock-apns:2197", "https://127.0.0.1:"+h2Port,
		"/home/nonroot", creds,
		"/creds", creds,
	)

	// mock-apns, its flags from the compose file, listening on loopback.
	var args []string
	for _, a := range mock.Command {
		switch name, _, _ := strings.Cut(a, "="); name {
		case "-http2":
			a = "-http2=127.0.0.1:" + h2Port
		case "-binary", "-feedback":
			a = name + "=127.0.0.1:0"
		case "-http":
			a = "-http=" + mockHTTP
		}
		args = append(args, local.Replace(a))
	}
	startProcess(t, bin, args, nil)
	waitHealthy(t, bin, mockHTTP)

	// The worker, its environment from the compose file.
	env := map[string]string{}
	for k, v := range worker.Environment {
		env[k] = local.Replace(v)
	}
	env["APNS_WORKER_HTTP_ADDR"] = workerHTTP
	startProcess(t, bin, nil, env)
	waitHealthy(t, bin, workerHTTP)

	// A producer publishes a job; the worker acks it once APNs took it.
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	acks := make(chan *nats.Msg, 16)
	_, err = nc.ChanSubscribe("$JS.ACK.APNS_JOBS.>", acks)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	job := consumer.NewJob(tokenFor(1, 0), []byte(`{"aps":{"alert":"hello from compose"}}`))
	job.Topic = worker.Environment["APNS_WORKER_APNS_TOPIC"]
	ack, err := consumer.PublishJob(ctx, js, "apns.jobs", job)
	require.NoError(t, err)
	select {
	case m := <-acks:
		_, seq, ok := ackSeq(m.Subject)
		require.True(t, ok)
		require.Equal(t, ack.Sequence, seq)
		require.Equal(t, "+ACK", string(m.Data))
	case <-ctx.Done():
		t.Fatal("the job was not acked within 60s")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+workerHTTP+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(metrics), "\napns_worker_jobs_delivered_total 1\n")

	// As the in-process mock, the HTTP/2 mock rejects bad0… tokens
	// (400 BadDeviceToken): the producer hears of it as a bad token.
	badTokens := make(chan *nats.Msg, 4)
	_, err = nc.ChanSubscribe("apns.events."+consumer.KindBadToken, badTokens)
	require.NoError(t, err)
	bad := consumer.NewJob(tokenFor(2, 1), []byte(`{"aps":{"alert":"to an uninstalled app"}}`))
	bad.Topic = job.Topic
	_, err = consumer.PublishJob(ctx, js, "apns.jobs", bad)
	require.NoError(t, err)
	select {
	case m := <-badTokens:
		var ev consumer.BadTokenEvent
		require.NoError(t, json.Unmarshal(m.Data, &ev))
		require.Equal(t, bad.Token, ev.Token)
	case <-ctx.Done():
		t.Fatal("no bad-token event within 60s")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	return port
}

// startProcess runs bin with args and, if env is not nil, exactly the
// APNS_WORKER_* variables of env; it is stopped with SIGTERM at cleanup.
func startProcess(t *testing.T, bin string, args []string, env map[string]string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "APNS_WORKER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// waitHealthy runs the image's HEALTHCHECK, `apns-worker healthcheck`
// against addr, until it passes (at most 60s).
func waitHealthy(t *testing.T, bin, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		hc := exec.Command(bin, "healthcheck")
		hc.Env = append(os.Environ(), "APNS_WORKER_HTTP_ADDR="+addr)
		out, err := hc.CombinedOutput()
		if err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "%s not healthy within 60s: %v %s", addr, err, out)
		<-tick.C
	}
}
