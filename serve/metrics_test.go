package serve

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sample is one parsed line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)
	labelRe  = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"$`)
)

// parseProm checks the text exposition format's rules (every sample after
// its family's HELP and TYPE, valid names, labels and values) and returns the
// samples and each family's type.
func parseProm(t *testing.T, text string) ([]sample, map[string]string) {
	t.Helper()
	types := map[string]string{}
	helps := map[string]bool{}
	var out []sample
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ := strings.Cut(rest, " ")
			helps[name] = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			require.Contains(t, []string{"counter", "gauge", "histogram"}, typ)
			require.NotContains(t, types, name, "TYPE given twice for %s", name)
			types[name] = typ
			continue
		}
		m := sampleRe.FindStringSubmatch(line)
		require.NotNil(t, m, "bad sample line %q", line)
		s := sample{name: m[1], labels: map[string]string{}}
		if m[3] != "" {
			for _, kv := range strings.Split(m[3], ",") {
				lm := labelRe.FindStringSubmatch(kv)
				require.NotNil(t, lm, "bad label %q in %q", kv, line)
				s.labels[lm[1]] = lm[2]
			}
		}
		v, err := strconv.ParseFloat(m[4], 64)
		require.NoError(t, err, line)
		s.value = v
		family := s.name
		if types[family] == "" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(family, suf); ok && types[base] == "histogram" {
					family = base
				}
			}
		}
		require.NotEmpty(t, types[family], "sample %s before its TYPE", s.name)
		require.True(t, helps[family], "sample %s without HELP", s.name)
		out = append(out, s)
	}
	return out, types
}

func find(samples []sample, name string, labels map[string]string) (float64, bool) {
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && s.labels[k] == v
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// checkHistograms verifies buckets are cumulative with increasing le and
// that +Inf equals _count.
func checkHistograms(t *testing.T, samples []sample, types map[string]string) {
	t.Helper()
	for name, typ := range types {
		if typ != "histogram" {
			continue
		}
		series := map[string][]sample{} // by labels without le
		for _, s := range samples {
			if s.name != name+"_bucket" {
				continue
			}
			key := ""
			for k, v := range s.labels {
				if k != "le" {
					key += k + "=" + v + ";"
				}
			}
			series[key] = append(series[key], s)
		}
		for key, buckets := range series {
			prevLe, prev := -1.0, -1.0
			for _, b := range buckets {
				le, err := strconv.ParseFloat(b.labels["le"], 64)
				require.NoError(t, err)
				assert.Greater(t, le, prevLe, "%s %s: le increasing", name, key)
				assert.GreaterOrEqual(t, b.value, prev, "%s %s: cumulative", name, key)
				prevLe, prev = le, b.value
			}
			assert.Equal(t, "+Inf", buckets[len(buckets)-1].labels["le"], name)
			labels := map[string]string{}
			for k, v := range buckets[0].labels {
				if k != "le" {
					labels[k] = v
				}
			}
			count, ok := find(samples, name+"_count", labels)
			require.True(t, ok, "%s_count %v", name, labels)
			assert.Equal(t, prev, count, "%s: +Inf bucket equals count", name)
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	_, ts := newTestServer(t, fakeBackend{score: func(_ context.Context, data []byte) (float64, error) {
		if string(data) == "bad" {
			return 0, clipagiqa.ErrInvalidImage
		}
		return 1, nil
	}}, Config{})
	for _, body := range []string{"ok", "ok", "ok", "bad"} {
		post(t, ts.URL+"/v1/score", "image/png", strings.NewReader(body))
	}
	post(t, ts.URL+"/v1/score", "text/plain", strings.NewReader("ok"))
	resp, err := http.Get(ts.URL + "/metrics")
	require.NoError(t, err)
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "text/plain; version=0.0.4; charset=utf-8", resp.Header.Get("Content-Type"))
	samples, types := parseProm(t, string(raw))
	checkHistograms(t, samples, types)

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"clipagiqa_http_requests_total", map[string]string{"handler": "score", "code": "200"}, 3},
		{"clipagiqa_http_requests_total", map[string]string{"handler": "score", "code": "400"}, 1},
		{"clipagiqa_http_requests_total", map[string]string{"handler": "score", "code": "415"}, 1},
		{"clipagiqa_http_request_duration_seconds_count", map[string]string{"handler": "score"}, 5},
		{"clipagiqa_images_total", map[string]string{"outcome": "ok"}, 3},
		{"clipagiqa_images_total", map[string]string{"outcome": "error"}, 1},
		{"clipagiqa_ready", nil, 1},
		// The fake's stats: batch sizes {1:3, 2:1, 4:2} with max batch 4.
		{"clipagiqa_batch_size_bucket", map[string]string{"le": "1"}, 3},
		{"clipagiqa_batch_size_bucket", map[string]string{"le": "2"}, 4},
		{"clipagiqa_batch_size_bucket", map[string]string{"le": "4"}, 6},
		{"clipagiqa_batch_size_bucket", map[string]string{"le": "+Inf"}, 6},
		{"clipagiqa_batch_size_sum", nil, 13},
		{"clipagiqa_batch_size_count", nil, 6},
		{"clipagiqa_queue_depth", nil, 2},
	}
	for _, w := range want {
		got, ok := find(samples, w.name, w.labels)
		if assert.True(t, ok, "%s%v missing", w.name, w.labels) {
			assert.Equal(t, w.value, got, "%s%v", w.name, w.labels)
		}
	}
	assert.Equal(t, "counter", types["clipagiqa_http_requests_total"])
	assert.Equal(t, "histogram", types["clipagiqa_http_request_duration_seconds"])
	assert.Equal(t, "histogram", types["clipagiqa_batch_size"])
	assert.Equal(t, "gauge", types["clipagiqa_queue_depth"])
}

func TestHistogramBuckets(t *testing.T) {
	// Prometheus buckets are "less or equal": 0.005 falls in le=0.005.
	h := newHistogram([]float64{0.005, 0.01})
	for _, v := range []float64{0.001, 0.005, 0.0051, 0.01, 3} {
		h.observe(v)
	}
	assert.Equal(t, []uint64{2, 2, 1}, h.counts)
	assert.InDelta(t, 3.0211, h.sum, 1e-12)
	assert.Equal(t, []float64{1, 2, 4, 8, 16, 32}, batchBuckets(32))
	assert.Equal(t, []float64{1, 2, 4, 6}, batchBuckets(6))
	assert.Equal(t, []float64{1}, batchBuckets(1))
}
