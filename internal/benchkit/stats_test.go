package benchkit

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNewStat(t *testing.T) {
	for _, tc := range []struct {
		runs        []float64
		median, min float64
	}{
		{[]float64{3, 1, 2}, 2, 1},
		{[]float64{4, 1, 3, 2}, 2.5, 1},
		{[]float64{7}, 7, 7},
	} {
		s := NewStat(tc.runs)
		assert.Equal(t, tc.median, s.Median, tc.runs)
		assert.Equal(t, tc.min, s.Min, tc.runs)
		assert.Equal(t, tc.runs, s.Runs, "runs keep their order")
	}
	empty := NewStat(nil)
	assert.True(t, math.IsNaN(empty.Median))
	assert.True(t, math.IsNaN(empty.Rate(8)))
	assert.Equal(t, 4.0, NewStat([]float64{2, 2}).Rate(8))
}

func TestRatio(t *testing.T) {
	assert.Equal(t, 2.0, Ratio(4, 2))
	for _, bad := range [][2]float64{{0, 1}, {1, 0}, {math.NaN(), 1}, {1, math.NaN()}, {-1, 2}} {
		assert.True(t, math.IsNaN(Ratio(bad[0], bad[1])), bad)
	}
	assert.Equal(t, 2.0, mean([]float64{1, 3}))
	assert.True(t, math.IsNaN(mean(nil)))
	assert.Equal(t, 6.0, sum([]float64{1, 2, 3}))
}
