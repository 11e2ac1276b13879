package apns_test

import (
	"fmt"
	"log"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/apnstest"
)

func ExampleParseP12Certificate() {
	pki := apnstest.MustPKI()
	// A .p12 as Keychain Access exports it; in production use
	// apns.LoadCertificate("push.p12", password).
	p12, err := pkcs12.Modern.Encode(pki.ClientKey, pki.ClientX509, nil, "secret")
	if err != nil {
		log.Fatal(err)
	}
	cert, err := apns.ParseP12Certificate(p12, "secret")
	if err != nil {
		log.Fatal(err)
	}
	if err := apns.CheckValidity(cert, time.Now()); err != nil {
		log.Print(err) // or fail at start-up
	}
	fmt.Println(cert.Leaf.Subject.CommonName)

	_, err = apns.ParseP12Certificate(p12, "wrong")
	fmt.Println(err)
	// Output:
	// Apple Push Services: com.example.app
	// apns: bad client certificate: wrong PKCS#12 password: PKCS#12
}
