package agiqa

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFeatureCache(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FeatureCache
		err  bool
	}{
		{"off", FeatureCache{Mode: CacheOff}, false},
		{"center", FeatureCache{Mode: CacheCenter, Views: 1}, false},
		{" Center ", FeatureCache{Mode: CacheCenter, Views: 1}, false},
		{"views=8", FeatureCache{Mode: CacheViews, Views: 8}, false},
		{"views=1", FeatureCache{Mode: CacheViews, Views: 1}, false},
		{"views=0", FeatureCache{}, true},
		{"views=x", FeatureCache{}, true},
		{"views", FeatureCache{}, true},
		{"", FeatureCache{}, true},
		{"on", FeatureCache{}, true},
	} {
		got, err := ParseFeatureCache(tc.in)
		if tc.err {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
		back, err := ParseFeatureCache(got.String())
		require.NoError(t, err)
		assert.Equal(t, got, back)
	}
}

// trReferenceFeatures encodes the samples' centre views in one batch,
// without the loader or the cache.
func trReferenceFeatures(t *testing.T, m *Model, samples []data.Sample) []float32 {
	t.Helper()
	var paths []string
	for _, s := range samples {
		paths = append(paths, s.Path)
	}
	r := m.CLIP.Config.ImageResolution
	px, err := imageprep.LoadBatch(paths, imageprep.DefaultOptions(r))
	require.NoError(t, err)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	f := m.ImageFeatures(s, s.FromFloat32(px, int64(len(paths)), 3, int64(r), int64(r)))
	require.NoError(t, s.Err())
	v, err := f.Float32s()
	require.NoError(t, err)
	return v
}

func trMaxAbs(a, b []float32) float64 {
	worst := 0.0
	for i := range a {
		worst = math.Max(worst, math.Abs(float64(a[i])-float64(b[i])))
	}
	return worst
}

func TestFeatureCacheRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	ds := trDataset(t, filepath.Join(dir, "img"), "c", 6, 9)
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	ctx := context.Background()
	cacheDir := filepath.Join(dir, "cache")
	opts := CacheOptions{Dir: cacheDir, Mode: FeatureCache{Mode: CacheCenter, Views: 1}, BatchSize: 4}
	live := torch.LiveTensors()

	first, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, CacheStats{Path: first.Stats.Path, Images: 6, Misses: 6}, trNoTimes(first.Stats))
	require.FileExists(t, first.Stats.Path)
	d := trMaxAbs(trReferenceFeatures(t, m, ds.Samples), first.Rows)
	t.Logf("cached vs one-batch reference features: max abs diff %.3g", d)
	assert.LessOrEqual(t, d, 1e-5)
	assert.Equal(t, []bool{true, true, true, true, true, true}, first.Valid)

	again, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, 6, again.Stats.Hits)
	assert.Equal(t, 0, again.Stats.Misses)
	assert.Equal(t, first.Rows, again.Rows, "a hit returns the stored bits")

	orig, err := os.ReadFile(first.Stats.Path)
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		reason string
	}{
		{"flipped feature byte", func(b []byte) []byte { b[len(b)-100] ^= 0x40; return b }, "checksum"},
		{"flipped hash byte", func(b []byte) []byte { b[cacheHeader+5] ^= 1; return b }, "checksum"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-37] }, "size"},
		{"padded", func(b []byte) []byte { return append(b, 0, 0, 0, 0) }, "size"},
		{"header only", func(b []byte) []byte { return b[:20] }, "shorter than the header"},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, "magic"},
		{"other key", func(b []byte) []byte { b[20] ^= 0xff; return b }, "key mismatch"},
		{"other version", func(b []byte) []byte { b[8] = 9; return b }, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(first.Stats.Path, tc.mutate(append([]byte(nil), orig...)), 0o644))
			got, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
			require.NoError(t, err)
			assert.Contains(t, got.Stats.Rebuilt, tc.reason)
			assert.Equal(t, 6, got.Stats.Misses, "a damaged file is not used")
			assert.LessOrEqual(t, trMaxAbs(first.Rows, got.Rows), 1e-6)
			// The rebuilt file is whole again.
			ok, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
			require.NoError(t, err)
			assert.Empty(t, ok.Stats.Rebuilt)
			assert.Equal(t, 6, ok.Stats.Hits)
		})
	}

	// New images are added to the file; known ones stay hits.
	more := trDataset(t, filepath.Join(dir, "img2"), "d", 2, 10)
	all := append(append([]data.Sample(nil), ds.Samples...), more.Samples...)
	grown, err := CacheImageFeatures(ctx, m, all, opts)
	require.NoError(t, err)
	assert.Equal(t, 6, grown.Stats.Hits)
	assert.Equal(t, 2, grown.Stats.Misses)
	assert.Equal(t, first.Rows, grown.Rows[:len(first.Rows)])
	// Same content under another name is the same entry.
	dup := append([]data.Sample{{Name: "copy", Path: ds.Samples[0].Path}}, more.Samples...)
	du, err := CacheImageFeatures(ctx, m, dup, opts)
	require.NoError(t, err)
	assert.Equal(t, 3, du.Stats.Hits)
	assert.Equal(t, first.Row(0, 0), du.Row(0, 0))

	assert.Equal(t, live, torch.LiveTensors())

	// Other CLIP weights (the same tiny model stored in float32) miss.
	c32, err := clip.Load(reffix.Path("tiny_clip_vit.pt"), clip.Options{})
	require.NoError(t, err)
	defer c32.Close()
	m32 := trModel(t, c32, tok, 1)
	other, err := CacheImageFeatures(ctx, m32, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, 6, other.Stats.Misses)
	assert.NotEqual(t, first.Stats.Path, other.Stats.Path)
	assert.Empty(t, other.Stats.Rebuilt)
	assert.FileExists(t, first.Stats.Path)
}

