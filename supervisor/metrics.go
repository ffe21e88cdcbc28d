package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/serve"
	"github.com/rpbroker/broker/wire/names"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Metric names under running_process_broker_v1_ are frozen by v1; the
// running_process_broker_ ones (no v1) are ours and documented in the README.
const (
	v1Prefix  = "running_process_broker_v1_"
	ourPrefix = "running_process_broker_"
)

// metrics is one broker's registry: nothing global, so tests can run several brokers.
type metrics struct {
	reg               *prometheus.Registry
	hellos            *prometheus.CounterVec
	helloDuration     *prometheus.HistogramVec
	reloads           *prometheus.CounterVec
	reloadOK          prometheus.Gauge
	reloadTime        prometheus.Gauge
	servicedefChanges *prometheus.CounterVec
	loopFailures      *prometheus.CounterVec
	spawns            *prometheus.CounterVec
	panics            *prometheus.CounterVec
	outcomes          map[wirepb.ErrorCode]string
}

func newMetrics(s *Supervisor) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: v1Prefix + "hello_total", Help: "Hellos answered, by outcome (negotiated or the refusal code).",
		}, []string{"service", "version", "outcome"}),
		helloDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: v1Prefix + "hello_duration_seconds", Help: "Time from accept to the Hello reply written.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1, 5},
		}, []string{"service"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ourPrefix + "config_reloads_total", Help: "Config reloads attempted, by result.",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: ourPrefix + "config_last_reload_successful", Help: "1 if the last config reload succeeded (or none was tried).",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: ourPrefix + "config_last_reload_success_timestamp_seconds", Help: "Unix time of the last successful reload.",
		}),
		servicedefChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ourPrefix + "servicedef_changes_total", Help: "Service definition changes seen by the loader, by kind.",
		}, []string{"kind"}),
		loopFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ourPrefix + "serve_loop_failures_total", Help: "Serve loops that could not bind or stopped unexpectedly.",
		}, []string{"service"}),
		spawns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: v1Prefix + "spawn_attempts_total", Help: "Backend spawn attempts, by outcome (success or failure).",
		}, []string{"service", "version", "outcome"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ourPrefix + "panics_total", Help: "Panics recovered at a serving boundary (connection, admin, route, servicedef), by where.",
		}, []string{"where"}),
		outcomes: make(map[wirepb.ErrorCode]string),
	}
	m.reloadOK.Set(1)
	for v, name := range wirepb.ErrorCode_name {
		m.outcomes[wirepb.ErrorCode(v)] = strings.ToLower(strings.TrimPrefix(name, "ERROR_"))
	}
	m.outcomes[wirepb.ErrorCode_ERROR_CODE_UNSPECIFIED] = "negotiated"
	m.reg.MustRegister(m.hellos, m.helloDuration, m.reloads, m.reloadOK, m.reloadTime, m.servicedefChanges, m.loopFailures, m.spawns, m.panics,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: v1Prefix + "connections_open", Help: "Control connections open now."},
			func() float64 { return float64(s.shared.ConnectionsOpen()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: v1Prefix + "uptime_seconds", Help: "Seconds since the broker started."},
			func() float64 { return time.Since(s.shared.Started()).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: v1Prefix + "fd_usage_ratio", Help: "Open file descriptors over RLIMIT_NOFILE."},
			func() float64 { r, _ := FDUsage(); return r }),
		&backendsCollector{s: s, desc: prometheus.NewDesc(v1Prefix+"active_backends", "Live backends per service.", []string{"service"}, nil)},
		&budgetCollector{s: s, desc: prometheus.NewDesc(v1Prefix+"spawn_budget_remaining",
			"Spawn attempts left in the current 30 s window, for keys that used some.", []string{"service", "version"}, nil)},
	)
	return m
}

// HelloDone implements serve.Observer. Labels carry only validated names so a hostile
// peer cannot grow the series without bound.
func (m *metrics) HelloDone(o serve.HelloOutcome) {
	svc, ver := o.Service, o.Version
	switch o.Code {
	case wirepb.ErrorCode_ERROR_PEER_REJECTED, wirepb.ErrorCode_ERROR_VERSION_UNSUPPORTED, wirepb.ErrorCode_ERROR_SERVICE_UNKNOWN:
		svc, ver = "", ""
	}
	if !names.ValidService(svc) || !names.ValidVersion(ver) {
		svc, ver = "", ""
	}
	outcome, ok := m.outcomes[o.Code]
	if !ok {
		outcome = "unknown"
	}
	m.hellos.WithLabelValues(svc, ver, outcome).Inc()
	m.helloDuration.WithLabelValues(svc).Observe(o.Duration.Seconds())
}

// render writes the registry as OpenMetrics text ending in "# EOF\n".
func (m *metrics) render() (string, error) {
	mfs, err := m.reg.Gather()
	if err != nil {
		return "", fmt.Errorf("gather metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeOpenMetrics))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return "", fmt.Errorf("encode metrics: %w", err)
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			return "", err
		}
	}
	return buf.String(), nil
}

// countPanic counts one panic recovered at the boundary named by where (connection,
// admin, route, servicedef); the caller has already logged it with its stack.
func (s *Supervisor) countPanic(where string) {
	s.metrics.panics.WithLabelValues(where).Inc()
}

func (m *metrics) spawnDone(key registry.Key, err error) {
	outcome := "success"
	if err != nil {
		outcome = "failure"
	}
	m.spawns.WithLabelValues(key.Service, key.Version, outcome).Inc()
}

type budgetCollector struct {
	s    *Supervisor
	desc *prometheus.Desc
}

func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.launch == nil || c.s.launch.m == nil {
		return
	}
	left := map[[2]string]int{}
	for _, b := range c.s.launch.m.Budgets() {
		k := [2]string{b.ServiceName, b.ServiceVersion}
		if n, ok := left[k]; !ok || b.Remaining < n {
			left[k] = b.Remaining
		}
	}
	for k, n := range left {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

type backendsCollector struct {
	s    *Supervisor
	desc *prometheus.Desc
}

func (c *backendsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *backendsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for _, b := range c.s.registry.List() {
		if b.Alive() {
			counts[b.Key.Service]++
		}
	}
	for svc, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), svc)
	}
}

// FDUsage returns open descriptors / RLIMIT_NOFILE soft limit.
func FDUsage() (float64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	if rl.Cur == 0 {
		return 0, nil
	}
	return float64(len(entries)) / float64(rl.Cur), nil
}
