package metrics

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refCase mirrors one entry of testdata/metrics_ref.json, written by
// testdata/gen/make_metrics.py with scipy.
type refCase struct {
	Name     string    `json:"name"`
	Pred     []float64 `json:"pred"`
	MOS      []float64 `json:"mos"`
	PLCC     float64   `json:"plcc"`
	SRCC     float64   `json:"srcc"`
	KRCC     float64   `json:"krcc"`
	RMSE     float64   `json:"rmse"`
	Logistic *struct {
		Params []float64 `json:"params"`
		PLCC   float64   `json:"plcc"`
		RMSE   float64   `json:"rmse"`
		SSE    float64   `json:"sse"`
	} `json:"logistic"`
}

func loadRef(t *testing.T) []refCase {
	t.Helper()
	raw, err := os.ReadFile("testdata/metrics_ref.json")
	require.NoError(t, err)
	var ref struct {
		Cases []refCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.NotEmpty(t, ref.Cases)
	return ref.Cases
}

// Tolerances: plain metrics are closed-form, so they must agree with scipy
// to rounding; logistic fits stop at slightly different points.
const (
	tolPlain    = 1e-9
	tolLogistic = 1e-4
)

func TestPlainMetricsMatchScipy(t *testing.T) {
	for _, c := range loadRef(t) {
		t.Run(c.Name, func(t *testing.T) {
			plcc, err := PLCC(c.Pred, c.MOS)
			require.NoError(t, err)
			assert.InDelta(t, c.PLCC, plcc, tolPlain, "plcc")
			srcc, err := SRCC(c.Pred, c.MOS)
			require.NoError(t, err)
			assert.InDelta(t, c.SRCC, srcc, tolPlain, "srcc")
			krcc, err := KRCC(c.Pred, c.MOS)
			require.NoError(t, err)
			assert.InDelta(t, c.KRCC, krcc, tolPlain, "krcc")
			rmse, err := RMSE(c.Pred, c.MOS)
			require.NoError(t, err)
			assert.InDelta(t, c.RMSE, rmse, tolPlain, "rmse")
		})
	}
}

func TestLogisticMatchesScipy(t *testing.T) {
	n := 0
	for _, c := range loadRef(t) {
		if c.Logistic == nil {
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			fit, err := FitLogistic(c.Pred, c.MOS)
			require.NoError(t, err)
			require.True(t, fit.Fitted)
			assert.InDelta(t, c.Logistic.PLCC, fit.PLCC, tolLogistic, "logistic plcc")
			// Least squares: our minimum must be at least as low as scipy's
			// (up to a relative 1e-6), otherwise we stopped early.
			ourSSE := fit.RMSE * fit.RMSE * float64(len(c.Pred))
			assert.LessOrEqual(t, ourSSE, c.Logistic.SSE*(1+1e-6), "sse")
			for i, want := range c.Logistic.Params {
				got := fit.Params()[i]
				if i == 3 {
					got = math.Abs(got) // only |b4| is identified
					want = math.Abs(want)
				}
				assert.InDelta(t, want, got, 1e-3*math.Max(1, math.Abs(want)), "param b%d", i+1)
			}
			p, fitted, err := LogisticPLCC(c.Pred, c.MOS)
			require.NoError(t, err)
			assert.True(t, fitted)
			assert.Equal(t, fit.PLCC, p)
		})
	}
	require.GreaterOrEqual(t, n, 4)
}

func TestComputeMatchesScipy(t *testing.T) {
	for _, c := range loadRef(t) {
		if c.Logistic == nil {
			continue
		}
		rep, err := Compute(c.Pred, c.MOS)
		require.NoError(t, err, c.Name)
		assert.Equal(t, len(c.Pred), rep.N)
		assert.InDelta(t, c.PLCC, rep.PLCC, tolPlain, c.Name)
		assert.InDelta(t, c.SRCC, rep.SRCC, tolPlain, c.Name)
		assert.InDelta(t, c.KRCC, rep.KRCC, tolPlain, c.Name)
		assert.InDelta(t, c.RMSE, rep.RMSE, tolPlain, c.Name)
		assert.InDelta(t, c.Logistic.PLCC, rep.LogisticPLCC, tolLogistic, c.Name)
		assert.InDelta(t, c.Logistic.RMSE, rep.LogisticRMSE, 1e-4*math.Max(1, c.Logistic.RMSE), c.Name)
		assert.True(t, rep.LogisticFitted)

		raw, err := json.Marshal(rep)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		for _, k := range []string{"n", "plcc", "srcc", "krcc", "rmse", "logistic_plcc", "logistic_rmse", "logistic_fitted", "logistic_params"} {
			assert.Contains(t, m, k)
		}
	}
}

