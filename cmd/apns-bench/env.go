package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/config"
)

// The bench reads APNS_WORKER_* variables as the worker does, with three
// kinds of exception, so that none is silently ignored:
//
//   - flagVars are the defaults of the bench flags that set them (a flag
//     given on the command line wins);
//   - refusedVars are the bench's to set (where NATS and the APNs server
//     are): setting one is an error that names the flag to use;
//   - the APNs credentials go to the workers only with -apns-addr (the
//     bench's own APNs servers have their own).
//
// Every other variable the worker reads goes to the bench's workers as it
// is (config.Load checks it); an unknown one is an error naming the
// nearest valid name.
var flagVars = map[string]string{
	"APNS_WORKER_APNS_CONNS":             "conns",
	"APNS_WORKER_MAX_IN_FLIGHT":          "max-in-flight",
	"APNS_WORKER_APNS_ASSUMED_DELIVERED": "window",
	"APNS_WORKER_APNS_CONFIRM_AFTER":     "confirm-after",
}

var refusedVars = map[string]string{
	"APNS_WORKER_NATS_URL":          "use -nats",
	"APNS_WORKER_APNS_MODE":         "use -protocol",
	"APNS_WORKER_APNS_ADDR":         "use -apns-addr",
	"APNS_WORKER_EMBEDDED_DATA_DIR": "the bench runs its own nats-server in a temporary directory; -nats uses another",
	"APNS_WORKER_EMBEDDED_LISTEN":   "the bench runs its own nats-server on a free port; -nats uses another",
	"APNS_WORKER_HTTP_ADDR":         "the bench's workers serve no HTTP endpoint",
	"APNS_WORKER_LOG_LEVEL":         "use -v for info-level worker logs",
	"APNS_WORKER_LOG_FORMAT":        "the bench's workers log JSON",
}

// credentialVars go to the workers with -apns-addr only.
var credentialVars = []string{
	"APNS_WORKER_APNS_CA_FILE", "APNS_WORKER_APNS_CERT_FILE", "APNS_WORKER_APNS_CERT_PASSWORD",
	"APNS_WORKER_APNS_KEY_FILE", "APNS_WORKER_APNS_P8_FILE", "APNS_WORKER_APNS_KEY_ID",
	"APNS_WORKER_APNS_TEAM_ID", "APNS_WORKER_APNS_TOPIC",
}

// testVars are read by the project's tests, not by the worker.
var testVars = []string{"APNS_WORKER_TEST_DOCKER"}

// applyEnvFlags sets the flags of flagVars from environ, before the command
// line is parsed (so that it wins).
func applyEnvFlags(fs *flag.FlagSet, environ []string) error {
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if name, ok := flagVars[k]; ok {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%s (the default of -%s): %w", k, v, name, err)
			}
		}
	}
	return nil
}

// workerEnvFrom returns the variables of environ that go to the bench's
// workers as they are, and an error for each refused or unknown one.
func workerEnvFrom(environ []string, apnsAddr bool) (map[string]string, []error) {
	env := map[string]string{}
	var errs []error
	for _, u := range config.UnknownVars(environ, testVars...) {
		errs = append(errs, fmt.Errorf("%s: unknown variable (did you mean %s?)", u.Name, u.Nearest))
	}
	known := config.Names()
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case !slices.Contains(known, k):
		case flagVars[k] != "":
		case refusedVars[k] != "":
			errs = append(errs, fmt.Errorf("%s is set: %s", k, refusedVars[k]))
		case slices.Contains(credentialVars, k) && !apnsAddr:
			errs = append(errs, fmt.Errorf("%s is set: the bench's own APNs server has its own credentials; the APNs variables are for -apns-addr", k))
		default:
			env[k] = v
		}
	}
	return env, errs
}

// readTokenList reads hex device tokens, one a line; blank lines and lines
// starting with # are skipped.
func readTokenList(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var toks []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := apns.ParseToken(line); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		toks = append(toks, strings.ToLower(line))
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("%s: no token", path)
	}
	return toks, nil
}
