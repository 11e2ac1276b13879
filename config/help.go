package config

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

// usageFormat lists one variable a line: name, default, meaning.
const usageFormat = `{{range .}}  {{usage_key .}}	{{with usage_default .}}{{.}}{{else}}-{{end}}	{{usage_description .}}
{{end}}`

// Usage writes every variable Load reads, with its default ("-" for none)
// and its meaning, as an aligned table.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	if err := envconfig.Usagef(Prefix, &spec{}, tw, usageFormat); err != nil {
		return err
	}
	return tw.Flush()
}

// Names returns the name of every variable Load reads.
func Names() []string {
	var b bytes.Buffer
	_ = envconfig.Usagef(Prefix, &spec{}, &b, "{{range .}}{{usage_key .}}\n{{end}}")
	return strings.Fields(b.String())
}

// Unknown is a variable with the worker's prefix that no setting reads,
// usually a misspelling.
type Unknown struct {
	Name    string
	Nearest string // the closest valid name
}

// UnknownVars returns the variables in environ (os.Environ's form) that
// start with Prefix and that neither Load nor one of extra reads, each
// with the nearest valid name (Levenshtein distance).
func UnknownVars(environ []string, extra ...string) []Unknown {
	known := append(Names(), extra...)
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k] = true
	}
	var out []Unknown
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, Prefix+"_") || isKnown[k] {
			continue
		}
		u := Unknown{Name: k}
		best := -1
		for _, c := range known {
			if d := levenshtein(k, c); best < 0 || d < best {
				best, u.Nearest = d, c
			}
		}
		out = append(out, u)
	}
	return out
}

// levenshtein is the edit distance between a and b (bytes).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
