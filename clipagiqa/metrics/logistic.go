package metrics

import (
	"fmt"
	"math"
)

// LogisticFit is the result of fitting the 4-parameter logistic
//
//	f(x) = (B1-B2) / (1 + exp(-(x-B3)/|B4|)) + B2
//
// from predictions to MOS by least squares, the mapping VQEG and most IQA
// papers apply before PLCC to remove a monotonic non-linearity.
type LogisticFit struct {
	B1, B2, B3, B4 float64
	// Fitted is false when the fit failed or was not attempted (fewer than
	// 5 samples); PLCC and RMSE are then those of the raw predictions.
	Fitted bool
	// Iterations is the number of Levenberg–Marquardt iterations run.
	Iterations int
	// PLCC is the Pearson correlation of the mapped predictions with MOS.
	PLCC float64
	// RMSE is the root mean squared error of the mapped predictions.
	RMSE float64
}

// Params returns {B1, B2, B3, B4}.
func (f LogisticFit) Params() [4]float64 { return [4]float64{f.B1, f.B2, f.B3, f.B4} }

// Map applies the fitted mapping to one prediction; with no fit it is the
// identity.
func (f LogisticFit) Map(x float64) float64 {
	if !f.Fitted {
		return x
	}
	return logistic4(f.Params(), x)
}

// sigmoid is 1/(1+exp(-z)) without overflow for large |z|.
func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func logistic4(b [4]float64, x float64) float64 {
	return (b[0]-b[1])*sigmoid((x-b[2])/math.Abs(b[3])) + b[1]
}

// LogisticPLCC returns PLCC after the 4-parameter logistic mapping and
// whether the fit succeeded; when it did not, the value is plain PLCC.
func LogisticPLCC(pred, mos []float64) (plcc float64, fitted bool, err error) {
	f, err := FitLogistic(pred, mos)
	if err != nil {
		return 0, false, err
	}
	return f.PLCC, f.Fitted, nil
}

// Fitting constants: enough iterations for slow valleys, a relative cost
// change small enough to agree with MINPACK's defaults.
const (
	lmMaxIter   = 500
	lmTol       = 1e-12
	lmLambda0   = 1e-3
	lmLambdaMax = 1e16
	minFitN     = 5
)

// FitLogistic fits the 4-parameter logistic by Levenberg–Marquardt from
// b1=max(mos), b2=min(mos), b3=mean(pred), b4=std(pred)/4 (and, for a
// negative relation, also from b1, b2 swapped), keeping the lowest squared
// error. It needs at least 3 samples and non-constant inputs; with fewer
// than 5 samples, or when no start converges to finite parameters with a
// usable (non-constant) mapping, it falls back to the raw predictions with
// Fitted false. It never returns NaN.
func FitLogistic(pred, mos []float64) (LogisticFit, error) {
	if err := validate(pred, mos, 3); err != nil {
		return LogisticFit{}, fmt.Errorf("logistic plcc: %w", err)
	}
	if err := checkNotConstant(pred, mos); err != nil {
		return LogisticFit{}, fmt.Errorf("logistic plcc: %w", err)
	}
	plain, err := pearson(pred, mos)
	if err != nil {
		return LogisticFit{}, fmt.Errorf("logistic plcc: %w", err)
	}
	rawRMSE, _ := RMSE(pred, mos)
	fallback := LogisticFit{PLCC: plain, RMSE: rawRMSE}
	if len(pred) < minFitN {
		return fallback, nil
	}

	lo, hi := minMax(mos)
	mean, std := meanStd(pred)
	starts := [][4]float64{{hi, lo, mean, std / 4}}
	if plain < 0 {
		starts = append(starts, [4]float64{lo, hi, mean, std / 4})
	}
	best := fallback
	bestSSE := math.Inf(1)
	for _, b0 := range starts {
		b, iters, sse, ok := levenbergMarquardt(pred, mos, b0)
		if !ok || sse >= bestSSE {
			continue
		}
		mapped := make([]float64, len(pred))
		for i, x := range pred {
			mapped[i] = logistic4(b, x)
		}
		if isConstant(mapped) {
			continue
		}
		r, err := pearson(mapped, mos)
		if err != nil {
			continue
		}
		bestSSE = sse
		best = LogisticFit{
			B1: b[0], B2: b[1], B3: b[2], B4: b[3],
			Fitted:     true,
			Iterations: iters,
			PLCC:       r,
			RMSE:       math.Sqrt(sse / float64(len(pred))),
		}
	}
	return best, nil
}

