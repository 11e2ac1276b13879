package worker

import (
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// logSummary logs, at INFO, what the worker did since started: the job
// counters of its /metrics and its uptime.
func logSummary(log *slog.Logger, reg prometheus.Gatherer, started time.Time) {
	attrs := []any{slog.String("uptime", time.Since(started).Round(time.Second).String())}
	mfs, err := reg.Gather()
	if err != nil {
		log.Info("stopped", attrs...)
		return
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		name, ok := strings.CutPrefix(mf.GetName(), "apns_worker_jobs_")
		if !ok {
			continue
		}
		name, ok = strings.CutSuffix(name, "_total")
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			counts[name] += m.GetCounter().GetValue()
		}
	}
	for _, k := range []string{"received", "delivered", "rejected", "failed", "dead_lettered", "malformed"} {
		attrs = append(attrs, slog.Int64("jobs_"+k, int64(counts[k])))
	}
	log.Info("stopped", attrs...)
}
