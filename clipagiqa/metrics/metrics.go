// Package metrics implements the correlation and error measures used to
// evaluate image quality predictors against mean opinion scores (MOS):
// PLCC, SRCC, KRCC (Kendall tau-b), RMSE and PLCC after the 4-parameter
// logistic mapping of the VQEG/IQA convention.
//
// All functions take the predictions first and the MOS second, reject
// mismatched lengths, too few samples, NaN/Inf values and (for
// correlations) constant inputs with an error rather than returning NaN.
package metrics

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrConstant is wrapped by errors about an input with zero variance, for
// which every correlation coefficient is undefined.
var ErrConstant = errors.New("constant input")

// validate checks the common preconditions; minN is the smallest number of
// samples the caller accepts.
func validate(pred, mos []float64, minN int) error {
	if len(pred) != len(mos) {
		return fmt.Errorf("length mismatch: %d predictions, %d MOS values", len(pred), len(mos))
	}
	if len(pred) < minN {
		return fmt.Errorf("need at least %d samples, got %d", minN, len(pred))
	}
	for i := range pred {
		if math.IsNaN(pred[i]) || math.IsInf(pred[i], 0) {
			return fmt.Errorf("prediction %d is %v", i, pred[i])
		}
		if math.IsNaN(mos[i]) || math.IsInf(mos[i], 0) {
			return fmt.Errorf("MOS %d is %v", i, mos[i])
		}
	}
	return nil
}

func maxAbs(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// checkNotConstant reports an ErrConstant-wrapping error if either slice
// holds a single repeated value.
func checkNotConstant(pred, mos []float64) error {
	if isConstant(pred) {
		return fmt.Errorf("predictions: %w", ErrConstant)
	}
	if isConstant(mos) {
		return fmt.Errorf("MOS: %w", ErrConstant)
	}
	return nil
}

func isConstant(x []float64) bool {
	for _, v := range x[1:] {
		if v != x[0] {
			return false
		}
	}
	return true
}

// pearson computes the correlation with two passes (centering first) so
// that large offsets, e.g. MOS on a 0..100 scale, do not cost precision.
// Callers have validated the input.
func pearson(x, y []float64) (float64, error) {
	n := float64(len(x))
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= n
	my /= n
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		// Values distinct yet too close to resolve after centering.
		return 0, fmt.Errorf("zero variance after centering: %w", ErrConstant)
	}
	r := sxy / math.Sqrt(sxx*syy)
	// Rounding can push |r| a hair above 1.
	return math.Max(-1, math.Min(1, r)), nil
}

// PLCC returns Pearson's linear correlation coefficient between predictions
// and MOS. It needs at least 2 samples and non-constant inputs.
func PLCC(pred, mos []float64) (float64, error) {
	if err := validate(pred, mos, 2); err != nil {
		return 0, fmt.Errorf("plcc: %w", err)
	}
	if err := checkNotConstant(pred, mos); err != nil {
		return 0, fmt.Errorf("plcc: %w", err)
	}
	r, err := pearson(pred, mos)
	if err != nil {
		return 0, fmt.Errorf("plcc: %w", err)
	}
	return r, nil
}

// SRCC returns Spearman's rank correlation coefficient: Pearson's
// correlation of the ranks, with tied values given their average rank (as
// scipy.stats.spearmanr does).
func SRCC(pred, mos []float64) (float64, error) {
	if err := validate(pred, mos, 2); err != nil {
		return 0, fmt.Errorf("srcc: %w", err)
	}
	if err := checkNotConstant(pred, mos); err != nil {
		return 0, fmt.Errorf("srcc: %w", err)
	}
	r, err := pearson(Ranks(pred), Ranks(mos))
	if err != nil {
		return 0, fmt.Errorf("srcc: %w", err)
	}
	return r, nil
}

// Ranks returns the 1-based ranks of x, giving tied values the mean of the
// ranks they span (the "average" method).
func Ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && x[idx[j]] == x[idx[i]] {
			j++
		}
		// Positions i..j-1 share the average of ranks i+1..j.
		avg := float64(i+1+j) / 2
		for k := i; k < j; k++ {
			r[idx[k]] = avg
		}
		i = j
	}
	return r
}

// KRCC returns Kendall's tau-b rank correlation, which corrects for ties in
// either input (scipy.stats.kendalltau's default). It runs in O(n log n)
// with Knight's algorithm: sort by (pred, mos), then count the discordant
// pairs as the swaps of a merge sort on mos.
func KRCC(pred, mos []float64) (float64, error) {
	if err := validate(pred, mos, 2); err != nil {
		return 0, fmt.Errorf("krcc: %w", err)
	}
	if err := checkNotConstant(pred, mos); err != nil {
		return 0, fmt.Errorf("krcc: %w", err)
	}
	n := len(pred)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		pa, pb := pred[idx[a]], pred[idx[b]]
		if pa != pb {
			return pa < pb
		}
		return mos[idx[a]] < mos[idx[b]]
	})
	x := make([]float64, n)
	y := make([]float64, n)
	for i, k := range idx {
		x[i], y[i] = pred[k], mos[k]
	}
	// Pairs tied in x, and tied in both x and y (runs within x-runs, since
	// y is sorted inside each x-run).
	tiesX := tiedPairs(n, func(i int) bool { return x[i] == x[i-1] })
	tiesXY := tiedPairs(n, func(i int) bool { return x[i] == x[i-1] && y[i] == y[i-1] })
	swaps := mergeCountSwaps(y, make([]float64, n))
	// y is now sorted, so its ties are adjacent.
	tiesY := tiedPairs(n, func(i int) bool { return y[i] == y[i-1] })

	total := int64(n) * int64(n-1) / 2
	num := float64(total-tiesX-tiesY+tiesXY) - 2*float64(swaps)
	den := math.Sqrt(float64(total-tiesX)) * math.Sqrt(float64(total-tiesY))
	if den == 0 {
		return 0, fmt.Errorf("krcc: %w", ErrConstant)
	}
	t := num / den
	return math.Max(-1, math.Min(1, t)), nil
}