// Hand-computed values: perfect, reversed and tied orders.
func TestHandComputed(t *testing.T) {
	tests := []struct {
		name             string
		pred, mos        []float64
		plcc, srcc, krcc float64
	}{
		{"identical", []float64{1, 2, 3, 4}, []float64{1, 2, 3, 4}, 1, 1, 1},
		{"reversed", []float64{1, 2, 3, 4}, []float64{8, 6, 4, 2}, -1, -1, -1},
		{"n2", []float64{0, 1}, []float64{5, 7}, 1, 1, 1},
		// pred ranks (1.5,1.5,3), mos ranks (1,2,3): spearman = 0.8660254...,
		// tau-b = (2-0)/sqrt((3-1)*3) = 0.8164965...
		{"tie", []float64{1, 1, 2}, []float64{1, 2, 3}, math.Sqrt(3) / 2, math.Sqrt(3) / 2, 2 / math.Sqrt(6)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PLCC(tc.pred, tc.mos)
			require.NoError(t, err)
			assert.InDelta(t, tc.plcc, p, 1e-12)
			s, err := SRCC(tc.pred, tc.mos)
			require.NoError(t, err)
			assert.InDelta(t, tc.srcc, s, 1e-12)
			k, err := KRCC(tc.pred, tc.mos)
			require.NoError(t, err)
			assert.InDelta(t, tc.krcc, k, 1e-12)
		})
	}
	r, err := RMSE([]float64{1, 2}, []float64{2, 4})
	require.NoError(t, err)
	assert.InDelta(t, math.Sqrt(2.5), r, 1e-15)
	assert.Equal(t, []float64{2, 4, 2, 2}, Ranks([]float64{5, 9, 5, 5}))
}

// KRCC via Knight's algorithm against the O(n²) definition of tau-b on
// random data with many ties.
func TestKRCCAgainstQuadratic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		n := 2 + rng.IntN(60)
		x := make([]float64, n)
		y := make([]float64, n)
		for i := range x {
			x[i] = float64(rng.IntN(6))
			y[i] = float64(rng.IntN(4))
		}
		if isConstant(x) || isConstant(y) {
			continue
		}
		var conc, disc, tx, ty float64
		for i := 0; i < n; i++ {
			for j := i + 1; j < n; j++ {
				dx, dy := x[i]-x[j], y[i]-y[j]
				switch {
				case dx == 0 && dy == 0:
				case dx == 0:
					tx++
				case dy == 0:
					ty++
				case (dx > 0) == (dy > 0):
					conc++
				default:
					disc++
				}
			}
		}
		want := (conc - disc) / math.Sqrt((conc+disc+tx)*(conc+disc+ty))
		got, err := KRCC(x, y)
		require.NoError(t, err)
		assert.InDelta(t, want, got, 1e-12, "trial %d", trial)
	}
}

func TestErrors(t *testing.T) {
	nan := math.NaN()
	funcs := map[string]func(p, m []float64) (float64, error){
		"plcc": PLCC, "srcc": SRCC, "krcc": KRCC,
		"logistic": func(p, m []float64) (float64, error) { v, _, err := LogisticPLCC(p, m); return v, err },
		"compute":  func(p, m []float64) (float64, error) { r, err := Compute(p, m); return r.PLCC, err },
	}
	tests := []struct {
		name      string
		pred, mos []float64
		want      string
	}{
		{"mismatch", []float64{1, 2, 3}, []float64{1, 2}, "length mismatch"},
		{"too few", []float64{1}, []float64{1}, "at least"},
		{"nan pred", []float64{1, nan, 3}, []float64{1, 2, 3}, "prediction 1 is NaN"},
		{"inf mos", []float64{1, 2, 3}, []float64{1, math.Inf(1), 3}, "MOS 1 is +Inf"},
		{"constant pred", []float64{2, 2, 2}, []float64{1, 2, 3}, "constant"},
		{"constant mos", []float64{1, 2, 3}, []float64{4, 4, 4}, "constant"},
	}
	for name, f := range funcs {
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				_, err := f(tc.pred, tc.mos)
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
			})
		}
	}
	_, err := PLCC([]float64{1, 1, 1}, []float64{1, 2, 3})
	assert.ErrorIs(t, err, ErrConstant)
	_, err = RMSE(nil, nil)
	assert.Error(t, err)
	_, err = Compute([]float64{1, 2}, []float64{1, 2})
	assert.ErrorContains(t, err, "at least 3")
}

