package enginetest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// faultCase is one hostile behaviour under which every accepted
// notification must get exactly one outcome of the right class.
type faultCase struct {
	name   string
	faults faults
	opts   []apns.Option // engine options of this case (protocol's own allowed)
	k      int           // notifications (default 300)
	// waves sends the k notifications in that many waves, each once the
	// previous one has its outcomes, so that the engine writes after a
	// fault that came mid-run (default 1).
	waves int
	noBad bool // no bad tokens (else every tenth is one)
	// delivered: every good token must be delivered (the fault is
	// bounded and retries cover it); otherwise a good token may fail, but
	// is never rejected.
	delivered bool
	// badRejected: every bad token must be rejected as a bad token (the
	// server's verdict reaches the engine); otherwise a bad token may also
	// fail, but is never delivered.
	badRejected bool
	// badMayDeliver: a bad token may even count as delivered (a binary
	// engine assumes delivery of what it wrote to a gateway that stopped
	// reading or reset the connection before answering).
	badMayDeliver bool
	// once: the server must have processed every good token at most once
	// (the fault leaves no doubt about what was processed, so nothing is
	// sent again that the server took).
	once bool
	// goAway: the engine must answer the fault with a GOAWAY of this code
	// (HTTP/2; 0: not checked).
	goAway http2.ErrCode
	// connField: the fault is a connection-specific response field,
	// skipped for an engine that cannot see them (HidesConnectionFields).
	connField bool
	// happened reports how often the server carried the fault out; it
	// must be positive, or the case proved nothing.
	happened func(Server) int
}

// Counters of what the servers' hostile options did.
func h2closes(s Server) int    { return s.HTTP2.FaultStats().SilentCloses }
func h2goAways(s Server) int   { return s.HTTP2.FaultStats().GoAways }
func h2answers(s Server) int   { return s.HTTP2.FaultStats().Answers }
func h2settings(s Server) int  { return s.HTTP2.FaultStats().Settings }
func h2stalls(s Server) int    { return s.HTTP2.FaultStats().Stalls }
func h2conns(s Server) int     { return s.HTTP2.Conns() - 1 } // GOAWAY NO_ERROR: connections replaced
func gwCloses(s Server) int    { return s.Gateway.Stats().SilentCloses }
func gwResets(s Server) int    { return s.Gateway.Stats().Resets }
func gwShutdowns(s Server) int { return s.Gateway.Stats().Shutdowns }
func gwStalled(s Server) int   { return s.Gateway.Stats().Accepted - 99 } // stalls after 100

// faultRetries is the retry budget of fault cases: bounded faults must not
// exhaust it.
const faultRetries = 8

func faultCases(fcs []faultCase) []scenario {
	var out []scenario
	for _, fc := range fcs {
		out = append(out, scenario{fc.name, func(t *testing.T, e *env) { runFault(t, e, fc) }})
	}
	return out
}

