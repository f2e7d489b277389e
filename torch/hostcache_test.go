package torch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mib = 1 << 20

func cacheStats(t *testing.T) HostCacheStats {
	t.Helper()
	st, err := ReadHostCacheStats()
	require.NoError(t, err)
	return st
}

// withHostCache installs the cache for one test and removes it after.
func withHostCache(t *testing.T, c HostCache) {
	t.Helper()
	require.NoError(t, EnableHostCache(c))
	t.Cleanup(func() { require.NoError(t, DisableHostCache()) })
}

func TestHostCacheReusesFreedBlocks(t *testing.T) {
	live := LiveTensors()
	withHostCache(t, HostCache{IdleLimitBytes: 64 * mib})
	require.NoError(t, EmptyHostCache())
	before := cacheStats(t)
	require.True(t, before.Enabled)

	fill := func(v float64) []float32 {
		s := NewScope()
		defer s.Close()
		x := s.Full(v, Float32, 1<<20) // 4 MiB, whole pages: a block of exactly 4 MiB
		require.NoError(t, s.Err())
		st := cacheStats(t)
		assert.Equal(t, before.InUseBytes+4*mib, st.InUseBytes, "the block is the cache's while the tensor lives")
		got, err := x.Float32s()
		require.NoError(t, err)
		return got
	}
	first := fill(1.5)
	st := cacheStats(t)
	assert.Equal(t, before.InUseBytes, st.InUseBytes)
	assert.Equal(t, before.IdleBytes+4*mib, st.IdleBytes, "a freed block waits for reuse")
	assert.Equal(t, before.Misses+1, st.Misses)

	second := fill(-2)
	after := cacheStats(t)
	assert.Equal(t, st.Hits+1, after.Hits, "the same size comes from the idle block")
	assert.Equal(t, st.Misses, after.Misses)
	assert.Equal(t, float32(1.5), first[12345])
	assert.Equal(t, float32(-2), second[len(second)-1], "a reused block holds the new values")
	assert.GreaterOrEqual(t, after.PeakBytes, after.InUseBytes+after.IdleBytes)

	require.NoError(t, EmptyHostCache())
	assert.Zero(t, cacheStats(t).IdleBytes)
	assert.Equal(t, live, LiveTensors())
}

func TestHostCacheKeepsUnderItsLimit(t *testing.T) {
	withHostCache(t, HostCache{IdleLimitBytes: 4 * mib})
	require.NoError(t, EmptyHostCache())
	before := cacheStats(t)
	s := NewScope()
	s.Zeros(Float32, 1<<20)
	s.Zeros(Float32, 1<<20)
	s.Zeros(Float32, 3<<20) // 12 MiB: over the limit on its own
	require.NoError(t, s.Err())
	s.Close()
	st := cacheStats(t)
	assert.Equal(t, int64(4*mib), st.IdleBytes, "the last 4 MiB block freed stays, the rest goes")
	assert.GreaterOrEqual(t, st.Evictions-before.Evictions, int64(1))

	require.NoError(t, EnableHostCache(HostCache{IdleLimitBytes: 1 * mib}))
	assert.Zero(t, cacheStats(t).IdleBytes, "lowering the limit trims at once")
}

// The cache never holds more than the gap below the peak of bytes in use:
// a process with it peaks no higher than one without.
func TestHostCacheStaysUnderThePeakInUse(t *testing.T) {
	withHostCache(t, HostCache{})
	require.NoError(t, EmptyHostCache())
	base := cacheStats(t)
	check := func(what string) HostCacheStats {
		st := cacheStats(t)
		assert.LessOrEqual(t, st.InUseBytes+st.IdleBytes, st.PeakBytes, what)
		return st
	}
	alloc := func(floats int64) (*Scope, *Tensor) {
		s := NewScope()
		x := s.Zeros(Float32, floats)
		require.NoError(t, s.Err())
		return s, x
	}
	s, _ := alloc(1 << 20) // 4 MiB
	s.Close()
	st := check("one block freed")
	assert.Equal(t, base.IdleBytes+4*mib, st.IdleBytes)
	s, _ = alloc(2 << 20) // 8 MiB: a new peak, so the idle 4 MiB goes first
	st = check("a larger block")
	assert.Equal(t, base.InUseBytes+8*mib, st.PeakBytes)
	assert.Zero(t, st.IdleBytes, "at a new peak nothing is idle")
	s.Close()
	st = check("the larger block freed")
	assert.Equal(t, int64(8*mib), st.IdleBytes)
	// Two 4 MiB blocks fit under the 8 MiB peak only once the idle 8 MiB is gone.
	s1, _ := alloc(1 << 20)
	st = check("first small block")
	assert.Zero(t, st.IdleBytes)
	s2, _ := alloc(1 << 20)
	check("second small block")
	s1.Close()
	s2.Close()
	st = check("both freed")
	assert.Equal(t, int64(8*mib), st.IdleBytes)
	assert.Equal(t, base.InUseBytes+8*mib, st.PeakBytes, "the peak did not move")
	require.NoError(t, EmptyHostCache())
	st = cacheStats(t)
	assert.Zero(t, st.IdleBytes)
	assert.Equal(t, st.InUseBytes, st.PeakBytes, "emptying restarts the peak")
}

