package feedback_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/feedback"
)

func ExampleClient_Fetch() {
	srv := apnstest.NewFeedbackServer()
	defer srv.Close()
	tok, _ := apns.ParseToken(strings.Repeat("ab", 32))
	srv.Add(tok, time.Unix(1_700_000_000, 0))

	// In production: feedback.NewClient(feedback.Production, cert), with
	// cert from apns.LoadCertificate("push.p12", password).
	c, err := feedback.NewClient(srv.Addr, srv.ClientCert(), feedback.WithRootCAs(srv.RootCAs()))
	if err != nil {
		log.Fatal(err)
	}
	toks, err := c.Fetch(context.Background())
	if err != nil {
		log.Print(err) // toks still holds what was read before the error
	}
	for _, bt := range toks {
		fmt.Println(bt.Token.LogValue(), bt.Time.Format(time.RFC3339))
	}
	// Output: abababab… 2023-11-14T22:13:20Z
}

func ExamplePoller() {
	srv := apnstest.NewFeedbackServer()
	defer srv.Close()
	tok, _ := apns.ParseToken(strings.Repeat("cd", 32))
	srv.Add(tok, time.Unix(1_700_000_000, 0))

	c, err := feedback.NewClient(srv.Addr, srv.ClientCert(), feedback.WithRootCAs(srv.RootCAs()))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	p, err := feedback.NewPoller(c, time.Hour, func(ctx context.Context, toks []feedback.BadToken) error {
		fmt.Println(len(toks), "bad token(s)") // e.g. publish them, unless re-registered since
		stop()
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Run(ctx); err != nil { // polls at once, then hourly, until ctx ends
		log.Fatal(err)
	}
	// Output: 1 bad token(s)
}
