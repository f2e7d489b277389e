package pretrain

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/demo"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadPairsRejectsBadTables(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, body, want string }{
		{"header", "file,text\na.png,x\n", "lacks the columns"},
		{"escape", "image,prompt\n../a.png,x\n", "not a path inside the root"},
		{"empty prompt", "image,prompt\na.png,  \n", "empty prompt"},
		{"no rows", "image,prompt\n", "no pairs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".csv")
			require.NoError(t, os.WriteFile(p, []byte(c.body), 0o644))
			_, err := ReadPairs(p, dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	p := filepath.Join(dir, "ok.csv")
	require.NoError(t, os.WriteFile(p, []byte("prompt,image\n\"a, b\",sub/a.png\n"), 0o644))
	pairs, err := ReadPairs(p, dir)
	require.NoError(t, err)
	assert.Equal(t, []Pair{{Image: "sub/a.png", Path: filepath.Join(dir, "sub", "a.png"), Prompt: "a, b"}}, pairs)
}

// Pre-training moves image features towards their captions' embeddings,
// leaves the text tower alone, keeps LiveTensors flat (Run checks it every
// step), and Save writes a CLIP that clip.Load reads back to the same image
// features.
func TestRunLearnsAndSaveRoundTrips(t *testing.T) {
	dir := t.TempDir()
	opts := demo.DefaultOptions()
	opts.Seed, opts.Bases, opts.Size, opts.Levels = 99, 2, 64, 3
	table, err := demo.GeneratePairs(dir, opts)
	require.NoError(t, err)
	pairs, err := ReadPairs(table, dir)
	require.NoError(t, err)
	require.Len(t, pairs, 2*(1+4*2))

	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	defer c.Close()
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	ids, err := tok.Tokenize([]string{"a terrible photo"}, c.Config.ContextLength, true)
	require.NoError(t, err)
	textBefore := textFeature(t, c, ids)

	res, err := Run(context.Background(), c, tok, pairs, Options{Epochs: 4, BatchSize: 6, LR: 1e-3, Seed: 3})
	require.NoError(t, err)
	t.Logf("mean cosine %.4f → %.4f; epoch losses %v", res.MeanCosine0, res.MeanCosine, res.Epochs)
	assert.Equal(t, len(pairs), res.Kept)
	assert.Greater(t, res.MeanCosine, res.MeanCosine0+0.2, "features moved towards the captions")
	assert.Less(t, res.Epochs[len(res.Epochs)-1].Loss, res.Epochs[0].Loss)
	assert.Equal(t, textBefore, textFeature(t, c, ids), "the text tower is frozen")

	out := filepath.Join(dir, "clip.pt")
	require.NoError(t, Save(out, c, false))
	back, err := clip.Load(out, clip.Options{})
	require.NoError(t, err)
	defer back.Close()
	assert.Equal(t, c.Config, back.Config)
	prep := imageprep.DefaultOptions(c.Config.ImageResolution)
	px, err := imageprep.LoadBatch([]string{pairs[0].Path, pairs[5].Path}, prep)
	require.NoError(t, err)
	assert.Equal(t, imageFeatures(t, c, px), imageFeatures(t, back, px), "float32 save is exact")

	half := filepath.Join(dir, "clip16.pt")
	require.NoError(t, Save(half, c, true))
	st16, _ := os.Stat(half)
	st32, _ := os.Stat(out)
	assert.Less(t, st16.Size(), st32.Size()*6/10)
	h, err := clip.Load(half, clip.Options{})
	require.NoError(t, err)
	defer h.Close()
	a, b := imageFeatures(t, c, px), imageFeatures(t, h, px)
	assert.InDeltaSlice(t, toF64(a), toF64(b), 0.05*maxAbs(a), "float16 storage rounds weights only")
}

func TestRunFiltersByMinCosine(t *testing.T) {
	dir := t.TempDir()
	opts := demo.DefaultOptions()
	opts.Seed, opts.Bases, opts.Size, opts.Levels = 98, 2, 48, 2
	table, err := demo.GeneratePairs(dir, opts)
	require.NoError(t, err)
	pairs, err := ReadPairs(table, dir)
	require.NoError(t, err)
	c, err := clip.Load(ipiqaref.Path("tiny_clip_rn_fp16.pt"), clip.Options{})
	require.NoError(t, err)
	defer c.Close()
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	res, err := Run(context.Background(), c, tok, pairs, Options{Epochs: 0, MinCosine: 1})
	require.Error(t, err, "nothing reaches cosine 1")
	assert.Contains(t, err.Error(), "no pair")
	assert.Len(t, res.Dropped, len(pairs))
}

func textFeature(t *testing.T, c *clip.Model, ids [][]int64) []float32 {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	v, err := c.EncodeText(s, ids).Float32s()
	require.NoError(t, err)
	return v
}

func imageFeatures(t *testing.T, c *clip.Model, px []float32) []float32 {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	r := int64(c.Config.ImageResolution)
	v, err := c.EncodeImage(s, s.FromFloat32(px, int64(len(px))/(3*r*r), 3, r, r)).Float32s()
	require.NoError(t, err)
	return v
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, float64(max(x, -x)))
	}
	return m
}
