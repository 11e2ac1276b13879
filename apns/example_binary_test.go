package apns_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

func ExampleBinaryEngine_Send() {
	good, _ := apns.ParseToken(strings.Repeat("60", 32))
	bad, _ := apns.ParseToken(strings.Repeat("ba", 32))
	gw := apnstest.NewGateway(apnstest.Reject(bad, apns.StatusInvalidToken))
	defer gw.Close()

	out := make(chan apns.Outcome, 2)
	eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), apns.WithRootCAs(gw.RootCAs()),
		apns.WithConns(1), apns.WithAssumeDelivered(100*time.Millisecond),
		apns.WithOutcomeFunc(func(o apns.Outcome) { out <- o }))
	if err != nil {
		log.Fatal(err)
	}
	hello := []byte(`{"aps":{"alert":"hello"}}`)
	for ref, tok := range map[string]apns.Token{"job-1": good, "job-2": bad} {
		if err := eng.Send(context.Background(), &apns.Notification{Token: tok, Payload: hello}, ref); err != nil {
			log.Fatal(err)
		}
	}
	// Close waits for every outcome (here: the assumed-delivered window).
	if err := eng.Close(context.Background()); err != nil {
		log.Fatal(err)
	}
	close(out)
	var lines []string
	for o := range out {
		switch rej, ok := o.Rejection(); {
		case o.Delivered():
			lines = append(lines, fmt.Sprint(o.Ref, " delivered"))
		case ok:
			lines = append(lines, fmt.Sprint(o.Ref, " rejected: ", rej.Status, ", bad token: ", errors.Is(o.Err, apns.ErrBadDeviceToken)))
		default:
			lines = append(lines, fmt.Sprint(o.Ref, " failed: ", o.Err))
		}
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// job-1 delivered
	// job-2 rejected: InvalidToken, bad token: true
}

func ExampleNewBinaryEngine() {
	// Against Apple's sandbox (cert from apns.LoadCertificate); the engine
	// connects on the first Send.
	cert := apnstest.MustPKI().ClientCert
	eng, err := apns.NewBinaryEngine(apns.GatewaySandbox, cert,
		apns.WithConns(2),
		apns.WithAssumeDelivered(5*time.Second),
		apns.WithMaxPayload(apns.MaxPayloadLegacy), // an old gateway
		apns.WithOutcomeFunc(func(o apns.Outcome) { /* ack, nak, publish… */ }))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(eng.Stats().Conns, eng.Stats().Connected)
	fmt.Println(eng.Close(context.Background()))
	// Output:
	// 2 0
	// <nil>
}
