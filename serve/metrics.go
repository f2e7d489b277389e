package serve

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
)

// LatencyBuckets are the upper bounds (seconds) of the request latency histogram.
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram is a Prometheus histogram: per-bucket counts (not cumulative), sum, count.
type histogram struct {
	bounds []float64
	counts []uint64 // len(bounds)+1, the last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v: Prometheus buckets are le
	h.counts[i]++
	h.sum += v
	h.n++
}

type reqKey struct {
	handler string
	code    int
}

// Metrics counts what the server did; WritePrometheus renders it together
// with the scorer's counters in the Prometheus text format (0.0.4).
type Metrics struct {
	mu       sync.Mutex
	requests map[reqKey]uint64
	latency  map[string]*histogram
	images   map[string]uint64 // by outcome: ok, error
	inflight int64
	started  time.Time
}

// NewMetrics returns empty metrics.
func NewMetrics() *Metrics {
	return &Metrics{requests: map[reqKey]uint64{}, latency: map[string]*histogram{},
		images: map[string]uint64{}, started: time.Now()}
}

// ObserveRequest records one finished request of handler with its status and latency.
func (m *Metrics) ObserveRequest(handler string, code int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[reqKey{handler, code}]++
	h := m.latency[handler]
	if h == nil {
		h = newHistogram(LatencyBuckets)
		m.latency[handler] = h
	}
	h.observe(d.Seconds())
}

// ObserveImages counts scored (ok) and refused (error) images.
func (m *Metrics) ObserveImages(ok, failed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.images["ok"] += uint64(ok)
	m.images["error"] += uint64(failed)
}

func (m *Metrics) addInflight(d int64) {
	m.mu.Lock()
	m.inflight += d
	m.mu.Unlock()
}

// Requests returns the number of requests of handler that ended with code.
func (m *Metrics) Requests(handler string, code int) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests[reqKey{handler, code}]
}

// promWriter writes families, remembering the first write error.
type promWriter struct {
	w   io.Writer
	err error
}

func (p *promWriter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *promWriter) family(name, typ, help string) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func fmtFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// histogramLines writes name_bucket (cumulative), name_sum and name_count;
// labels is "" or `key="v",` (with the trailing comma).
func (p *promWriter) histogramLines(name, labels string, bounds []float64, counts []uint64, sum float64) {
	var cum uint64
	for i, b := range bounds {
		cum += counts[i]
		p.printf("%s_bucket{%sle=\"%s\"} %d\n", name, labels, fmtFloat(b), cum)
	}
	cum += counts[len(bounds)]
	p.printf("%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, cum)
	trimmed := labels
	if trimmed != "" {
		trimmed = "{" + trimmed[:len(trimmed)-1] + "}"
	}
	p.printf("%s_sum%s %s\n", name, trimmed, fmtFloat(sum))
	p.printf("%s_count%s %d\n", name, trimmed, cum)
}

// batchBuckets are powers of two up to maxBatch (and maxBatch itself).
func batchBuckets(maxBatch int) []float64 {
	var b []float64
	for v := 1; v < maxBatch; v *= 2 {
		b = append(b, float64(v))
	}
	return append(b, float64(maxBatch))
}

// WritePrometheus writes the metrics; stats (nil before the model is
// loaded) adds the scorer's batch histogram, queue depth and counters.
func (m *Metrics) WritePrometheus(w io.Writer, ready bool, stats *clipagiqa.ScorerStats) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &promWriter{w: w}

	p.family("clipagiqa_http_requests_total", "counter", "HTTP requests by handler and status code.")
	keys := make([]reqKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].handler != keys[j].handler {
			return keys[i].handler < keys[j].handler
		}
		return keys[i].code < keys[j].code
	})
	for _, k := range keys {
		p.printf("clipagiqa_http_requests_total{handler=\"%s\",code=\"%d\"} %d\n", k.handler, k.code, m.requests[k])
	}

	p.family("clipagiqa_http_request_duration_seconds", "histogram", "HTTP request latency by handler.")
	handlers := make([]string, 0, len(m.latency))
	for h := range m.latency {
		handlers = append(handlers, h)
	}
	sort.Strings(handlers)
	for _, h := range handlers {
		hist := m.latency[h]
		p.histogramLines("clipagiqa_http_request_duration_seconds", fmt.Sprintf("handler=\"%s\",", h), hist.bounds, hist.counts, hist.sum)
	}

	p.family("clipagiqa_http_inflight_requests", "gauge", "HTTP requests being served.")
	p.printf("clipagiqa_http_inflight_requests %d\n", m.inflight)

	p.family("clipagiqa_images_total", "counter", "Images in score requests by outcome.")
	for _, o := range []string{"error", "ok"} {
		p.printf("clipagiqa_images_total{outcome=\"%s\"} %d\n", o, m.images[o])
	}

	p.family("clipagiqa_ready", "gauge", "1 once the model is loaded and warmed up.")
	r := 0
	if ready {
		r = 1
	}
	p.printf("clipagiqa_ready %d\n", r)

	p.family("clipagiqa_uptime_seconds", "gauge", "Seconds since the server started.")
	p.printf("clipagiqa_uptime_seconds %s\n", fmtFloat(time.Since(m.started).Seconds()))

	if stats != nil {
		bounds := batchBuckets(stats.MaxBatch)
		counts := make([]uint64, len(bounds)+1)
		for n, c := range stats.BatchSizes {
			counts[sort.SearchFloat64s(bounds, float64(n))] += c
		}
		p.family("clipagiqa_batch_size", "histogram", "Images per device batch.")
		p.histogramLines("clipagiqa_batch_size", "", bounds, counts, float64(stats.Images))

		p.family("clipagiqa_queue_depth", "gauge", "Requests waiting for the device.")
		p.printf("clipagiqa_queue_depth %d\n", stats.QueueDepth)

		p.family("clipagiqa_batch_seconds_total", "counter", "Time spent running device batches.")
		p.printf("clipagiqa_batch_seconds_total %s\n", fmtFloat(stats.BatchSeconds))

		p.family("clipagiqa_overloaded_total", "counter", "Requests refused because the queue was full.")
		p.printf("clipagiqa_overloaded_total %d\n", stats.Overloaded)

		p.family("clipagiqa_dropped_total", "counter", "Queued requests dropped because their caller gave up.")
		p.printf("clipagiqa_dropped_total %d\n", stats.Dropped)
	}
	return p.err
}
