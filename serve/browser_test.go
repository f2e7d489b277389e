package serve

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserPage drives the page at / in headless Chromium (needs chromium
// and testdata/browser's node modules: run it with `make test-browser`,
// which installs them and sets CLIPAGIQA_BROWSER=1). Two fixture images go
// through the file picker; the scores the page shows must equal /v1/score's
// (and the reference), sorted, with thumbnails and a histogram. The
// screenshot goes to $CLIPAGIQA_BROWSER_OUT (default: the test's temp dir).
func TestBrowserPage(t *testing.T) {
	if os.Getenv("CLIPAGIQA_BROWSER") == "" {
		t.Skip("set CLIPAGIQA_BROWSER=1 (make test-browser) to run the headless Chromium test")
	}
	f := loadFixture(t)
	_, ts := newTestServer(t, scorer(t), Config{Model: "tiny_clip_vit_fp16"})
	out := os.Getenv("CLIPAGIQA_BROWSER_OUT")
	if out == "" {
		out = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(out, 0o755))
	shot, err := filepath.Abs(filepath.Join(out, "page.png"))
	require.NoError(t, err)
	picked := []int{2, 5}
	var paths []string
	for _, i := range picked {
		paths = append(paths, reffix.Path(f.names[i]))
	}
	cmd := exec.Command("node", append([]string{"page_test.mjs", ts.URL + "/", shot}, paths...)...)
	cmd.Dir = "testdata/browser"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("browser test hung; stderr: %s", stderr.String())
	}
	require.NoError(t, err, "node: %s", stderr.String())
	var page struct {
		Model   string
		Status  string
		Results []struct {
			Image     string
			Score     *float64
			Shown     string
			Thumbnail bool
		}
		Histogram     []int
		External      []string
		ConsoleErrors []string
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &page), stdout.String())
	t.Logf("page: model %q, status %q; screenshot %s", page.Model, page.Status, shot)
	assert.Contains(t, page.Model, "tiny_clip_vit_fp16")
	assert.Contains(t, page.Model, "method agiqa")
	assert.Empty(t, page.External, "no external requests")
	assert.Empty(t, page.ConsoleErrors)

	// What /v1/score says for the same files.
	var parts []filePart
	for _, i := range picked {
		parts = append(parts, filePart{f.names[i], f.images[i]})
	}
	ct, body := multipartBody(t, parts)
	api := post(t, ts.URL+"/v1/score", ct, bytes.NewReader(body))
	require.Equal(t, 200, api.code)
	want := map[string]float64{}
	for k, r := range api.Res {
		want[r.Image] = *r.Score
		assert.InDelta(t, f.want[picked[k]], *r.Score, scoreAtol, "reference")
	}
	require.Len(t, page.Results, len(picked))
	var shown []float64
	for _, r := range page.Results {
		require.NotNil(t, r.Score, r.Image)
		// Equal up to float32 rounding: the images may share a device batch
		// with different company in the two requests, which moves the last bit.
		assert.InDelta(t, want[r.Image], *r.Score, 1e-7, "page score of %s equals /v1/score's", r.Image)
		assert.True(t, r.Thumbnail, "thumbnail of %s shown", r.Image)
		assert.True(t, strings.HasPrefix(strings.TrimSpace(r.Shown), "0.") || strings.Contains(r.Shown, "."), r.Shown)
		shown = append(shown, *r.Score)
	}
	assert.True(t, sort.IsSorted(sort.Reverse(sort.Float64Slice(shown))), "best first: %v", shown)
	total := 0
	for _, c := range page.Histogram {
		total += c
	}
	assert.Equal(t, len(picked), total, "histogram counts every image: %v", page.Histogram)
	st, err := os.Stat(shot)
	require.NoError(t, err)
	assert.Greater(t, st.Size(), int64(5000), "a real screenshot")
}