func runFault(t *testing.T, e *env, fc faultCase) {
	if fc.connField && e.hidesConnFields != "" {
		t.Skip(e.hidesConnFields)
	}
	k := fc.k
	if k == 0 {
		k = 300
	}
	srv := e.server(fc.faults)
	eng, col := e.engine(srv, append([]apns.Option{apns.WithMaxRetries(faultRetries)}, fc.opts...)...)
	accepted := map[int]bool{}
	waves := max(fc.waves, 1)
	for w := range waves {
		for i := range sendRange(t, e.ctx, eng, w*k/waves, (w+1)*k/waves, !fc.noBad) {
			accepted[i] = true
		}
		col.wait(t, e.ctx, len(accepted))
	}
	_, err := closeBounded(t, e.ctx, eng, 10*time.Second)
	require.NoError(t, err, "Close after every outcome arrived")
	got := col.exactlyOne(t, accepted)

	wrong := map[string][]int{}
	causes := map[string]string{}
	add := func(what string, i int, o apns.Outcome) {
		wrong[what] = append(wrong[what], i)
		if _, ok := causes[what]; !ok {
			causes[what] = firstLine(fmt.Sprint(o.Err), 100)
		}
	}
	for i, o := range got {
		bad := !fc.noBad && i%10 == 7
		rej, rejected := o.Rejection()
		switch {
		case !bad && rejected:
			add("good token rejected", i, o)
		case !bad && fc.delivered && o.Err != nil:
			add("good token not delivered", i, o)
		case bad && o.Err == nil && !fc.badMayDeliver:
			add("bad token delivered", i, o)
		case bad && rejected && !rej.BadToken():
			add("bad token rejected for another reason", i, o)
		case bad && fc.badRejected && !rejected:
			add("bad token not rejected", i, o)
		case !bad && fc.once && processed(srv, token(i, false)) > 1:
			add("good token processed more than once by the server", i, o)
		case !bad && o.Err == nil && srv.HTTP2 != nil && processed(srv, token(i, false)) == 0:
			// HTTP/2 answers every request: delivered means APNs took it.
			add("good token delivered but never taken by the server", i, o)
		}
	}
	if fc.happened != nil && fc.happened(srv) <= 0 {
		add("the server never carried the fault out", -1, apns.Outcome{})
	}
	switch {
	case fc.goAway == 0:
	case e.noGoAwayCode != "":
		t.Logf("GOAWAY %s not checked: %s (client GOAWAYs %v)", fc.goAway, e.noGoAwayCode, srv.HTTP2.ClientGoAways())
	case srv.HTTP2.ClientGoAways()[fc.goAway] == 0:
		add("no GOAWAY "+fc.goAway.String()+" from the engine", -1, apns.Outcome{Err: fmt.Errorf("client GOAWAYs %v", srv.HTTP2.ClientGoAways())})
	}
	var report []string
	for what, refs := range wrong {
		sort.Ints(refs)
		report = append(report, fmt.Sprintf("%s: %d (e.g. ref %d: %s)", what, len(refs), refs[0], causes[what]))
	}
	sort.Strings(report)
	require.Emptyf(t, report, "outcomes of the wrong class, of %d accepted", len(accepted))
}

// firstLine is s up to its first newline, at most n bytes.
func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > n {
		s = s[:n] + " …"
	}
	return s
}

// processed is how often srv took tok.
func processed(srv Server, tok apns.Token) int {
	if srv.Gateway != nil {
		return srv.Gateway.Count(tok)
	}
	return srv.HTTP2.AcceptedFor(tok)
}

// h2after answers the next n requests as the server would, then the count
// after them with a.
func h2after(n, count int, a apnstest.HTTP2Answer) []apnstest.HTTP2Option {
	return []apnstest.HTTP2Option{
		apnstest.HTTP2InjectAnswer(n, apnstest.HTTP2Answer{}),
		apnstest.HTTP2InjectAnswer(count, a),
	}
}

func h2(opts ...apnstest.HTTP2Option) faults { return faults{h2: opts} }