// levenbergMarquardt minimises the squared residuals of logistic4 from b,
// scaling the damping by diag(JᵀJ) (Marquardt) so that parameters of very
// different magnitudes are handled alike. ok is false when the cost or the
// parameters become non-finite.
func levenbergMarquardt(x, y []float64, b [4]float64) (best [4]float64, iters int, cost float64, ok bool) {
	if b[3] == 0 {
		return b, 0, 0, false
	}
	cost = sse(x, y, b)
	if math.IsNaN(cost) || math.IsInf(cost, 0) {
		return b, 0, 0, false
	}
	lambda := lmLambda0
	for iters = 1; iters <= lmMaxIter; iters++ {
		jtj, jtr := normalEquations(x, y, b)
		improved := false
		for lambda <= lmLambdaMax {
			var a [4][4]float64
			var rhs [4]float64
			for i := 0; i < 4; i++ {
				a[i] = jtj[i]
				d := jtj[i][i]
				if d == 0 {
					d = 1e-12
				}
				a[i][i] += lambda * d
				rhs[i] = -jtr[i]
			}
			step, solved := solve4(a, rhs)
			if !solved {
				lambda *= 10
				continue
			}
			var nb [4]float64
			for i := range nb {
				nb[i] = b[i] + step[i]
			}
			if nb[3] == 0 {
				lambda *= 10
				continue
			}
			nc := sse(x, y, nb)
			if nc < cost && !math.IsNaN(nc) {
				rel := (cost - nc) / math.Max(cost, math.SmallestNonzeroFloat64)
				b, cost = nb, nc
				lambda = math.Max(lambda/10, 1e-15)
				improved = true
				if rel < lmTol || small(step, b) {
					return b, iters, cost, finite(b)
				}
				break
			}
			lambda *= 10
		}
		if !improved {
			// No downhill step at any damping: a (local) minimum.
			break
		}
	}
	return b, iters, cost, finite(b) && !math.IsNaN(cost)
}

// small reports a step negligible relative to the parameters.
func small(step, b [4]float64) bool {
	for i := range step {
		if math.Abs(step[i]) > 1e-12*(math.Abs(b[i])+1e-12) {
			return false
		}
	}
	return true
}

func finite(b [4]float64) bool {
	for _, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

func sse(x, y []float64, b [4]float64) float64 {
	var s float64
	for i := range x {
		d := logistic4(b, x[i]) - y[i]
		s += d * d
	}
	return s
}

// normalEquations returns JᵀJ and Jᵀr for residuals r = f(x;b) - y, with
// the analytic Jacobian of logistic4.
func normalEquations(x, y []float64, b [4]float64) (jtj [4][4]float64, jtr [4]float64) {
	s := math.Abs(b[3])
	sign := 1.0
	if b[3] < 0 {
		sign = -1
	}
	for i := range x {
		z := (x[i] - b[2]) / s
		g := sigmoid(z)
		dg := g * (1 - g) * (b[0] - b[1])
		j := [4]float64{
			g,
			1 - g,
			-dg / s,
			-dg * z / s * sign,
		}
		r := (b[0]-b[1])*g + b[1] - y[i]
		for p := 0; p < 4; p++ {
			jtr[p] += j[p] * r
			for q := 0; q <= p; q++ {
				jtj[p][q] += j[p] * j[q]
			}
		}
	}
	for p := 0; p < 4; p++ {
		for q := p + 1; q < 4; q++ {
			jtj[p][q] = jtj[q][p]
		}
	}
	return jtj, jtr
}

// solve4 solves a·s = rhs by Gaussian elimination with partial pivoting
// after symmetric Jacobi scaling (a_ij/sqrt(a_ii a_jj)), so that parameters
// on very different scales do not make the pivots look singular; ok is false
// for a numerically singular system.
func solve4(a [4][4]float64, rhs [4]float64) (s [4]float64, ok bool) {
	var d [4]float64
	for i := range d {
		if !(a[i][i] > 0) || math.IsInf(a[i][i], 0) {
			return s, false
		}
		d[i] = math.Sqrt(a[i][i])
	}
	for i := range a {
		for j := range a[i] {
			a[i][j] /= d[i] * d[j]
		}
		rhs[i] /= d[i]
	}
	for c := 0; c < 4; c++ {
		p := c
		for r := c + 1; r < 4; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-14 {
			return s, false
		}
		a[c], a[p] = a[p], a[c]
		rhs[c], rhs[p] = rhs[p], rhs[c]
		for r := c + 1; r < 4; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k < 4; k++ {
				a[r][k] -= f * a[c][k]
			}
			rhs[r] -= f * rhs[c]
		}
	}
	for c := 3; c >= 0; c-- {
		v := rhs[c]
		for k := c + 1; k < 4; k++ {
			v -= a[c][k] * s[k]
		}
		s[c] = v / a[c][c]
	}
	for i := range s {
		s[i] /= d[i]
	}
	return s, finite(s)
}

func minMax(x []float64) (lo, hi float64) {
	lo, hi = x[0], x[0]
	for _, v := range x[1:] {
		lo = math.Min(lo, v)
		hi = math.Max(hi, v)
	}
	return lo, hi
}

// meanStd returns the mean and population standard deviation.
func meanStd(x []float64) (mean, std float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(x)))
}