// The fit must never produce NaN and falls back to plain PLCC (flagged) when
// it cannot or should not fit.
func TestLogisticRobustness(t *testing.T) {
	t.Run("too few points falls back", func(t *testing.T) {
		p, fitted, err := LogisticPLCC([]float64{1, 2, 4, 3}, []float64{1, 2, 3, 4})
		require.NoError(t, err)
		assert.False(t, fitted)
		plain, _ := PLCC([]float64{1, 2, 4, 3}, []float64{1, 2, 3, 4})
		assert.Equal(t, plain, p)
	})
	t.Run("exactly linear data approaches plain PLCC", func(t *testing.T) {
		// The least-squares logistic for a straight line runs off to
		// |b4| -> inf; its PLCC tends to the linear one (here ~1).
		rng := rand.New(rand.NewPCG(3, 4))
		x := make([]float64, 300)
		y := make([]float64, 300)
		for i := range x {
			x[i] = rng.Float64() * 10
			y[i] = 2*x[i] + 1 + 1e-3*rng.NormFloat64()
		}
		plain, err := PLCC(x, y)
		require.NoError(t, err)
		p, _, err := LogisticPLCC(x, y)
		require.NoError(t, err)
		assert.False(t, math.IsNaN(p))
		assert.InDelta(t, plain, p, 1e-6)
	})
	t.Run("two-level predictions", func(t *testing.T) {
		x := []float64{0, 0, 0, 1, 1, 1, 0, 1}
		y := []float64{1, 2, 1.5, 4, 3, 3.5, 1.2, 3.9}
		f, err := FitLogistic(x, y)
		require.NoError(t, err)
		assert.False(t, math.IsNaN(f.PLCC))
		// Any monotone map of a binary predictor has the same |PLCC|.
		plain, _ := PLCC(x, y)
		assert.InDelta(t, plain, f.PLCC, 1e-9)
	})
	t.Run("huge offsets and scales", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		x := make([]float64, 200)
		y := make([]float64, 200)
		for i := range x {
			u := rng.Float64()*6 - 3
			x[i] = 1e6 + 1e3*u
			y[i] = 1e-3*sigmoid(2*u) + 1e-5*rng.NormFloat64()
		}
		f, err := FitLogistic(x, y)
		require.NoError(t, err)
		assert.True(t, f.Fitted)
		plain, _ := PLCC(x, y)
		assert.Greater(t, f.PLCC, plain)
		assert.False(t, math.IsNaN(f.RMSE))
	})
	t.Run("random noise never NaN", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for trial := 0; trial < 100; trial++ {
			n := 5 + rng.IntN(40)
			x := make([]float64, n)
			y := make([]float64, n)
			for i := range x {
				x[i] = math.Round(rng.NormFloat64() * 2)
				y[i] = rng.Float64()
			}
			if isConstant(x) || isConstant(y) {
				continue
			}
			f, err := FitLogistic(x, y)
			require.NoError(t, err)
			require.False(t, math.IsNaN(f.PLCC) || math.IsInf(f.PLCC, 0), "trial %d", trial)
			require.LessOrEqual(t, math.Abs(f.PLCC), 1.0)
			if f.Fitted {
				// Least squares over a family containing (nearly) every
				// affine map cannot be much worse than the raw RMSE of the
				// best line; compare with the mean predictor as a floor.
				_, sd := meanStd(y)
				assert.LessOrEqual(t, f.RMSE, sd*(1+1e-9), "trial %d", trial)
			}
		}
	})
	t.Run("map", func(t *testing.T) {
		f := LogisticFit{B1: 5, B2: 1, B3: 2, B4: -0.5, Fitted: true}
		assert.InDelta(t, 3.0, f.Map(2), 1e-15)
		// z = (2.5-2)/0.5 = 1.
		assert.InDelta(t, 1+4/(1+math.Exp(-1)), f.Map(2.5), 1e-12)
		assert.Equal(t, 7.0, LogisticFit{}.Map(7))
	})
}

func BenchmarkKRCC20000(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float64, 20000)
	y := make([]float64, 20000)
	for i := range x {
		x[i] = rng.Float64()
		y[i] = x[i] + rng.NormFloat64()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := KRCC(x, y); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompute3000(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	x := make([]float64, 3000)
	y := make([]float64, 3000)
	for i := range x {
		x[i] = rng.Float64()*6 - 3
		y[i] = 5*sigmoid(x[i]) + 0.3*rng.NormFloat64()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Compute(x, y); err != nil {
			b.Fatal(err)
		}
	}
}
