package consumer

import (
	"encoding/json"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetpush/apns-worker/apns"
	"github.com/jetpush/apns-worker/apns/jsonscan"
)

// contractTable returns the rows of the README's validation-contract table
// (its cells, header and rule lines left out).
func contractTable(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, sec, ok := strings.Cut(string(b), "\n### The validation contract\n")
	require.True(t, ok, "README has no validation contract section")
	var rows [][]string
	for _, line := range strings.Split(sec, "\n") {
		if strings.HasPrefix(line, "#") {
			break
		}
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| what ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		require.Len(t, cells, 3, "row %q", line)
		rows = append(rows, cells)
	}
	require.NotEmpty(t, rows)
	return rows
}

var backticked = regexp.MustCompile("`([A-Za-z0-9]+)`")

// TestContractDocsAgree: the README's table, job.schema.json and the code
// name the same reasons, each one of apns's constants, and every rule the
// docs give a reason has a case in the table tests that gets it; the
// documented limits are the code's.
func TestContractDocsAgree(t *testing.T) {
	consts := readReasonConstants(t)

	// The reasons the cases get: the code's.
	byCases := map[string]bool{}
	for _, c := range append(malformedCases(), binaryCases()...) {
		byCases[c.reason] = true
	}

	// The README's table: every reason cell names constants only, and
	// each of them is got by some case; every reason a case gets is in it.
	inTable := map[string]bool{}
	for _, row := range contractTable(t) {
		ms := backticked.FindAllStringSubmatch(row[2], -1)
		require.NotEmpty(t, ms, "row %q names no reason", row[0])
		for _, m := range ms {
			require.True(t, consts[m[1]], "README row %q: %s is not a reason constant", row[0], m[1])
			require.True(t, byCases[m[1]], "README row %q: no case in malformedCases gets %s", row[0], m[1])
			inTable[m[1]] = true
		}
	}
	for r := range byCases {
		require.True(t, inTable[r], "a case gets %s, which the README's table does not name", r)
	}

	// job.schema.json: every reason it names (x-reason or in its text) is
	// a constant that some case gets; every reason a case gets is named.
	b, err := os.ReadFile("job.schema.json")
	require.NoError(t, err)
	inSchema := map[string]bool{}
	for _, w := range regexp.MustCompile(`[A-Z][A-Za-z0-9]+`).FindAllString(string(b), -1) {
		if consts[w] {
			inSchema[w] = true
			require.True(t, byCases[w], "job.schema.json names %s, which no case gets", w)
		}
	}
	for r := range byCases {
		require.True(t, inSchema[r], "a case gets %s, which job.schema.json does not name", r)
	}

	// The limits both state.
	var schema struct {
		Properties map[string]struct {
			Enum        []any  `json:"enum"`
			Pattern     string `json:"pattern"`
			MaxLength   int    `json:"maxLength"`
			Description string `json:"description"`
			OneOf       []struct {
				Type    string   `json:"type"`
				Maximum *float64 `json:"maximum"`
			} `json:"oneOf"`
		} `json:"properties"`
		Description string `json:"description"`
	}
	require.NoError(t, json.Unmarshal(b, &schema))
	p := schema.Properties
	require.Contains(t, p["token"].Pattern, "{1,"+strconv.Itoa(apns.MaxTokenLen)+"}")
	require.Equal(t, 64, p["collapse_id"].MaxLength)
	var maxExp float64
	for _, o := range p["expiration"].OneOf {
		if o.Type == "integer" {
			maxExp = *o.Maximum
		}
	}
	require.Equal(t, float64(math.MaxUint32), maxExp)
	require.Contains(t, schema.Description, "nesting at most "+strconv.Itoa(jsonscan.MaxDepth))
	table := ""
	for _, row := range contractTable(t) {
		table += strings.Join(row, " | ") + "\n"
	}
	for _, n := range []int{apns.HTTP2Limits.MaxPayload, apns.HTTP2Limits.MaxPayloadVoIP, apns.BinaryLimits.MaxPayload, jsonscan.MaxDepth, apns.MaxTokenLen, math.MaxUint32} {
		require.Contains(t, table, strconv.Itoa(n), "the README's table")
	}
	for _, n := range []int{apns.HTTP2Limits.MaxPayload, apns.HTTP2Limits.MaxPayloadVoIP, apns.BinaryLimits.MaxPayload} {
		require.Contains(t, p["payload"].Description, strconv.Itoa(n), "job.schema.json's payload")
	}

	// The schema's enums are what the code accepts: push types, and every
	// priority from 0 to 11 (and null) accepted exactly when listed.
	w := hostileWorker()
	tok := tokHex(400)
	for _, v := range p["push_type"].Enum {
		if s, ok := v.(string); ok {
			require.True(t, apns.PushType(s).Valid(), "push_type %s", s)
		}
	}
	for _, s := range []string{"Alert", "mdm ", "spam"} {
		require.False(t, apns.PushType(s).Valid(), "push_type %s", s)
	}
	listed := map[string]bool{}
	for _, v := range p["priority"].Enum {
		listed[string(must(json.Marshal(v)))] = true
	}
	for _, prio := range []string{"null", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"} {
		_, _, err := w.checkJob([]byte(`{"token":"` + tok + `","payload":` + payload + `,"priority":` + prio + `}`))
		require.Equal(t, listed[prio], err == nil, "priority %s: schema lists it %v, the code says %v", prio, listed[prio], err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// readReasonConstants returns the values of apns's Reason constants, the
// one list (apns/reason.go).
func readReasonConstants(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../apns/reason.go")
	require.NoError(t, err)
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+Reason[A-Za-z0-9]+\s+= "([A-Za-z0-9]+)"`).FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = true
	}
	require.Greater(t, len(out), 40)
	return out
}
