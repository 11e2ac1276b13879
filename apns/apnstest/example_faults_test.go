package apnstest_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/jetpush/apns-worker/apns/apnstest"
)

// A captive portal in the path for two requests: its HTML 404s are not
// Apple's verdict, which a client must not take for a rejection.
func ExampleHTTP2InjectAnswer() {
	s := apnstest.NewHTTP2Server(
		apnstest.HTTP2InjectAnswer(1, apnstest.HTTP2Answer{}), // one normal answer, then
		apnstest.HTTP2InjectAnswer(2, apnstest.HTMLAnswer(404)),
	)
	defer s.Close()

	tk := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": s.TeamID, "iat": time.Now().Unix()})
	tk.Header["kid"] = s.KeyID
	bearer, err := tk.SignedString(s.Key)
	if err != nil {
		log.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.RootCAs()}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}

	for range 4 {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/3/device/"+strings.Repeat("ab", 32),
			bytes.NewReader([]byte(`{"aps":{"alert":"hi"}}`)))
		req.Header.Set("authorization", "bearer "+bearer)
		req.Header.Set("apns-topic", "com.example.app")
		res, err := cl.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		res.Body.Close()
		fmt.Println(strings.TrimSpace(fmt.Sprint(res.StatusCode, " ", res.Header.Get("content-type"))))
	}
	fmt.Println("accepted:", s.Accepted())
	// Output:
	// 200
	// 404 text/html; charset=utf-8
	// 404 text/html; charset=utf-8
	// 200
	// accepted: 2
}
