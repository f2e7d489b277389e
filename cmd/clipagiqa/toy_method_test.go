package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/serve"
	"github.com/clipagiqa/clipagiqa/serve/api"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// toyMeanHead scores an image as its mean preprocessed pixel plus a
// prepared offset: a method defined only here, in a test, so that the
// scores can be recomputed from imageprep alone.
type toyMeanHead struct{ offset float32 }

const toyMethod = "toy-mean-cli"

func (h *toyMeanHead) Prepare(s *torch.Scope) *torch.Tensor {
	return s.FromFloat32([]float32{h.offset}, 1)
}
func (h *toyMeanHead) Score(s *torch.Scope, pixels, prepared *torch.Tensor, _ []string) *torch.Tensor {
	return s.Add(s.Mean(pixels, false, 1, 2, 3), prepared)
}
func (h *toyMeanHead) UsesPrompt() bool { return false }
func (h *toyMeanHead) Close()           {}

var registerToy = sync.OnceValue(func() error {
	return clipagiqa.RegisterMethod(clipagiqa.Method{Name: toyMethod, Description: "test: mean pixel + 0.25",
		Open: func(string, int) (clipagiqa.HeadLoader, error) {
			return func(*clip.Model, clipagiqa.Tokenizer) (clipagiqa.ScoringHead, error) {
				return &toyMeanHead{offset: 0.25}, nil
			}, nil
		},
		Export: toyExport,
	})
})

// toyExport writes what the request carried, and the embed dim of the CLIP
// it loaded through it, so the test can see each flag arrive; a checkpoint
// that does not exist is an error, before CLIP loads.
func toyExport(req method.ExportRequest) (string, error) {
	if _, err := os.Stat(req.Checkpoint); err != nil {
		return "", fmt.Errorf("toy export: %w", err)
	}
	cm, err := req.CLIP()
	if err != nil {
		return "", err
	}
	defer cm.Close()
	body := fmt.Sprintf("clip=%s checkpoint=%s epoch=%d lr=%g embed=%d\n",
		req.CLIPPath, req.Checkpoint, req.Epoch, req.LR, cm.Config.EmbedDim)
	if err := os.WriteFile(req.Out, []byte(body), 0o644); err != nil {
		return "", err
	}
	return "toy wrote " + req.Out, nil
}

// toyWant is the toy score of an image file, from imageprep directly.
func toyWant(t *testing.T, path string) float64 {
	t.Helper()
	px, err := imageprep.LoadFile(path, imageprep.DefaultOptions(224))
	require.NoError(t, err)
	var sum float64
	for _, v := range px {
		sum += float64(v)
	}
	return sum/float64(len(px)) + 0.25
}

