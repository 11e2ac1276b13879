package config

import (
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Phase 1 parsers: one variable's value to its typed value, or an error
// naming the variable. Each records its variable as seen.

func (d *decoder) str(v, s string) string {
	d.seen[v] = true
	return s
}

// duration parses a Go duration; zero is allowed only when zeroOK.
func (d *decoder) duration(v, s string, zeroOK bool) time.Duration {
	d.str(v, s)
	t, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		d.fail(v, err)
	case t < 0 || t == 0 && !zeroOK:
		d.failf(v, "%v must be positive", t)
	}
	return t
}

// durations parses a comma-separated list of positive durations.
func (d *decoder) durations(v, s string) []time.Duration {
	d.str(v, s)
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		t, err := time.ParseDuration(strings.TrimSpace(f))
		switch {
		case err != nil:
			d.fail(v, err)
			return nil
		case t <= 0:
			d.failf(v, "%v must be positive", t)
			return nil
		}
		out = append(out, t)
	}
	return out
}

func (d *decoder) integer(v, s string, lo, hi int) int {
	d.str(v, s)
	i, err := strconv.Atoi(strings.TrimSpace(s))
	switch {
	case err != nil:
		d.failf(v, "%q is not an integer", s)
	case i < lo || i > hi:
		d.failf(v, "%d is out of range %d..%d", i, lo, hi)
	}
	return i
}

// optInteger is integer, with empty meaning 0 (a default chosen later).
func (d *decoder) optInteger(v, s string, lo, hi int) int {
	if strings.TrimSpace(s) == "" {
		d.str(v, s)
		return 0
	}
	return d.integer(v, s, lo, hi)
}

func (d *decoder) boolean(v, s string) bool {
	d.str(v, s)
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		d.failf(v, "%q is not true or false", s)
	}
	return b
}

// oneOf returns s lower-cased if it is one of allowed, and def if s is
// empty.
func (d *decoder) oneOf(v, s, def string, allowed ...string) string {
	d.str(v, s)
	if strings.TrimSpace(s) == "" {
		return def
	}
	t := strings.ToLower(strings.TrimSpace(s))
	for _, a := range allowed {
		if t == a {
			return t
		}
	}
	d.failf(v, "%q is not one of %s", s, strings.Join(allowed, ", "))
	return ""
}

func (d *decoder) level(v, s string) slog.Level {
	switch d.oneOf(v, s, "info", "debug", "info", "warn", "error") {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// hostPort checks host:port. Listen addresses (listen) may omit the host
// and use port 0; empty is allowed (a default or "disabled").
func (d *decoder) hostPort(v, s string, listen bool) string {
	d.str(v, s)
	if s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		d.failf(v, "%q is not host:port", s)
		return s
	}
	p, err := strconv.Atoi(port)
	lo := 1
	if listen {
		lo = 0
	}
	switch {
	case err != nil || p < lo || p > 65535:
		d.failf(v, "%q: port %q is not a number in %d..65535", s, port, lo)
	case host == "" && !listen:
		d.failf(v, "%q: missing host", s)
	}
	return s
}

// natsURLs parses a comma-separated list of NATS server URLs.
func (d *decoder) natsURLs(v, s string) []string {
	d.str(v, s)
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		shown := redactURL(raw)
		if raw == "" {
			d.failf(v, "empty URL in the list %q", redactURL(s))
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			var uerr *url.Error
			if shown != raw || !errors.As(err, &uerr) {
				d.failf(v, "parse %q: invalid URL", shown) // the detail may quote a secret
			} else {
				d.failf(v, "parse %q: %v", shown, uerr.Err)
			}
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			d.failf(v, "%q: scheme %q is not nats, tls, ws or wss (want nats://host:4222)", shown, u.Scheme)
			continue
		}
		if u.Hostname() == "" {
			d.failf(v, "%q: missing host", shown)
			continue
		}
		if u.User != nil {
			// Secrets belong in their own variables, which Config redacts.
			d.failf(v, "%q: credentials in the URL are not allowed: use %s and %s, or %s",
				shown, fullName("NATS_USER"), fullName("NATS_PASSWORD"), fullName("NATS_TOKEN"))
			continue
		}
		out = append(out, raw)
	}
	return out
}

// baseURL checks an https base URL for the HTTP/2 API.
func (d *decoder) baseURL(v, s string) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		d.failf(v, "parse %q: invalid URL", redactURL(s))
	case u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "":
		d.failf(v, "%q is not a base URL like https://api.push.apple.com or https://127.0.0.1:8443", redactURL(s))
	}
}

// redactURL hides the user information of a URL, which may hold a password
// or a token, even when the URL does not parse.
func redactURL(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		if at := strings.LastIndex(s, "@"); at >= 0 {
			return redacted + s[at:]
		}
		return s
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	return s[:i+3] + redacted + rest[at:]
}

// name checks a JetStream stream or consumer name.
func (d *decoder) name(v, s string) string {
	d.str(v, s)
	switch {
	case s == "":
		d.failf(v, "must not be empty")
	case len(s) > maxNameLen:
		d.failf(v, "longer than %d bytes", maxNameLen)
	case strings.ContainsAny(s, " \t\r\n.*>/\\"):
		d.failf(v, "%q: a JetStream name may not hold whitespace, '.', '*', '>', '/' or '\\'", s)
	}
	return s
}

// subject checks a literal NATS subject (no wildcards).
func (d *decoder) subject(v, s string) string {
	d.str(v, s)
	if s == "" {
		d.failf(v, "must not be empty")
		return s
	}
	if strings.ContainsAny(s, " \t\r\n") {
		d.failf(v, "%q: a subject may not hold whitespace", s)
		return s
	}
	for _, tok := range strings.Split(s, ".") {
		switch tok {
		case "":
			d.failf(v, "%q: empty token", s)
			return s
		case "*", ">":
			d.failf(v, "%q: wildcards are not allowed", s)
			return s
		}
	}
	return s
}

// appleID checks a 10-character Apple key or team id.
func (d *decoder) appleID(v, s string) string {
	d.str(v, s)
	if s == "" {
		return s
	}
	valid := len(s) == 10
	for _, r := range s {
		valid = valid && (r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}
	if !valid {
		d.failf(v, "%q is not 10 characters A-Z, 0-9", s)
	}
	return s
}

// topic checks an apns-topic: a bundle id, maybe with a push-type suffix.
func (d *decoder) topic(v, s string) string {
	d.str(v, s)
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) {
		d.failf(v, "%q is not a bundle id like com.example.app", s)
	}
	return s
}
