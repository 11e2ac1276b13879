package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// Tokens are deterministic, so that an APNs test server in another process
// knows which ones to reject: job i gets 32 bytes, 0x7e57 (or 0xbad0 when i
// is one of the rejected share) followed by i, big-endian, in the last 8.
// The 0xbad0 prefix is also what `apns-worker mock-apns` rejects.
var (
	goodPrefix = [2]byte{0x7e, 0x57}
	badPrefix  = [2]byte{0xba, 0xd0}
)

// isRejected spreads the rejected share evenly: i is rejected when
// floor((i+1)·share) steps past floor(i·share).
func isRejected(i int, share float64) bool {
	if share <= 0 {
		return false
	}
	return int64(float64(i+1)*share) != int64(float64(i)*share)
}

// rejectedIndex numbers the rejected jobs 0, 1, 2…: job i is the
// rejectedIndex(i)-th (when isRejected(i, share)).
func rejectedIndex(i int, share float64) int {
	return int(int64(float64(i+1)*share)) - 1
}

func tokenFor(i int, share float64) apns.Token {
	tok := make(apns.Token, 32)
	p := goodPrefix
	if isRejected(i, share) {
		p = badPrefix
	}
	copy(tok, p[:])
	binary.BigEndian.PutUint64(tok[24:], uint64(i))
	return tok
}

func rejectBadPrefix(tok []byte) (apns.Status, bool) {
	return apns.StatusInvalidToken, len(tok) >= 2 && tok[0] == badPrefix[0] && tok[1] == badPrefix[1]
}

// serverInfo tells a worker how to reach an APNs test server; the
// credential files are in Dir.
type serverInfo struct {
	Protocol string `json:"protocol"`
	Addr     string `json:"addr"` // host:port (binary) or https URL (http2)
	Dir      string `json:"dir"`
	KeyID    string `json:"key_id,omitempty"`
	TeamID   string `json:"team_id,omitempty"`
}

// serverStats is what the APNs test server saw.
type serverStats struct {
	Accepted   int `json:"accepted"`
	Rejected   int `json:"rejected"`
	Duplicates int `json:"duplicates"` // accepted notifications for a token accepted before
	// Missing counts jobs 0..n-1 with a good token the server never
	// accepted: once every job is finished, ones the worker acked as
	// delivered although they never reached APNs.
	Missing      int `json:"missing"`
	Conns        int `json:"conns"`         // connections accepted
	SilentCloses int `json:"silent_closes"` // connections it closed silently (-silent-close)
}

// apnsServer is an APNs test server, in this process or in a child.
type apnsServer interface {
	info() serverInfo
	// stats counts Missing (and, HTTP/2, Duplicates) over the tokens of
	// jobs from..from+n-1.
	stats(from, n int) (serverStats, error)
	close()
}

// Credential file names in serverInfo.Dir, the same as mock-apns writes.
const (
	caFile         = "ca.pem"
	clientCertFile = "client.pem"
	clientKeyFile  = "client-key.pem"
	p8File         = "AuthKey.p8"
)

type localServer struct {
	si    serverInfo
	n     int
	share float64
	gw    *apnstest.Gateway
	h2    *apnstest.HTTP2Server
}

