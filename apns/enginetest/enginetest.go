// Package enginetest is the contract every apns.Engine passes: a table of
// named features, each a subtest, run against an engine constructor and
// the apnstest server of the engine's protocol (the shape of watermill's
// pub/sub test suite). An engine's test file is a few lines:
//
//	func TestContractHTTP2(t *testing.T) {
//		enginetest.Run(t, enginetest.Features{Protocol: enginetest.HTTP2},
//			func(t *testing.T, s enginetest.Server, opts ...apns.Option) apns.Engine {
//				key, err := apns.ParseP8(s.HTTP2.P8())
//				require.NoError(t, err)
//				e, err := apns.NewHTTP2Engine(s.HTTP2.URL, apns.TokenAuth(key, s.HTTP2.KeyID, s.HTTP2.TeamID),
//					append([]apns.Option{apns.WithRootCAs(s.HTTP2.RootCAs()), apns.WithTopic(enginetest.Topic)}, opts...)...)
//				require.NoError(t, err)
//				return e
//			})
//	}
//
// The suite starts a fresh server per case, with the hostile options of
// apnstest that case is about, builds the engine with the suite's options
// (outcome function, in-flight bound, …) after the engine's own, and closes
// both. Every wait is bounded, so an engine that hangs fails its case
// instead of stalling the run.
package enginetest

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

// Protocol is the wire protocol an engine speaks, which decides the test
// server the suite starts.
type Protocol string

const (
	Binary Protocol = "binary" // the legacy binary protocol: apnstest.Gateway
	HTTP2  Protocol = "http2"  // the HTTP/2 provider API: apnstest.HTTP2Server
)

// Topic is the apns-topic the suite's notifications are for; HTTP/2
// engines should default to it (apns.WithTopic).
const Topic = "com.example.enginetest"

// RunPendingEnv names the environment variable that, when set, makes Run
// run the Pending cases too, to see which an engine now passes:
//
//	ENGINETEST_RUN_PENDING=1 go test -run TestContract ./apns/
//
// Mind the reasons: a case pending because the engine hangs or grows
// without bound will do so.
const RunPendingEnv = "ENGINETEST_RUN_PENDING"

// Server is the test server the suite started for one case: Gateway for
// Binary, HTTP2 for HTTP2.
type Server struct {
	Gateway *apnstest.Gateway
	HTTP2   *apnstest.HTTP2Server
}

// NewEngine builds the engine under test against srv, putting opts (the
// suite's) after its own defaults. The suite closes the engine.
type NewEngine func(t *testing.T, srv Server, opts ...apns.Option) apns.Engine

// Features describes the engine under test.
type Features struct {
	Protocol Protocol
	// Pending names cases the engine is known to fail, by their path
	// below Run (e.g. "ExactlyOneOutcome/NonAPNs404HTML"), each with what
	// is wrong. They are skipped with "pending #10: <reason>" (unless
	// RunPendingEnv is set); delete the entry to run the case. A name that
	// matches no case fails the run.
	Pending map[string]string
	// NoGoAwayCode, when set, says why the engine's connection does not
	// always answer a peer's protocol error (an invalid SETTINGS) with a
	// GOAWAY carrying the code, as RFC 9113 asks: the cases still run and
	// check every outcome, but not that GOAWAY. Only for an engine whose
	// HTTP/2 is someone else's (x/net's Transport); ours must send it.
	NoGoAwayCode string
	// HidesConnectionFields, when set, says why the engine cannot see a
	// response's connection-specific fields (connection,
	// transfer-encoding…), which make it malformed (RFC 9113 §8.2.2): the
	// cases that send them are skipped with this reason. Only for an
	// engine whose HTTP/2 is someone else's (x/net's Transport deletes
	// them); ours must refuse such a response.
	HidesConnectionFields string
	// CaseTimeout bounds each case (default 30s).
	CaseTimeout time.Duration
}

// feature is one named entry of the suite's table.
type feature struct {
	name  string
	proto Protocol // "" for every protocol
	cases []scenario
	// run is set for a feature with a single scenario.
	run func(*testing.T, *env)
}

// scenario is one subtest of a feature.
type scenario struct {
	name string
	run  func(*testing.T, *env)
}

func features() []feature {
	return []feature{
		{name: "SendSemantics", cases: sendCases()},
		{name: "CloseSemantics", cases: closeCases()},
		{name: "ExactlyOneOutcome", proto: Binary, cases: faultCases(binaryFaults())},
		{name: "ExactlyOneOutcome", proto: HTTP2, cases: faultCases(http2Faults())},
		{name: "CredentialsGate", proto: HTTP2, run: testCredentialsGate},
		{name: "SilentCloseBoundedResends", proto: Binary, cases: silentCloseCases()},
	}
}

// Run runs every feature that applies to f.Protocol against newEngine, each
// a subtest; cases in f.Pending are skipped with their reason.
func Run(t *testing.T, f Features, newEngine NewEngine) {
	if f.Protocol != Binary && f.Protocol != HTTP2 {
		t.Fatalf("enginetest: unknown protocol %q", f.Protocol)
	}
	if f.CaseTimeout <= 0 {
		f.CaseTimeout = 30 * time.Second
	}
	all := applicable(f.Protocol)
	if err := checkPending(f, all); err != nil {
		t.Fatal(err)
	}
	for _, ft := range all {
		t.Run(ft.name, func(t *testing.T) {
			if ft.run != nil {
				runCase(t, f, newEngine, ft.name, ft.run)
				return
			}
			for _, sc := range ft.cases {
				t.Run(sc.name, func(t *testing.T) {
					runCase(t, f, newEngine, ft.name+"/"+sc.name, sc.run)
				})
			}
		})
	}
}

// applicable lists the features that apply to proto.
func applicable(proto Protocol) []feature {
	var all []feature
	for _, ft := range features() {
		if ft.proto == "" || ft.proto == proto {
			all = append(all, ft)
		}
	}
	return all
}

// checkPending reports Pending names that match no case of all: a typo
// would leave a case skipped for no reason, or run one meant to wait.
func checkPending(f Features, all []feature) error {
	known := map[string]bool{}
	for _, ft := range all {
		if ft.run != nil {
			known[ft.name] = true
		}
		for _, sc := range ft.cases {
			known[ft.name+"/"+sc.name] = true
		}
	}
	var unknown []string
	for name := range f.Pending {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("enginetest: Pending names no case of %s: %q", f.Protocol, unknown)
}

func runCase(t *testing.T, f Features, newEngine NewEngine, name string, run func(*testing.T, *env)) {
	if reason, ok := f.Pending[name]; ok {
		if os.Getenv(RunPendingEnv) == "" {
			t.Skip("pending #10: " + reason)
		}
		t.Log("pending #10, run because " + RunPendingEnv + " is set: " + reason)
	}
	e := newEnv(t, f, newEngine)
	run(t, e)
}
