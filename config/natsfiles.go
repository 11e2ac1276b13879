package config

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// The NATS key and certificate files are checked with nats.go's own
// loaders, the ones the connection uses, so that a file the connection
// would fail on stops start-up here, named, rather than as a NATS server
// that seems unreachable.

// checkNATSCreds fails v unless path is a credentials file nats.go can use:
// a user JWT and an NKey seed that signs.
func (d *decoder) checkNATSCreds(v, path string) {
	var o nats.Options
	if err := nats.UserCredentials(path)(&o); err != nil {
		d.failf(v, "%s: %v", path, err)
		return
	}
	jwt, err := o.UserJWT()
	switch {
	case err != nil:
		d.failf(v, "%s: %v", path, err)
		return
	case !looksLikeJWT(jwt):
		d.failf(v, "%s: no user JWT (a credentials file holds a -----BEGIN NATS USER JWT----- block and an NKey seed; a file with only a seed goes in %s)",
			path, fullName("NATS_NKEY"))
		return
	}
	if _, err := o.SignatureCB([]byte("apns-worker start-up check")); err != nil {
		d.failf(v, "%s: no NKey seed that signs: %v", path, unquotePath(err, path))
	}
}

// checkNATSNKey fails v unless path holds an NKey user seed.
func (d *decoder) checkNATSNKey(v, path string) {
	if _, err := nats.NkeyOptionFromSeed(path); err != nil {
		d.failf(v, "%s: no NKey user seed: %v", path, err)
	}
}

// checkNATSKeyPair fails v unless keyFile is the private key of the
// certificate in certFile (both already checked on their own).
func (d *decoder) checkNATSKeyPair(v, certFile, keyFile string) {
	var o nats.Options
	if err := nats.ClientCert(certFile, keyFile)(&o); err != nil {
		d.failf(v, "%s is not the key of %s (%s): %v", keyFile, certFile, fullName("NATS_TLS_CERT"),
			strings.TrimPrefix(err.Error(), "nats: error loading client certificate: "))
	}
}

// looksLikeJWT reports whether s has a JWT's form: three base64url parts
// separated by dots.
func looksLikeJWT(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsFunc(p, func(r rune) bool {
			return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '=')
		}) {
			return false
		}
	}
	return true
}

// unquotePath drops nats.go's `unable to extract key pair from file "path": `
// from err: the error already names the file.
func unquotePath(err error, path string) string {
	s := err.Error()
	if i := strings.Index(s, `"`+path+`": `); i >= 0 {
		return s[i+len(path)+4:]
	}
	return s
}