// http2Faults are the hostile behaviours of an HTTP/2 path to APNs.
func http2Faults() []faultCase {
	padded := func(pad int, before bool) faults {
		return h2(apnstest.HTTP2AnswerFunc(func(tok apns.Token) (apnstest.HTTP2Answer, bool) {
			return apnstest.PaddedReasonAnswer(400, "BadDeviceToken", pad, before), isBad(tok)
		}))
	}
	all := func(s ...http2.Setting) faults {
		return h2(apnstest.HTTP2SendSettings(apnstest.HTTP2SettingsFault{Settings: s}))
	}
	mid := func(s ...http2.Setting) faults {
		return h2(apnstest.HTTP2SendSettings(apnstest.HTTP2SettingsFault{Settings: s, AfterRequests: 10, Conns: 2}))
	}
	const ok = true
	return []faultCase{
		{name: "NoFault", delivered: ok, badRejected: ok, once: ok},
		{name: "SilentCloseEvery", happened: h2closes, faults: h2(apnstest.HTTP2CloseEvery(50)), delivered: ok, badRejected: ok},
		{name: "SilentCloseRandom", happened: h2closes, faults: h2(apnstest.HTTP2CloseRandom(40, 1)), delivered: ok, badRejected: ok},
		{name: "GoAwayNoError", happened: h2conns, faults: h2(apnstest.HTTP2GoAwayAfter(60)), delivered: ok, badRejected: ok, once: ok},
		{name: "GoAwayInternalError", happened: h2goAways, delivered: ok, badRejected: ok,
			faults: h2(apnstest.HTTP2GoAwayCode(60, http2.ErrCodeInternal, apnstest.GoAwayLastRead))},
		{name: "GoAwayLastStreamZero", happened: h2goAways, delivered: ok, badRejected: ok, once: ok,
			faults: h2(apnstest.HTTP2GoAwayCode(60, http2.ErrCodeNo, apnstest.GoAwayLastZero))},
		{name: "RefusedStream", happened: h2answers, faults: h2(h2after(50, 40, apnstest.ResetAnswer(http2.ErrCodeRefusedStream))...), delivered: ok, badRejected: ok, once: ok},
		{name: "ResetInternalError", happened: h2answers, faults: h2(h2after(50, 30, apnstest.ResetAnswer(http2.ErrCodeInternal))...), delivered: ok, badRejected: ok, once: ok},
		{name: "TooManyRequests429", happened: h2answers, faults: h2(h2after(50, 40, apnstest.ReasonAnswer(429, "TooManyRequests"))...), delivered: ok, badRejected: ok, once: ok},
		{name: "ServiceUnavailable503", happened: h2answers, faults: h2(h2after(50, 40, apnstest.ReasonAnswer(503, "ServiceUnavailable"))...), delivered: ok, badRejected: ok, once: ok},
		{name: "NonAPNs404HTML", happened: h2answers, faults: h2(h2after(50, 40, apnstest.HTMLAnswer(404))...), delivered: ok, badRejected: ok, once: ok},
		// A window of foreign answers may outlast an engine's retries:
		// work may then fail (to be retried later), never be rejected.
		{name: "NonAPNs404Window", happened: h2answers, faults: h2(apnstest.HTTP2InjectAnswerFor(300*time.Millisecond, apnstest.HTMLAnswer(404))), once: ok},
		{name: "NonAPNs502Proxy", happened: h2answers, faults: h2(h2after(50, 40, apnstest.ProxyAnswer(502))...), delivered: ok, badRejected: ok, once: ok},
		{name: "NonAPNs504Proxy", happened: h2answers, faults: h2(h2after(50, 40, apnstest.ProxyAnswer(504))...), delivered: ok, badRejected: ok, once: ok},
		// A captive portal's page with a 200 is not APNs taking the
		// notification.
		{name: "NonAPNs200HTML", happened: h2answers, faults: h2(h2after(50, 40, apnstest.HTMLAnswer(200))...), delivered: ok, badRejected: ok, once: ok},
		{name: "NonAPNs400NotJSON", happened: h2answers, faults: h2(h2after(50, 40, apnstest.TextAnswer(400, "Bad Request"))...), delivered: ok, badRejected: ok, once: ok},
		// Apple's JSON in a malformed response (RFC 9113 §8.1.1, §8.2.1):
		// a stream error, never the verdict it seems to carry.
		{name: "MalformedContentLengthLonger", happened: h2answers, delivered: ok, badRejected: ok, once: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(410, "Unregistered", hpack.HeaderField{Name: "content-length", Value: "500"}))...)},
		{name: "MalformedContentLengthShorter", happened: h2answers, delivered: ok, badRejected: ok, once: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(400, "BadDeviceToken", hpack.HeaderField{Name: "content-length", Value: "5"}))...)},
		{name: "MalformedUpperCaseName", happened: h2answers, delivered: ok, badRejected: ok, once: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(400, "BadDeviceToken", hpack.HeaderField{Name: "Content-Type", Value: "application/json"}))...)},
		{name: "MalformedConnectionField", happened: h2answers, delivered: ok, badRejected: ok, once: ok, connField: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(410, "Unregistered", hpack.HeaderField{Name: "connection", Value: "close"}))...)},
		{name: "MalformedTransferEncoding", happened: h2answers, delivered: ok, badRejected: ok, once: ok, connField: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(400, "BadDeviceToken", hpack.HeaderField{Name: "transfer-encoding", Value: "chunked"}))...)},
		{name: "MalformedTE", happened: h2answers, delivered: ok, badRejected: ok, once: ok,
			faults: h2(h2after(50, 40, apnstest.MalformedHTTP2Answer(410, "Unregistered", hpack.HeaderField{Name: "te", Value: "gzip"}))...)},
		// A 200 with a 20 KB header: delivered if the engine takes a header
		// list that large, else a fault of that stream only; nothing else
		// in flight is lost and sent again. (No bad tokens: the injected
		// 200s would answer them too.)
		{name: "OversizedHeader20KB", happened: h2answers, faults: h2(h2after(50, 30, apnstest.PaddedAnswer(20<<10))...),
			noBad: ok, delivered: ok, once: ok},
		{name: "OversizedErrorBodyPaddedBefore", happened: h2answers, faults: padded(20<<10, true), delivered: ok, badRejected: ok, once: ok},
		{name: "OversizedErrorBody100KB", happened: h2answers, faults: padded(100<<10, false), delivered: ok, badRejected: ok, once: ok},
		// Invalid SETTINGS on every connection from its start: nothing can
		// be delivered, but every notification ends, in bounded time.
		// The engine refuses them with GOAWAY (RFC 9113 §6.5.2).
		{name: "InvalidSettingsMaxFrameSize0", happened: h2settings, faults: all(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0}),
			k: 30, waves: 3, goAway: http2.ErrCodeProtocol},
		{name: "InvalidSettingsMaxFrameSizeTooLarge", happened: h2settings, faults: all(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24}),
			k: 30, waves: 3, goAway: http2.ErrCodeProtocol},
		{name: "InvalidSettingsInitialWindowSize", happened: h2settings, faults: all(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}),
			k: 30, waves: 3, goAway: http2.ErrCodeFlowControl},
		{name: "InvalidSettingsEnablePush2", happened: h2settings, faults: all(http2.Setting{ID: http2.SettingEnablePush, Val: 2}),
			k: 30, waves: 3, goAway: http2.ErrCodeProtocol},
		// Invalid SETTINGS after 10 requests on the first two connections:
		// they are replaced, and everything is delivered.
		{name: "InvalidSettingsMaxFrameSize0MidConnection", happened: h2settings, faults: mid(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 0}),
			waves: 3, delivered: ok, badRejected: ok},
		{name: "InvalidSettingsInitialWindowSizeMidConnection", happened: h2settings, faults: mid(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}),
			waves: 3, delivered: ok, badRejected: ok},
		// Refused credentials fail work with ErrCredentials (never a
		// rejection); 200s for requests in flight arrive after the 403s.
		{name: "CredentialsRefused403", happened: h2answers, faults: h2(append(h2after(100, 20, apnstest.CredentialsAnswer("InvalidProviderToken")),
			apnstest.HTTP2Latency(20*time.Millisecond))...), once: ok},
		{name: "CredentialsRefused403Window", happened: h2answers, once: ok, faults: h2(
			apnstest.HTTP2InjectAnswer(100, apnstest.HTTP2Answer{}),
			apnstest.HTTP2InjectAnswerFor(200*time.Millisecond, apnstest.CredentialsAnswer("ExpiredProviderToken")),
			apnstest.HTTP2Latency(20*time.Millisecond))},
		{name: "SlowResponses", faults: h2(apnstest.HTTP2Latency(50 * time.Millisecond)), delivered: ok, badRejected: ok, once: ok},
		{name: "StalledConnection", happened: h2stalls, faults: h2(apnstest.HTTP2StallAfter(50)), opts: []apns.Option{apns.WithRequestTimeout(time.Second)},
			delivered: ok, badRejected: ok, once: ok},
	}
}

func gw(opts ...apnstest.GatewayOption) faults { return faults{gw: opts} }

// binaryFaults are the hostile behaviours of a binary gateway.
func binaryFaults() []faultCase {
	return []faultCase{
		{name: "NoFault", delivered: true, badRejected: true, once: true},
		{name: "SilentCloseEvery", happened: gwCloses, faults: gw(apnstest.CloseEvery(64)), delivered: true, badRejected: true},
		{name: "SilentCloseRandom", happened: gwCloses, faults: gw(apnstest.CloseRandom(64, 1)), delivered: true, badRejected: true},
		// The reset may destroy the error response: the engine may not
		// learn which notification was bad.
		{name: "ResetAfterError", happened: gwResets, faults: gw(apnstest.ResetAfterError()), delivered: true, badMayDeliver: true},
		{name: "Shutdown10", happened: gwShutdowns, faults: gw(apnstest.ShutdownEvery(50)), delivered: true, badRejected: true, once: true},
		{name: "StalledGateway", happened: gwStalled, faults: gw(apnstest.StallAfter(100)), noBad: true},
	}
}
