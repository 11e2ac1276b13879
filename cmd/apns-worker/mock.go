package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/jetpush/apns-worker/apns/apnstest"
)

// runMockAPNs serves the in-process test servers (binary gateway, feedback
// HTTP/2 provider API) on fixed addresses and writes the
// credentials a worker needs to reach them into -dir. For the docker compose
// demo: nothing here reaches Apple.
func runMockAPNs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mock-apns", flag.ContinueOnError)
	binaryAddr := fs.String("binary", "127.0.0.1:2195", "binary gateway listen address")
	feedbackAddr := fs.String("feedback", "127.0.0.1:2196", "feedback service listen address")
	http2Addr := fs.String("http2", "127.0.0.1:2197", "HTTP/2 provider API listen address")
	host := fs.String("host", "localhost", "extra host name for the server certificate")
	dir := fs.String("dir", "./data/mock-apns", "where to write ca.pem, client.pem, client-key.pem, AuthKey.p8 and env")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	pki, err := apnstest.NewPKIFor(*host)
	if err != nil {
		return err
	}
	gw, err := apnstest.ListenGateway(apnstest.GatewayPKI(pki), apnstest.GatewayAddr(*binaryAddr), apnstest.CountOnly(),
		apnstest.RejectFunc(rejectMockBadTokens))
	if err != nil {
		return err
	}
	defer gw.Close()
	fb := apnstest.NewFeedbackServer(apnstest.FeedbackPKI(pki), apnstest.FeedbackAddr(*feedbackAddr))
	defer fb.Close()
	h2, err := apnstest.ListenHTTP2(apnstest.HTTP2PKI(pki), apnstest.HTTP2Listen(*http2Addr))
	if err != nil {
		return err
	}
	defer h2.Close()
	go func() { _ = h2.Serve() }()

	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	env := fmt.Sprintf("APNS_WORKER_APNS_KEY_ID=%s\nAPNS_WORKER_APNS_TEAM_ID=%s\n", h2.KeyID, h2.TeamID)
	for name, b := range map[string][]byte{
		"ca.pem":         pki.CAPEM,
		"client.pem":     pki.ClientCertPEM,
		"client-key.pem": pki.ClientKeyPEM,
		"AuthKey.p8":     h2.P8(),
		"env":            []byte(env),
	} {
		if err := os.WriteFile(filepath.Join(*dir, name), b, 0o644); err != nil {
			return err
		}
	}
	log.Warn("MOCK APNs: test servers, nothing reaches Apple",
		slog.String("binary", gw.Addr), slog.String("feedback", fb.Addr), slog.String("http2", h2.URL),
		slog.String("credentials", *dir), slog.String("key_id", h2.KeyID), slog.String("team_id", h2.TeamID))
	<-ctx.Done()
	return nil
}
