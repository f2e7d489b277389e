package metrics

import (
	"strings"
	"testing"
)

// Finite but huge inputs overflow the sums: Compute must refuse, not report
// an RMSE of +Inf or a PLCC of -0.
func TestComputeRefusesOverflow(t *testing.T) {
	cases := []struct {
		name      string
		pred, mos []float64
	}{
		{"huge MOS", []float64{1, 2, 3, 4}, []float64{1, 2, 3, 1e308}},
		{"huge predictions", []float64{1, 2, -1e307, 1e308}, []float64{1, 2, 3, 4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Compute(c.pred, c.mos)
			if err == nil || !strings.Contains(err.Error(), "too large") {
				t.Fatalf("Compute = %+v, %v; want a 'too large' error", rep, err)
			}
		})
	}
	if _, err := Compute([]float64{1, 2, 3, 4}, []float64{2, 1, 4, 3}); err != nil {
		t.Fatalf("ordinary values: %v", err)
	}
}
