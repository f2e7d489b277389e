package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/serve/api"
	"github.com/clipagiqa/clipagiqa/serve/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ipiqaAtol is the fixture README's tolerance for the scores after the
// training steps (checkpoint_best.pth).
const ipiqaAtol = 5e-5

// ipiqaFixture: the original images, their prompts (image k, prompt k) and
// the official reload's [quality, alignment].
func ipiqaFixture(t *testing.T) (images [][]byte, prompts []string, want [][]float64) {
	t.Helper()
	raw, err := os.ReadFile(ipiqaref.Path("expected.json"))
	require.NoError(t, err)
	var f struct {
		Prompts []struct {
			Text string `json:"text"`
		} `json:"prompts"`
		Checkpoint struct {
			Reload struct {
				Scores [][]float64 `json:"scores"`
			} `json:"reload"`
		} `json:"checkpoint"`
	}
	require.NoError(t, json.Unmarshal(raw, &f))
	for k := range ipiqaref.Images {
		b, err := os.ReadFile(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)))
		require.NoError(t, err)
		images = append(images, b)
		prompts = append(prompts, f.Prompts[k].Text)
	}
	return images, prompts, f.Checkpoint.Reload.Scores
}

// TestServeIPIQA: /v1/info says ipiqa needs prompts and has two outputs;
// prompts as multipart fields and as ?prompt= give the fixture's quality and
// alignment; an image without a prompt is missing_prompt (400).
func TestServeIPIQA(t *testing.T) {
	images, prompts, want := ipiqaFixture(t)
	sc, err := clipagiqa.LoadScorer(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth"),
		clipagiqa.WithMethod(clipagiqa.MethodIPIQA), clipagiqa.WithMaxBatch(4))
	require.NoError(t, err)
	defer sc.Close()
	_, ts := newTestServer(t, sc, Config{Model: "tiny_clip_rn_fp16"})
	ctx := context.Background()
	c, err := client.New(ts.URL)
	require.NoError(t, err)

	in, err := c.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, "ipiqa", in.Method)
	assert.True(t, in.UsesPrompt)
	assert.Equal(t, []string{"quality", "alignment"}, in.Outputs)
	assert.Equal(t, 512, in.Resolution)
	assert.Equal(t, "ModifiedResNet", in.Backbone)

	// Multipart, one prompt field per file (through the Go client).
	var req []client.Image
	for k := range images {
		req = append(req, client.Image{Name: fmt.Sprintf("img_%d.png", k), Data: images[k], Prompt: prompts[k]})
	}
	res, err := c.Score(ctx, req...)
	require.NoError(t, err)
	require.Len(t, res, len(images))
	for k, r := range res {
		require.Nil(t, r.Err, r.Image)
		require.NotNil(t, r.Alignment, r.Image)
		assert.InDelta(t, want[k][0], r.Score, ipiqaAtol, r.Image)
		assert.InDelta(t, want[k][1], *r.Alignment, ipiqaAtol, r.Image)
		require.NotNil(t, r.PromptUsed)
		assert.True(t, *r.PromptUsed)
	}

	// Raw body with ?prompt=.
	resp, err := http.Post(ts.URL+"/v1/score?name=img_1.png&prompt="+url.QueryEscape(prompts[1]), "image/png", bytes.NewReader(images[1]))
	require.NoError(t, err)
	var body api.Response
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, body.Results, 1)
	assert.InDelta(t, want[1][0], *body.Results[0].Score, ipiqaAtol)
	assert.InDelta(t, want[1][1], *body.Results[0].Alignment, ipiqaAtol)

	// No prompt: 400 missing_prompt.
	resp, err = http.Post(ts.URL+"/v1/score", "image/png", bytes.NewReader(images[0]))
	require.NoError(t, err)
	var eb api.ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, api.CodeMissingPrompt, eb.Code)

	// Multipart with a prompt for the first file only: the second fails alone.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	require.NoError(t, mw.WriteField("prompt", prompts[0]))
	for k := range 2 {
		fw, err := mw.CreateFormFile("file", fmt.Sprintf("img_%d.png", k))
		require.NoError(t, err)
		_, _ = fw.Write(images[k])
	}
	require.NoError(t, mw.Close())
	resp, err = http.Post(ts.URL+"/v1/score", mw.FormDataContentType(), &buf)
	require.NoError(t, err)
	body = api.Response{}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, body.Results, 2)
	assert.InDelta(t, want[0][0], *body.Results[0].Score, ipiqaAtol)
	assert.Nil(t, body.Results[1].Score)
	assert.Equal(t, api.CodeMissingPrompt, body.Results[1].Code)
}
