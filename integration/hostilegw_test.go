package integration

import (
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// hostileGW is an APNs provider API written on Go's own HTTP/2 server
// (net/http, not apnstest's server) that misbehaves on request: fault
// phases for ranges of requests, oversized headers and error bodies, slow
// answers and a 403 phase with delayed in-flight answers. It counts the
// 200s it gave per token.
type hostileGW struct {
	URL string
	PKI *apnstest.PKI
	srv *httptest.Server

	bad    map[string]badAnswer // token hex → its answer
	phases []gwPhase            // by request serial
	serial atomic.Int64         // requests received

	mu       sync.Mutex
	ok       map[string]int     // 200s per token
	okAt     map[string][]int64 // the serials of those 200s
	statuses map[int]int
	arrivals []time.Time // when each request arrived

	refusal *refusalPhase // nil: no 403 phase
}

// badAnswer is how the gateway refuses a known-bad token.
type badAnswer int

const (
	badDeviceToken      badAnswer = iota + 1 // 400 BadDeviceToken
	badUnregistered                          // 410 Unregistered with a timestamp
	badPaddedBefore20K                       // 400, 20 KB of whitespace then the JSON
	badPaddedAfter100K                       // 400, the JSON then 100 KB+ of whitespace
	badPaddedHeader20K                       // 400 BadDeviceToken with a 20 KB header
	badPaddedBefore100K                      // 400, 100 KB+ of whitespace then the JSON
)

// phaseKind is a fault the gateway answers with for a range of requests.
type phaseKind int

const (
	phaseHTML404      phaseKind = iota + 1 // a web server's 404 page
	phaseProxy502                          // a proxy's 502 text
	phaseProxy504                          // a proxy's 504 text
	phaseText400                           // 400 whose body is not JSON
	phaseJSON500                           // 500 with JSON but no reason
	phaseSlow                              // the normal answer, 300 ms late
	phasePaddedHeader                      // the normal answer with a 20 KB header
)

// gwPhase applies kind to requests from..to-1 (serials from 1).
type gwPhase struct {
	from, to int64
	kind     phaseKind
}

const (
	padHeader   = 20 << 10
	slowLatency = 300 * time.Millisecond
)

// startHostileGW starts the gateway on 127.0.0.1 with TLS from a new
// apnstest PKI; it is closed at cleanup.
func startHostileGW(tb testing.TB, bad map[string]badAnswer, phases []gwPhase) *hostileGW {
	tb.Helper()
	g := &hostileGW{PKI: apnstest.MustPKI(), bad: bad, phases: phases, ok: map[string]int{}, okAt: map[string][]int64{}, statuses: map[int]int{}}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(g.serve))
	g.srv.EnableHTTP2 = true
	g.srv.TLS = g.PKI.ServerTLS(false)
	g.srv.TLS.NextProtos = []string{"h2"}
	g.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut by the proxy
	g.srv.StartTLS()
	tb.Cleanup(g.close)
	g.URL = g.srv.URL
	return g
}

func (g *hostileGW) close() {
	g.mu.Lock()
	r := g.refusal
	g.mu.Unlock()
	if r != nil {
		r.releaseAll()
	}
	g.srv.CloseClientConnections()
	g.srv.Close()
}

// count returns the 200s given for t.
func (g *hostileGW) count(t apns.Token) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ok[t.String()]
}

// servedAt returns the serials of the requests for t answered 200.
func (g *hostileGW) servedAt(t apns.Token) []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.okAt[t.String()]...)
}

func (g *hostileGW) statusCounts() map[int]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.statuses)
}

// arrivedBetween counts the requests that arrived in [from, to).
func (g *hostileGW) arrivedBetween(from, to time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, at := range g.arrivals {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func (g *hostileGW) phase(serial int64) phaseKind {
	for _, p := range g.phases {
		if serial >= p.from && serial < p.to {
			return p.kind
		}
	}
	return 0
}

func (g *hostileGW) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	serial := g.serial.Add(1)
	g.mu.Lock()
	g.arrivals = append(g.arrivals, time.Now())
	ref := g.refusal
	g.mu.Unlock()

	tokHex, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if r.Method != http.MethodPost || !ok {
		g.reason(w, http.StatusNotFound, "BadPath")
		return
	}
	if _, err := hex.DecodeString(tokHex); err != nil || len(tokHex) != 64 {
		g.reason(w, http.StatusBadRequest, "BadDeviceToken")
		return
	}
	if !strings.HasPrefix(r.Header.Get("authorization"), "bearer ") {
		g.reason(w, http.StatusForbidden, "MissingProviderToken")
		return
	}
	if ref != nil && ref.intercept(g, w, serial) {
		return
	}
	switch g.phase(serial) {
	case phaseHTML404:
		g.fault(w, serial, http.StatusNotFound, "text/html; charset=utf-8",
			"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")
		return
	case phaseProxy502:
		g.fault(w, serial, http.StatusBadGateway, "text/plain", "502 Bad Gateway: upstream connect error or disconnect/reset before headers\n")
		return
	case phaseProxy504:
		g.fault(w, serial, http.StatusGatewayTimeout, "text/plain", "upstream request timeout\n")
		return
	case phaseText400:
		g.fault(w, serial, http.StatusBadRequest, "text/plain", "Bad Request\n")
		return
	case phaseJSON500:
		g.fault(w, serial, http.StatusInternalServerError, "application/json", `{"error":"internal","code":500}`)
		return
	case phaseSlow:
		select {
		case <-time.After(slowLatency): // the server's latency, part of its behaviour
		case <-r.Context().Done():
			return
		}
	case phasePaddedHeader:
		w.Header().Set("x-padding", strings.Repeat("p", padHeader))
	}
	g.answer(w, serial, tokHex)
}

// answer gives the normal answer for the token: its bad answer, or 200.
func (g *hostileGW) answer(w http.ResponseWriter, serial int64, tokHex string) {
	ws := strings.Repeat(" \n", 10<<10)
	switch g.bad[tokHex] {
	case badDeviceToken:
		g.reason(w, http.StatusBadRequest, "BadDeviceToken")
	case badUnregistered:
		g.write(w, http.StatusGone, "application/json",
			fmt.Sprintf(`{"reason":"Unregistered","timestamp":%d}`, time.Now().Add(-time.Hour).UnixMilli()))
	case badPaddedBefore20K:
		g.write(w, http.StatusBadRequest, "application/json", ws+`{"reason":"BadDeviceToken"}`)
	case badPaddedAfter100K:
		g.write(w, http.StatusBadRequest, "application/json", `{"reason":"BadDeviceToken"}`+strings.Repeat(ws, 5))
	case badPaddedBefore100K:
		g.write(w, http.StatusBadRequest, "application/json", strings.Repeat(ws, 5)+`{"reason":"BadDeviceToken"}`)
	case badPaddedHeader20K:
		w.Header().Set("x-padding", strings.Repeat("q", padHeader))
		g.reason(w, http.StatusBadRequest, "BadDeviceToken")
	default:
		g.mu.Lock()
		g.ok[tokHex]++
		g.okAt[tokHex] = append(g.okAt[tokHex], serial)
		g.statuses[http.StatusOK]++
		n := len(g.arrivals)
		g.mu.Unlock()
		w.Header().Set("apns-id", fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n))
		w.WriteHeader(http.StatusOK)
	}
}