// tiedPairs sums t(t-1)/2 over the runs of consecutive indices for which
// same(i) reports that element i equals element i-1.
func tiedPairs(n int, same func(i int) bool) int64 {
	var total, run int64
	for i := 1; i < n; i++ {
		if same(i) {
			run++
			continue
		}
		total += run * (run + 1) / 2
		run = 0
	}
	return total + run*(run+1)/2
}

// mergeCountSwaps sorts a ascending (stable merge sort, buf as scratch) and
// returns the number of strictly inverted pairs, i.e. the discordant pairs.
func mergeCountSwaps(a, buf []float64) int64 {
	n := len(a)
	if n < 2 {
		return 0
	}
	mid := n / 2
	swaps := mergeCountSwaps(a[:mid], buf[:mid]) + mergeCountSwaps(a[mid:], buf[mid:])
	i, j, k := 0, mid, 0
	for i < mid && j < n {
		if a[j] < a[i] {
			// a[j] is smaller than every remaining left element.
			swaps += int64(mid - i)
			buf[k] = a[j]
			j++
		} else {
			buf[k] = a[i]
			i++
		}
		k++
	}
	k += copy(buf[k:], a[i:mid])
	copy(buf[k:], a[j:])
	copy(a, buf)
	return swaps
}

// RMSE returns the root mean squared difference between predictions and
// MOS, without any mapping. It needs at least one sample.
func RMSE(pred, mos []float64) (float64, error) {
	if err := validate(pred, mos, 1); err != nil {
		return 0, fmt.Errorf("rmse: %w", err)
	}
	var s float64
	for i := range pred {
		d := pred[i] - mos[i]
		s += d * d
	}
	return math.Sqrt(s / float64(len(pred))), nil
}

// Report gathers every metric for one evaluation, ready for JSON output.
type Report struct {
	N    int     `json:"n"`
	PLCC float64 `json:"plcc"`
	SRCC float64 `json:"srcc"`
	KRCC float64 `json:"krcc"`
	// RMSE is between raw predictions and MOS.
	RMSE float64 `json:"rmse"`
	// LogisticPLCC is PLCC after the 4-parameter logistic mapping; it equals
	// PLCC when LogisticFitted is false.
	LogisticPLCC float64 `json:"logistic_plcc"`
	// LogisticRMSE is RMSE after the mapping (raw RMSE when not fitted).
	LogisticRMSE   float64    `json:"logistic_rmse"`
	LogisticFitted bool       `json:"logistic_fitted"`
	LogisticParams [4]float64 `json:"logistic_params"`
}

// Compute evaluates all metrics at once. It needs at least 3 samples and
// non-constant inputs; a failed logistic fit is not an error but is flagged
// in the report.
func Compute(pred, mos []float64) (Report, error) {
	if err := validate(pred, mos, 3); err != nil {
		return Report{}, fmt.Errorf("metrics: %w", err)
	}
	if err := checkNotConstant(pred, mos); err != nil {
		return Report{}, fmt.Errorf("metrics: %w", err)
	}
	var rep Report
	var err error
	rep.N = len(pred)
	if rep.PLCC, err = PLCC(pred, mos); err != nil {
		return Report{}, err
	}
	if rep.SRCC, err = SRCC(pred, mos); err != nil {
		return Report{}, err
	}
	if rep.KRCC, err = KRCC(pred, mos); err != nil {
		return Report{}, err
	}
	if rep.RMSE, err = RMSE(pred, mos); err != nil {
		return Report{}, err
	}
	fit, err := FitLogistic(pred, mos)
	if err != nil {
		return Report{}, err
	}
	rep.LogisticPLCC = fit.PLCC
	rep.LogisticRMSE = fit.RMSE
	rep.LogisticFitted = fit.Fitted
	rep.LogisticParams = fit.Params()
	for _, m := range []struct {
		name string
		v    float64
	}{{"PLCC", rep.PLCC}, {"SRCC", rep.SRCC}, {"KRCC", rep.KRCC}, {"RMSE", rep.RMSE}} {
		if math.IsNaN(m.v) || math.IsInf(m.v, 0) {
			return Report{}, fmt.Errorf("metrics: %s is %v: the values are too large to compare (|MOS| up to %g, |prediction| up to %g)",
				m.name, m.v, maxAbs(mos), maxAbs(pred))
		}
	}
	return rep, nil
}
