package worker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
	"github.com/jetpush/apns-worker/config"
)

// engineCreds are what the feedback client shares with the binary engine.
type engineCreds struct {
	cert  tls.Certificate
	roots *x509.CertPool // nil: system roots
}

// mockBadTokenPrefix: in mock mode, tokens starting with these bytes (hex
// "bad0") are rejected with status 8, so the demo shows rejections too.
var mockBadTokenPrefix = []byte{0xba, 0xd0}

// RejectMockBadTokens is the mock gateways' rule: tokens starting with hex
// "bad0" are rejected with status 8 (InvalidToken).
func RejectMockBadTokens(tok []byte) (apns.Status, bool) {
	return apns.StatusInvalidToken, bytes.HasPrefix(tok, mockBadTokenPrefix)
}

// RejectMockBadTokensHTTP2 is RejectMockBadTokens for the HTTP/2 mock
// (apnstest.HTTP2ReasonFunc): 400 BadDeviceToken.
func RejectMockBadTokensHTTP2(tok apns.Token) (status int, reason string, ok bool) {
	if bytes.HasPrefix(tok, mockBadTokenPrefix) {
		return 400, "BadDeviceToken", true
	}
	return 0, "", false
}

// NewEngine builds the engine the worker builds for cfg (its mode,
// credentials, connections and limits), reporting outcomes to onOutcome;
// closeMock stops mock mode's in-process gateway (call it after the
// engine is closed). apns-bench's direct phase sends with it.
func NewEngine(cfg *config.Config, onOutcome apns.OutcomeFunc, log *slog.Logger) (eng apns.Engine, closeMock func(), err error) {
	eng, _, closeMock, err = newEngine(cfg, onOutcome, log)
	return eng, closeMock, err
}

// newEngine builds the engine the config asks for. closeMock stops the
// in-process gateway of mock mode (a no-op otherwise); call it after the
// engine is closed.
func newEngine(cfg *config.Config, onOutcome apns.OutcomeFunc, log *slog.Logger) (eng apns.Engine, creds engineCreds, closeMock func(), err error) {
	a := cfg.APNs
	closeMock = func() {}
	opts := []apns.Option{
		apns.WithOutcomeFunc(onOutcome),
		apns.WithLogger(log.With(slog.String("component", "apns"))),
		apns.WithConns(a.Conns),
		apns.WithMaxInFlight(cfg.MaxInFlight),
		apns.WithDirectSocketCalls(cfg.SocketCalls == config.SocketCallsDirect),
	}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, creds, closeMock, deadEnd("APNS_WORKER_APNS_CA_FILE", a.CAFile, err)
		}
		creds.roots = x509.NewCertPool()
		if !creds.roots.AppendCertsFromPEM(pem) {
			return nil, creds, closeMock, deadEnd("APNS_WORKER_APNS_CA_FILE", a.CAFile, errors.New("no PEM certificate"))
		}
		opts = append(opts, apns.WithRootCAs(creds.roots))
	}
	binaryOpts := []apns.Option{
		apns.WithAssumeDelivered(a.AssumedDelivered),
		apns.WithMaxPayload(a.MaxPayload),
	}
	if a.IdleTimeout > 0 {
		binaryOpts = append(binaryOpts, apns.WithIdleTimeout(a.IdleTimeout))
	}
	if a.ConfirmAfter > 0 {
		binaryOpts = append(binaryOpts, apns.WithConfirmMarkers(a.ConfirmAfter))
	}

	switch a.Mode {
	case config.ModeMock:
		gw, err := apnstest.ListenGateway(apnstest.CountOnly(), apnstest.RejectFunc(RejectMockBadTokens))
		if err != nil {
			return nil, creds, closeMock, fmt.Errorf("mock gateway: %w", err)
		}
		log.Warn("MOCK APNs MODE: notifications go to an in-process test gateway and reach no device; set APNS_WORKER_APNS_MODE=binary or http2 for Apple",
			slog.String("gateway", gw.Addr), slog.String("rejected_token_prefix", "bad0"))
		opts = append(opts, apns.WithRootCAs(gw.RootCAs()))
		eng, err := apns.NewBinaryEngine(gw.Addr, gw.ClientCert(), append(opts, binaryOpts...)...)
		if err != nil {
			gw.Close()
			return nil, creds, closeMock, err
		}
		return eng, creds, gw.Close, nil

	case config.ModeBinary:
		if creds.cert, err = loadCert(a); err != nil {
			return nil, creds, closeMock, err
		}
		eng, err := apns.NewBinaryEngine(a.Addr, creds.cert, append(opts, binaryOpts...)...)
		return eng, creds, closeMock, err

	case config.ModeHTTP2:
		var auth apns.Auth
		if a.TokenAuth() {
			pem, err := os.ReadFile(a.P8File)
			if err != nil {
				return nil, creds, closeMock, deadEnd("APNS_WORKER_APNS_P8_FILE", a.P8File, err)
			}
			key, err := apns.ParseP8(pem)
			if err != nil {
				return nil, creds, closeMock, deadEnd("APNS_WORKER_APNS_P8_FILE", a.P8File, err)
			}
			auth = apns.TokenAuth(key, a.KeyID, a.TeamID)
		} else {
			if creds.cert, err = loadCert(a); err != nil {
				return nil, creds, closeMock, err
			}
			auth = apns.CertificateAuth(creds.cert)
		}
		opts = append(opts, apns.WithRequestTimeout(a.RequestTimeout))
		if a.Topic != "" {
			opts = append(opts, apns.WithTopic(a.Topic))
		}
		if a.IdleTimeout > 0 {
			opts = append(opts, apns.WithPingInterval(a.IdleTimeout))
		}
		if a.Engine == config.EngineStd {
			eng, err := apns.NewStdEngine(a.Addr, auth, opts...)
			return eng, creds, closeMock, err
		}
		eng, err := apns.NewHTTP2Engine(a.Addr, auth, opts...)
		return eng, creds, closeMock, err
	}
	return nil, creds, closeMock, fmt.Errorf("APNS_WORKER_APNS_MODE: unknown mode %q", a.Mode)
}

func loadCert(a config.APNs) (tls.Certificate, error) {
	if a.KeyFile != "" {
		c, err := apns.LoadPEMCertificate(a.CertFile, a.KeyFile)
		if err != nil {
			return c, deadEnd("APNS_WORKER_APNS_CERT_FILE", a.CertFile, err)
		}
		return c, nil
	}
	c, err := apns.LoadCertificate(a.CertFile, a.CertPassword.Reveal())
	if err != nil {
		return c, deadEnd("APNS_WORKER_APNS_CERT_FILE", a.CertFile, err)
	}
	return c, nil
}
