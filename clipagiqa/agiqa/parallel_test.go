package agiqa

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memGroup is an in-process stand-in for a process group: W goroutines
// all-gather through shared memory, round by round.
type memGroup struct {
	mu    sync.Mutex
	cond  *sync.Cond
	world int
	round int
	parts [][]float32
	came  int
	done  [][]float32
}

type memRank struct {
	g    *memGroup
	rank int
}

func newMemGroup(w int) *memGroup {
	g := &memGroup{world: w, parts: make([][]float32, w)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (r memRank) Rank() int      { return r.rank }
func (r memRank) WorldSize() int { return r.g.world }
func (r memRank) AllGatherFloat32(local []float32) ([]float32, error) {
	g := r.g
	g.mu.Lock()
	defer g.mu.Unlock()
	round := g.round
	g.parts[r.rank] = append([]float32(nil), local...)
	g.came++
	if g.came == g.world {
		var all []float32
		for _, p := range g.parts {
			all = append(all, p...)
		}
		g.done = append(g.done, all)
		g.came = 0
		g.round++
		g.cond.Broadcast()
	}
	for g.round == round {
		g.cond.Wait()
	}
	return append([]float32(nil), g.done[round]...), nil
}

// A feature cache built by 3 ranks (views=2, encoder batch 3, so batches
// split an image's views across ranks; one unreadable image) equals the
// single-process build bit for bit, on every rank, and only rank 0 writes.
func TestShardedFeatureCacheBitIdentical(t *testing.T) {
	dir := t.TempDir()
	ds := trDataset(t, filepath.Join(dir, "img"), "p", 7, 3)
	require.NoError(t, os.WriteFile(ds.Samples[4].Path, []byte("not an image"), 0o644))
	c, tok := trCLIP(t)
	m := trModel(t, c, tok, 1)
	ctx := context.Background()
	base := CacheOptions{Mode: FeatureCache{Mode: CacheViews, Views: 2}, Seed: 9, BatchSize: 3, Workers: 2}

	one := base
	one.Dir = filepath.Join(dir, "one")
	want, err := CacheImageFeatures(ctx, m, ds.Samples, one)
	require.NoError(t, err)
	require.Len(t, want.Failed, 1)

	const world = 3
	g := newMemGroup(world)
	got := make([]*CachedFeatures, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := base
			o.Dir = filepath.Join(dir, "sharded")
			o.Parallel = memRank{g, r}
			got[r], errs[r] = CacheImageFeatures(ctx, m, ds.Samples, o)
		}()
	}
	wg.Wait()
	for r := range world {
		require.NoError(t, errs[r], "rank %d", r)
		assert.Equal(t, want.Rows, got[r].Rows, "rank %d rows", r)
		assert.Equal(t, want.Valid, got[r].Valid, "rank %d valid", r)
		require.Len(t, got[r].Failed, 1, "rank %d", r)
		assert.Equal(t, 4, got[r].Failed[0].Index)
	}
	a, err := os.ReadFile(want.Stats.Path)
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "sharded", filepath.Base(want.Stats.Path)))
	require.NoError(t, err)
	assert.True(t, string(a) == string(b), "cache files differ")
}

func TestAgree(t *testing.T) {
	g := newMemGroup(2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); errs[r] = agree(memRank{g, r}, "x", 5, r) }()
	}
	wg.Wait()
	for r := range 2 {
		require.Error(t, errs[r])
		assert.Contains(t, errs[r].Error(), "ranks disagree on x: rank 0 has [5 0], rank 1 has [5 1]")
	}
	assert.NoError(t, agree(nil, "x", 1))
}