// startLocalServer starts an APNs test server in this process and writes
// its credentials to dir. HTTP/2 rejects tokens 0..n-1 of the rejected
// share with 400 BadDeviceToken; the binary gateway rejects every 0xbad0
// token with status 8. Both count per token, so duplicates are exact.
//
// silentClose > 0 makes it close a connection without an error response or
// GOAWAY at every silentClose-th notification it takes.
func startLocalServer(protocol, listen, dir string, n int, share float64, silentClose int) (*localServer, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	s := &localServer{si: serverInfo{Protocol: protocol, Dir: dir}, n: n, share: share}
	files := map[string][]byte{}
	switch protocol {
	case "binary":
		opts := []apnstest.GatewayOption{apnstest.GatewayAddr(listen), apnstest.RejectFunc(rejectBadPrefix)}
		if silentClose > 0 {
			opts = append(opts, apnstest.CloseEvery(silentClose))
		}
		gw, err := apnstest.ListenGateway(opts...)
		if err != nil {
			return nil, err
		}
		s.gw, s.si.Addr = gw, gw.Addr
		p := gw.PKI()
		files[caFile], files[clientCertFile], files[clientKeyFile] = p.CAPEM, p.ClientCertPEM, p.ClientKeyPEM
	case "http2":
		opts := []apnstest.HTTP2Option{apnstest.HTTP2Listen(listen)}
		if silentClose > 0 {
			opts = append(opts, apnstest.HTTP2CloseEvery(silentClose))
		}
		h2, err := apnstest.ListenHTTP2(opts...)
		if err != nil {
			return nil, err
		}
		for i := range n {
			if isRejected(i, share) {
				h2.Reason(tokenFor(i, share), 400, "BadDeviceToken")
			}
		}
		go func() { _ = h2.Serve() }()
		s.h2, s.si.Addr, s.si.KeyID, s.si.TeamID = h2, h2.URL, h2.KeyID, h2.TeamID
		files[caFile], files[p8File] = h2.PKI.CAPEM, h2.P8()
		files[clientCertFile], files[clientKeyFile] = h2.PKI.ClientCertPEM, h2.PKI.ClientKeyPEM
	default:
		return nil, fmt.Errorf("protocol %q: want binary or http2", protocol)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.close()
		return nil, err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *localServer) info() serverInfo { return s.si }

func (s *localServer) stats(from, n int) (serverStats, error) {
	var st serverStats
	count := func(tok apns.Token) int { return s.gw.Count(tok) }
	if s.gw != nil {
		gs := s.gw.Stats()
		st = serverStats{Accepted: gs.Accepted, Rejected: gs.Rejected, Duplicates: gs.Duplicates, Conns: gs.Conns, SilentCloses: gs.SilentCloses}
	} else {
		count = s.h2.AcceptedFor
		st.Accepted, st.Conns, st.SilentCloses = s.h2.Accepted(), s.h2.Conns(), s.h2.FaultStats().SilentCloses
		for code, k := range s.h2.Statuses() {
			if code != 200 {
				st.Rejected += k
			}
		}
	}
	for i := from; i < from+n; i++ {
		if isRejected(i, s.share) {
			continue
		}
		switch c := count(tokenFor(i, s.share)); {
		case c == 0:
			st.Missing++
		case c > 1 && s.h2 != nil:
			st.Duplicates += c - 1
		}
	}
	return st, nil
}

func (s *localServer) close() {
	if s.gw != nil {
		s.gw.Close()
	}
	if s.h2 != nil {
		s.h2.Close()
	}
}

// serve is `apns-bench -serve`: an APNs test server alone in its process,
// so that a worker's CPU can be measured apart from it. It prints its
// serverInfo as one JSON line, then answers each "stats" line on stdin with
// a serverStats line (of jobs 0..n-1, or "stats FROM N": of jobs
// FROM..FROM+N-1), until ctx is done (SIGINT, SIGTERM).
func serve(ctx context.Context, c *benchConfig, stdin io.Reader, stdout io.Writer) error {
	if c.creds == "" {
		return errors.New("-serve needs -creds DIR")
	}
	s, err := startLocalServer(c.serve, c.listen, c.creds, c.n, c.rejected, c.silentClose)
	if err != nil {
		return err
	}
	defer s.close()
	si := s.info()
	env := fmt.Sprintf("APNS_WORKER_APNS_MODE=%s\nAPNS_WORKER_APNS_ADDR=%s\nAPNS_WORKER_APNS_CA_FILE=%s\n",
		si.Protocol, si.Addr, filepath.Join(si.Dir, caFile))
	if si.KeyID != "" {
		env += fmt.Sprintf("APNS_WORKER_APNS_P8_FILE=%s\nAPNS_WORKER_APNS_KEY_ID=%s\nAPNS_WORKER_APNS_TEAM_ID=%s\nAPNS_WORKER_APNS_TOPIC=%s\n",
			filepath.Join(si.Dir, p8File), si.KeyID, si.TeamID, benchTopic)
	} else {
		env += fmt.Sprintf("APNS_WORKER_APNS_CERT_FILE=%s\nAPNS_WORKER_APNS_KEY_FILE=%s\n",
			filepath.Join(si.Dir, clientCertFile), filepath.Join(si.Dir, clientKeyFile))
		// The window and markers of in-process runs, so a worker started
		// from this file is measured as they measure theirs.
		env += fmt.Sprintf("APNS_WORKER_APNS_ASSUMED_DELIVERED=%s\nAPNS_WORKER_APNS_CONFIRM_AFTER=%s\n", c.window, c.confirm)
	}
	if err := os.WriteFile(filepath.Join(si.Dir, "env"), []byte(env), 0o600); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(si); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			from, n, ok := parseStatsLine(l, c.n)
			if !ok {
				continue
			}
			st, _ := s.stats(from, n)
			if err := enc.Encode(st); err != nil {
				return err
			}
		}
	}
}

// parseStatsLine parses a "stats" or "stats FROM N" line of serve's stdin;
// plain "stats" is of jobs 0..n-1.
func parseStatsLine(l string, n int) (from, count int, ok bool) {
	f := strings.Fields(l)
	switch {
	case len(f) == 1 && f[0] == "stats":
		return 0, n, true
	case len(f) == 3 && f[0] == "stats":
		a, err1 := strconv.Atoi(f[1])
		b, err2 := strconv.Atoi(f[2])
		return a, b, err1 == nil && err2 == nil && a >= 0 && b >= 0
	}
	return 0, 0, false
}

// childServer is `apns-bench -serve` run as a child of this process.
type childServer struct {
	si    serverInfo
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startChildServer(protocol, dir string, n int, share float64, stderr io.Writer) (*childServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve", protocol, "-listen", "127.0.0.1:0", "-creds", dir,
		"-n", fmt.Sprint(n), "-rejected", fmt.Sprint(share))
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childServer{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	line, err := c.readLine(30 * time.Second)
	if err == nil {
		err = json.Unmarshal(line, &c.si)
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("apns test server process: %w", err)
	}
	return c, nil
}

// readLine reads a line from the child, giving up after d.
func (c *childServer) readLine(d time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := c.out.ReadBytes('\n')
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		_ = c.cmd.Process.Kill()
		return nil, fmt.Errorf("no answer within %s", d)
	}
}

func (c *childServer) info() serverInfo { return c.si }

func (c *childServer) stats(from, n int) (serverStats, error) {
	var st serverStats
	if _, err := fmt.Fprintf(c.stdin, "stats %d %d\n", from, n); err != nil {
		return st, err
	}
	line, err := c.readLine(30 * time.Second)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(line, &st)
}

func (c *childServer) close() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}