// oneDNN's convolutions allocate through the raw interface (context = data,
// raw_deleter), which the cache must serve too; results and gradients are
// the same as with libtorch's own allocator.
func TestHostCacheServesConvolutionAndBackward(t *testing.T) {
	live := LiveTensors()
	run := func() (y, gx []float32) {
		s := NewScope()
		defer s.Close()
		g := NewScope().WithGrad(NoGrad)
		defer g.Close()
		require.NoError(t, ManualSeed(7))
		x := g.Randn(Float32, 2, 32, 64, 64) // 1 MiB per image
		w := g.MulScalar(g.Randn(Float32, 64, 32, 3, 3), 0.1)
		require.NoError(t, g.Err())
		require.NoError(t, x.SetRequiresGrad(true))
		out := s.Conv2D(x, w, nil, 1, 1)
		loss := s.Sum(s.Mul(out, out), false)
		require.NoError(t, s.Err())
		require.NoError(t, loss.Backward())
		var err error
		y, err = out.Float32s()
		require.NoError(t, err)
		grad, err := x.Grad()
		require.NoError(t, err)
		defer grad.Close()
		gx, err = grad.Float32s()
		require.NoError(t, err)
		return y, gx
	}
	wantY, wantG := run()
	withHostCache(t, HostCache{MinBytes: 64 << 10})
	before := cacheStats(t)
	for range 2 { // the second round reuses the first's blocks
		y, g := run()
		assert.Equal(t, wantY, y)
		assert.Equal(t, wantG, g)
	}
	st := cacheStats(t)
	assert.Greater(t, st.Hits, before.Hits)
	assert.Equal(t, before.InUseBytes, st.InUseBytes, "every block came back")
	assert.Equal(t, live, LiveTensors())
}

func TestHostCacheDisableGivesMemoryBack(t *testing.T) {
	require.NoError(t, EnableHostCache(HostCache{}))
	s := NewScope()
	x := s.Full(3, Float32, 1<<20)
	require.NoError(t, s.Err())
	inUse := cacheStats(t).InUseBytes
	require.NoError(t, DisableHostCache())
	require.NoError(t, DisableHostCache(), "disabling twice is harmless")
	st := cacheStats(t)
	assert.False(t, st.Enabled)
	assert.Zero(t, st.IdleBytes)
	v, err := x.Float32s()
	require.NoError(t, err)
	assert.Equal(t, float32(3), v[0], "a tensor made under the cache outlives it")
	s.Close()
	assert.Equal(t, inUse-4*mib, cacheStats(t).InUseBytes, "its block is unmapped on free, not kept")
	assert.Zero(t, cacheStats(t).IdleBytes)
	// Without the cache, large tensors are libtorch's again.
	s = NewScope()
	defer s.Close()
	s.Full(1, Float32, 1<<20)
	require.NoError(t, s.Err())
	assert.Equal(t, inUse-4*mib, cacheStats(t).InUseBytes)
}

func TestHostCacheRejectsBadLimits(t *testing.T) {
	assert.ErrorContains(t, EnableHostCache(HostCache{IdleLimitBytes: -1}), "negative")
	assert.ErrorContains(t, EnableHostCache(HostCache{MinBytes: -5}), "negative")
	assert.False(t, cacheStats(t).Enabled)
}
