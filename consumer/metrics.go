package consumer

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetpush/apns-worker/apns"
)

// Metrics are the worker's Prometheus collectors. Create them with
// NewMetrics and pass them in Options.Metrics.
type Metrics struct {
	received     prometheus.Counter
	delivered    prometheus.Counter
	rejected     *prometheus.CounterVec // reason
	failed       prometheus.Counter
	deadLettered prometheus.Counter
	malformed    *prometheus.CounterVec // reason
	inFlight     prometheus.Gauge
	latency      prometheus.Histogram
	eventErrors  *prometheus.CounterVec // kind
	intakePauses prometheus.Counter
}

// NewMetrics creates the worker's collectors and registers them on reg
// (nil: not registered):
//
//	apns_worker_jobs_received_total             jobs taken from the stream
//	apns_worker_jobs_delivered_total            delivered outcomes
//	apns_worker_jobs_rejected_total{reason}     APNs rejections
//	apns_worker_jobs_failed_total               failed attempts (retried or dead-lettered)
//	apns_worker_jobs_dead_lettered_total        jobs dead-lettered at MaxDeliver
//	apns_worker_jobs_malformed_total{reason}    malformed jobs (terminated)
//	apns_worker_jobs_in_flight                  received, not yet acked/naked/terminated
//	apns_worker_send_to_outcome_seconds         engine accept to outcome
//	apns_worker_event_publish_errors_total{kind} events not confirmed
//	apns_worker_intake_pauses_total             subscription stopped behind a full engine (see Run)
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "apns_worker"
	m := &Metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_received_total", Help: "Jobs taken from the jobs stream."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_delivered_total", Help: "Jobs APNs took (HTTP/2 200 or binary assumed delivered)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_rejected_total", Help: "Jobs APNs refused for good, by reason."}, []string{"reason"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_failed_total", Help: "Failed attempts, retried or dead-lettered."}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_dead_lettered_total", Help: "Jobs dead-lettered after MaxDeliver attempts."}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "jobs_malformed_total", Help: "Malformed jobs, terminated, by reason."}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "jobs_in_flight", Help: "Jobs received and not yet acked, naked or terminated."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns,
			Name: "send_to_outcome_seconds", Help: "Time from the engine accepting a job to its outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		eventErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "event_publish_errors_total", Help: "Events whose publish was not confirmed, by kind."}, []string{"kind"}),
		intakePauses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "intake_pauses_total", Help: "Times the subscription was stopped because jobs waited in the pull buffer behind a full engine."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.received, m.delivered, m.rejected, m.failed,
			m.deadLettered, m.malformed, m.inFlight, m.latency, m.eventErrors, m.intakePauses} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// EngineCollector exports an engine's Stats:
//
//	apns_engine_connections          connections configured
//	apns_engine_connected            connections up
//	apns_engine_in_flight            notifications waiting for their outcome
//	apns_engine_reconnects_total     connections replaced since start
//	apns_engine_credentials_ok       0 once APNs refused the credentials
//	apns_engine_faults_total{status} answers that were not APNs' verdicts
type EngineCollector struct {
	stats                                                   func() apns.Stats
	conns, connected, inFlight, reconnects, credsOK, faults *prometheus.Desc
}

// NewEngineCollector returns a collector reading eng.Stats at each scrape.
func NewEngineCollector(eng apns.Engine) *EngineCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("apns_engine_"+name, help, nil, nil)
	}
	return &EngineCollector{
		stats:      eng.Stats,
		conns:      d("connections", "Connections to APNs configured."),
		connected:  d("connected", "Connections to APNs currently up."),
		inFlight:   d("in_flight", "Notifications accepted and waiting for their outcome."),
		reconnects: d("reconnects_total", "Connections replaced since start."),
		credsOK:    d("credentials_ok", "0 once APNs refused the provider credentials, else 1."),
		faults: prometheus.NewDesc("apns_engine_faults_total",
			"Answers that were not APNs' verdicts (HTML, proxies' errors), by HTTP status; each was retried.", []string{"status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *EngineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.conns
	ch <- c.connected
	ch <- c.inFlight
	ch <- c.reconnects
	ch <- c.credsOK
	ch <- c.faults
}

// Collect implements prometheus.Collector.
func (c *EngineCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ok := 1.0
	if s.CredentialsErr != nil {
		ok = 0
	}
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.Conns))
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, float64(s.Connected))
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(c.credsOK, prometheus.GaugeValue, ok)
	for status, n := range s.Faults {
		ch <- prometheus.MustNewConstMetric(c.faults, prometheus.CounterValue, float64(n), strconv.Itoa(status))
	}
}