// fault writes an answer that is not APNs'; every fifth one also carries
// a 20 KB header.
func (g *hostileGW) fault(w http.ResponseWriter, serial int64, status int, ctype, body string) {
	if serial%5 == 0 {
		w.Header().Set("x-padding", strings.Repeat("f", padHeader))
	}
	g.write(w, status, ctype, body)
}

func (g *hostileGW) reason(w http.ResponseWriter, status int, reason string) {
	g.write(w, status, "application/json", `{"reason":"`+reason+`"}`)
}

func (g *hostileGW) write(w http.ResponseWriter, status int, ctype, body string) {
	g.mu.Lock()
	g.statuses[status]++
	g.mu.Unlock()
	w.Header().Set("content-type", ctype)
	w.Header().Set("apns-id", "00000000-0000-4000-8000-000000000000")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// refusalPhase is a 403 phase: after `after` requests, the next `hold` get no
// answer yet (in flight); then every request for `window` is answered 403
// with `reason`, and the held ones get their 200 a moment after the first
// 403 went out, so that they arrive after it.
type refusalPhase struct {
	after  int64
	reason string
	hold   int
	window time.Duration

	mu       sync.Mutex
	held     int
	start    time.Time     // the window's start; zero until every hold is in
	end      time.Time     // the window's end
	refused  int           // 403s given
	first    chan struct{} // closed once the first 403 was flushed
	firstSet bool
	released time.Time // when the held answers went out (after the first 403)
	done     chan struct{}
}

// refusalLatency is how long after the first 403 the held 200s are
// answered: the server's latency, so that they reach the worker after it.
const refusalLatency = 200 * time.Millisecond

// arm403 arms a 403 phase (see refusalPhase).
func (g *hostileGW) arm403(reason string, after int64, hold int, window time.Duration) *refusalPhase {
	r := &refusalPhase{after: after, reason: reason, hold: hold, window: window, first: make(chan struct{}), done: make(chan struct{})}
	g.mu.Lock()
	g.refusal = r
	g.mu.Unlock()
	return r
}

// intercept answers the request if the phase claims it.
func (r *refusalPhase) intercept(g *hostileGW, w http.ResponseWriter, serial int64) bool {
	if serial <= r.after {
		return false
	}
	r.mu.Lock()
	switch {
	case r.start.IsZero() && r.held < r.hold:
		r.held++
		if r.held == r.hold {
			r.start = time.Now()
			r.end = r.start.Add(r.window)
		}
		r.mu.Unlock()
		select {
		case <-r.first:
		case <-r.done:
			return true // closing: no answer
		}
		select {
		case <-time.After(refusalLatency):
		case <-r.done:
			return true
		}
		r.mu.Lock()
		if r.released.IsZero() {
			r.released = time.Now()
		}
		r.mu.Unlock()
		return false // the normal answer, after the 403s
	case !r.start.IsZero() && time.Now().Before(r.end):
		r.refused++
		r.mu.Unlock()
		g.reason(w, http.StatusForbidden, r.reason)
		w.(http.Flusher).Flush()
		r.mu.Lock()
		if !r.firstSet {
			r.firstSet = true
			close(r.first)
		}
		r.mu.Unlock()
		return true
	}
	r.mu.Unlock()
	return false
}

func (r *refusalPhase) releaseAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.done:
	default:
		close(r.done)
	}
}

// over reports whether the window has ended, with its bounds.
func (r *refusalPhase) over() (over bool, start, end, released time.Time, refused int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.start.IsZero() && time.Now().After(r.end), r.start, r.end, r.released, r.refused
}
