// Package explainref loads the reference attention weights of
// testdata/explain-ref (written by testdata/gen/make_explain_ref.py with
// python3-torch from the IP-IQA and CLIP-AGIQA fixtures) for tests.
package explainref

import (
	"fmt"
	"math"
	"path/filepath"
	"runtime"

	"github.com/clipagiqa/clipagiqa/internal/npy"
)

// Tolerance is the largest absolute difference allowed between our
// attention weights and the reference (weights lie in [0, 1]).
const Tolerance = 1e-5

// Dir is the reference directory in the repository.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "explain-ref")
}

// Weights reads one reference array (ipiqa_visual_attn, ipiqa_text_attn,
// vit_cls_attn): [N, H, L] float32, token 0 the mean or class token.
func Weights(name string) (shape []int64, values []float32, err error) {
	a, err := npy.ReadFile(filepath.Join(Dir(), name+".npy"))
	if err != nil {
		return nil, nil, fmt.Errorf("explainref: %w", err)
	}
	if a.F32 == nil {
		return nil, nil, fmt.Errorf("explainref: %s.npy is not float32", name)
	}
	return a.Shape, a.F32, nil
}

// MaxAbs is the largest |got[i] − want[i]|; lengths must agree.
func MaxAbs(got, want []float32) (float64, error) {
	if len(got) != len(want) {
		return 0, fmt.Errorf("explainref: %d values, want %d", len(got), len(want))
	}
	m := 0.0
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		if d < 0 {
			d = -d
		}
		if d != d {
			return math.Inf(1), nil
		}
		m = max(m, d)
	}
	return m, nil
}