// TestRegisteredMethodThroughPredictEvalServe: a method registered in this
// test package (no edit to the trainer, the scorer or the server) is used by
// name by LoadScorer, predict, eval and the HTTP server, with the same
// scores (atol 1e-5: float32 means over 150k pixels).
func TestRegisteredMethodThroughPredictEvalServe(t *testing.T) {
	require.NoError(t, registerToy())
	const atol = 1e-5
	var paths []string
	var want []float64
	for i := range 8 {
		paths = append(paths, fixtureImage(i))
		want = append(want, toyWant(t, fixtureImage(i)))
	}

	// predict
	stdout, _, err := run(t, append([]string{"predict", "--clip", tinyCLIPPath, "--method", toyMethod}, paths...)...)
	require.NoError(t, err)
	var pred predictOutput
	require.NoError(t, json.Unmarshal([]byte(stdout), &pred))
	require.Len(t, pred.Results, len(paths))
	assert.Equal(t, toyMethod, pred.Model.Method)
	for i, r := range pred.Results {
		assert.InDelta(t, want[i], r.Score, atol, "predict %s", r.Image)
	}

	// eval: a csv table whose MOS are the images' indices.
	dir := t.TempDir()
	var table bytes.Buffer
	table.WriteString("image,mos\n")
	var mos []float64
	for i, p := range paths {
		fmt.Fprintf(&table, "%s,%d\n", filepath.Base(p), i)
		mos = append(mos, float64(i))
	}
	csvPath := filepath.Join(dir, "toy.csv")
	require.NoError(t, os.WriteFile(csvPath, table.Bytes(), 0o644))
	stdout, _, err = run(t, "eval", "--clip", tinyCLIPPath, "--method", toyMethod, "--dataset", "csv",
		"--root", filepath.Dir(paths[0]), "--train-csv", csvPath, "--part", "all", "--format", "json")
	require.NoError(t, err)
	var ev evalOutput
	require.NoError(t, json.Unmarshal([]byte(stdout), &ev))
	assert.Equal(t, toyMethod, ev.Method)
	ref, err := metrics.Compute(want, mos)
	require.NoError(t, err)
	assert.Equal(t, len(paths), ev.Metrics.N)
	assert.InDelta(t, ref.SRCC, ev.Metrics.SRCC, 1e-9)
	assert.InDelta(t, ref.PLCC, ev.Metrics.PLCC, 1e-4)

	// --pair is refused for a head without prompt pairs.
	_, _, err = run(t, "eval", "--clip", tinyCLIPPath, "--method", toyMethod, "--dataset", "csv",
		"--root", filepath.Dir(paths[0]), "--train-csv", csvPath, "--part", "all", "--pair", "good|bad")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not scored against prompt pairs")

	// LoadScorer and the server.
	sc, err := clipagiqa.LoadScorer(tinyCLIPPath, "", clipagiqa.WithMethod(toyMethod))
	require.NoError(t, err)
	defer sc.Close()
	s := serve.New(serve.Config{})
	s.SetBackend(sc)
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	for i, p := range paths[:3] {
		img, err := os.ReadFile(p)
		require.NoError(t, err)
		resp, err := http.Post(ts.URL+"/v1/score", "image/png", bytes.NewReader(img))
		require.NoError(t, err)
		var body api.Response
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Len(t, body.Results, 1)
		require.NotNil(t, body.Results[0].Score)
		assert.InDelta(t, want[i], *body.Results[0].Score, atol, "serve %s", p)
	}
}

// TestRegisteredMethodExport: export --method of a method registered here,
// with an Export capability and no edit to cmd, calls that capability with
// the flags' values and a CLIP loaded from --clip, and prints its summary;
// its errors come back unchanged.
func TestRegisteredMethodExport(t *testing.T) {
	require.NoError(t, registerToy())
	dir := t.TempDir()
	ck := filepath.Join(dir, "toy.ck")
	require.NoError(t, os.WriteFile(ck, []byte("toy"), 0o644))
	out := filepath.Join(dir, "toy.out")
	stdout, _, err := run(t, "export", "--method", toyMethod, "--clip", tinyCLIPPath, "--checkpoint", ck,
		"--epoch", "3", "--lr", "0.5", "--out", out)
	require.NoError(t, err)
	assert.Equal(t, "toy wrote "+out+"\n", stdout)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	cm, err := clip.Load(tinyCLIPPath, clip.Options{})
	require.NoError(t, err)
	embed := cm.Config.EmbedDim
	cm.Close()
	assert.Equal(t, fmt.Sprintf("clip=%s checkpoint=%s epoch=3 lr=0.5 embed=%d\n", tinyCLIPPath, ck, embed), string(got))

	missing := filepath.Join(dir, "missing.ck")
	_, _, err = run(t, "export", "--method", toyMethod, "--clip", tinyCLIPPath, "--checkpoint", missing, "--out", out)
	assert.ErrorContains(t, err, "toy export: stat "+missing)

	// The exportable methods listed for one without the capability include it.
	_, _, err = run(t, "export", "--method", clipagiqa.MethodCLIPIQA, "--clip", tinyCLIPPath, "--checkpoint", ck, "--out", out)
	assert.ErrorContains(t, err, "--method clipiqa has no trained weights to export (want one of [agiqa ipiqa "+toyMethod+"])")
}
