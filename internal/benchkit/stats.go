package benchkit

import (
	"math"
	"slices"
)

// Stat summarises repeated timings of one measurement (seconds).
type Stat struct {
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
}

// NewStat summarises runs (seconds each).
func NewStat(runs []float64) Stat {
	s := Stat{Runs: append([]float64(nil), runs...), Median: math.NaN(), Min: math.NaN()}
	if len(runs) == 0 {
		return s
	}
	v := slices.Clone(runs)
	slices.Sort(v)
	s.Min = v[0]
	if n := len(v); n%2 == 1 {
		s.Median = v[n/2]
	} else {
		s.Median = (v[n/2-1] + v[n/2]) / 2
	}
	return s
}

// Rate is units per second at the median time (e.g. images/s for a batch).
func (s Stat) Rate(units float64) float64 {
	if !(s.Median > 0) {
		return math.NaN()
	}
	return units / s.Median
}

// Ratio is a/b, NaN when either is not a positive number.
func Ratio(a, b float64) float64 {
	if !(a > 0) || !(b > 0) {
		return math.NaN()
	}
	return a / b
}