func trNoTimes(s CacheStats) CacheStats {
	s.HashSeconds, s.EncodeSeconds = 0, 0
	return s
}

func TestFeatureCacheViews(t *testing.T) {
	dir := t.TempDir()
	ds := trDataset(t, filepath.Join(dir, "img"), "v", 4, 3)
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	ctx := context.Background()
	opts := CacheOptions{Dir: filepath.Join(dir, "cache"), Mode: FeatureCache{Mode: CacheViews, Views: 3}, Seed: 5, Workers: 2}

	a, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, 4, a.Stats.Misses)
	require.Len(t, a.Rows, 4*3*512)
	for i := range 4 {
		assert.NotEqual(t, a.Row(i, 0), a.Row(i, 1), "views of image %d", i)
		assert.NotEqual(t, a.Row(i, 1), a.Row(i, 2), "views of image %d", i)
	}
	// The same views come back from the file, and from memory only.
	b, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, 4, b.Stats.Hits)
	assert.Equal(t, a.Rows, b.Rows)
	mem := opts
	mem.Dir = ""
	cm, err := CacheImageFeatures(ctx, m, ds.Samples, mem)
	require.NoError(t, err)
	assert.Empty(t, cm.Stats.Path)
	assert.LessOrEqual(t, trMaxAbs(a.Rows, cm.Rows), 1e-6)
	// Another seed is another file.
	opts.Seed = 6
	o, err := CacheImageFeatures(ctx, m, ds.Samples, opts)
	require.NoError(t, err)
	assert.Equal(t, 4, o.Stats.Misses)
	assert.NotEqual(t, a.Stats.Path, o.Stats.Path)
	assert.NotEqual(t, a.Row(0, 0), o.Row(0, 0))
	// A view is the encoder on RandomTransform drawn from (seed, view, content).
	raw, err := os.ReadFile(ds.Samples[2].Path)
	require.NoError(t, err)
	img, err := imageprep.Decode(raw, 0)
	require.NoError(t, err)
	px, err := imageprep.RandomTransform(img, imageprep.DefaultOptions(224), viewRNG(5, 1, sha256.Sum256(raw)))
	require.NoError(t, err)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	want, err := m.ImageFeatures(s, s.FromFloat32(px, 1, 3, 224, 224)).Float32s()
	require.NoError(t, err)
	assert.LessOrEqual(t, trMaxAbs(want, a.Row(2, 1)), 1e-5)
}

func TestFeatureCacheUnreadableImages(t *testing.T) {
	dir := t.TempDir()
	ds := trDataset(t, filepath.Join(dir, "img"), "u", 5, 3)
	require.NoError(t, os.WriteFile(ds.Samples[1].Path, []byte("GIF89a garbage"), 0o644))
	require.NoError(t, os.Remove(ds.Samples[3].Path))
	ds.Samples = append(ds.Samples, data.Sample{Name: "dup-of-bad", Path: ds.Samples[1].Path})
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	opts := CacheOptions{Dir: filepath.Join(dir, "cache"), Mode: FeatureCache{Mode: CacheCenter, Views: 1}}
	for range 2 { // the bad ones are never stored, so they fail again
		got, err := CacheImageFeatures(context.Background(), m, ds.Samples, opts)
		require.NoError(t, err)
		assert.Equal(t, []bool{true, false, true, false, true, false}, got.Valid)
		require.Len(t, got.Failed, 3)
		assert.Equal(t, []int{1, 3, 5}, []int{got.Failed[0].Index, got.Failed[1].Index, got.Failed[2].Index})
		assert.ErrorIs(t, got.Failed[1], os.ErrNotExist)
		assert.Equal(t, make([]float32, 512), got.Row(1, 0))
	}
}

func TestWeightsSHA256Sidecar(t *testing.T) {
	dir := t.TempDir()
	w := filepath.Join(dir, "w.bin")
	require.NoError(t, os.WriteFile(w, []byte("weights"), 0o644))
	sum := sha256.Sum256([]byte("weights"))
	got, err := WeightsSHA256(dir, w)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(sum[:]), got)

	// The sidecar is trusted while size and mtime match: plant a fake value.
	side := filepath.Join(dir, weightsHashFile)
	var known map[string]weightsHashEntry
	b, err := os.ReadFile(side)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &known))
	abs, _ := filepath.Abs(w)
	e := known[abs]
	e.SHA256 = "ab" + e.SHA256[2:]
	known[abs] = e
	b, _ = json.Marshal(known)
	require.NoError(t, os.WriteFile(side, b, 0o644))
	got, err = WeightsSHA256(dir, w)
	require.NoError(t, err)
	assert.Equal(t, e.SHA256, got, "hash re-read from the sidecar, not recomputed")

	// A changed file (size) is hashed again.
	require.NoError(t, os.WriteFile(w, []byte("weights2"), 0o644))
	sum = sha256.Sum256([]byte("weights2"))
	got, err = WeightsSHA256(dir, w)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(sum[:]), got)
}
