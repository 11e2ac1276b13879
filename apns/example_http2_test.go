package apns_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

func ExampleNewHTTP2Engine() {
	good, _ := apns.ParseToken("a0b1c2d3e4f5a0b1c2d3e4f5a0b1c2d3e4f5a0b1c2d3e4f5a0b1c2d3e4f5a0b1")
	gone, _ := apns.ParseToken("0000000000000000000000000000000000000000000000000000000000000001")
	s := apnstest.NewHTTP2Server(apnstest.HTTP2Reason(gone, 410, "Unregistered"))
	defer s.Close()

	key, err := apns.ParseP8(s.P8()) // in production: the .p8 file from Apple
	if err != nil {
		log.Fatal(err)
	}
	out := make(chan apns.Outcome, 1)
	eng, err := apns.NewHTTP2Engine(s.URL, apns.TokenAuth(key, s.KeyID, s.TeamID),
		apns.WithRootCAs(s.RootCAs()), apns.WithTopic("com.example.app"),
		apns.WithOutcomeFunc(func(o apns.Outcome) { out <- o }))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	defer eng.Close(ctx)

	for i, tok := range []apns.Token{good, gone} {
		n := &apns.Notification{Token: tok, Payload: []byte(`{"aps":{"alert":"hi"}}`)}
		if err := eng.Send(ctx, n, fmt.Sprintf("job-%d", i+1)); err != nil {
			log.Fatal(err)
		}
		o := <-out
		if rej, ok := o.Rejection(); ok {
			fmt.Println(o.Ref, "rejected:", rej.HTTPStatus, rej.Reason, "bad token:", rej.BadToken())
			continue
		}
		fmt.Println(o.Ref, "delivered:", o.Err == nil, len(o.APNsID))
	}
	// Output:
	// job-1 delivered: true 36
	// job-2 rejected: 410 Unregistered bad token: true
}
