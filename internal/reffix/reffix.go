// Package reffix loads the CLIP-AGIQA reference fixture (testdata/clip-agiqa-ref,
// numbers produced by the original Python code) for tests.
package reffix

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"

	"github.com/clipagiqa/clipagiqa/internal/npy"
)

// DirEnv names the variable that overrides the fixture directory: test
// binaries run away from their sources (make gpu-bundle) find it there.
const DirEnv = "CLIPAGIQA_REFFIX_DIR"

// Dir is the fixture directory: $CLIPAGIQA_REFFIX_DIR, else the repository's.
func Dir() string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "clip-agiqa-ref")
}

// Path joins name onto the fixture directory.
func Path(name string) string { return filepath.Join(Dir(), name) }

// Expected is the part of expected.json the tests use.
type Expected struct {
	CLIPIQA struct {
		Prompts          []string    `json:"prompts"`
		Tokenized        [][]int64   `json:"tokenized"`
		TextFeaturesRaw  [][]float64 `json:"text_features_raw"`
		ImageFeaturesRaw [][]float64 `json:"image_features_raw"`
		Cos              [][]float64 `json:"cos"`
		Scores           []float64   `json:"scores"`
	} `json:"clipiqa"`
	CLIPAGIQA struct {
		Classnames        []string                   `json:"classnames"`
		NCtx              int                        `json:"n_ctx"`
		TokenizedPrompts  [][]int64                  `json:"tokenized_prompts"`
		EOTIndex          []int64                    `json:"eot_index"`
		Ctx               [][]float64                `json:"ctx"`
		ImageFeaturesRaw  [][]float64                `json:"image_features_raw"`
		TextFeaturesRaw   [][]float64                `json:"text_features_raw"`
		TextFeatures      [][]float64                `json:"text_features"`
		Scores            []float64                  `json:"scores"`
		RegressionFull    map[string]json.RawMessage `json:"regression_full"`
		RegressionInput16 [][]float64                `json:"regression_input_first16"`
	} `json:"clip_agiqa"`
	TrainStep       TrainStep `json:"train_step"`
	TrainStepResume struct {
		TrainStep
		CheckpointMomentum Summary `json:"checkpoint_momentum_buffer_ctx"`
	} `json:"train_step_resume"`
	FP16Ctx struct {
		Scores []float64 `json:"scores"`
	} `json:"fp16_ctx_variant"`
}

// TrainStep is one recorded SGD step of the official code.
type TrainStep struct {
	LR                  float64                    `json:"lr"`
	MOS                 []float64                  `json:"mos"`
	OutputsBeforeStep   []float64                  `json:"outputs_before_step"`
	Loss                float64                    `json:"loss"`
	GradCtx             [][]float64                `json:"grad_ctx"`
	CtxAfter            [][]float64                `json:"ctx_after"`
	MomentumBufferAfter Summary                    `json:"momentum_buffer_ctx_after"`
	GradRegression      map[string]Summary         `json:"grad_regression"`
	RegressionAfter     map[string]Summary         `json:"regression_after"`
	ScoresAfter         []float64                  `json:"scores_after"`
	RegressionAfterFull map[string]json.RawMessage `json:"regression_after_full"`
}

// Summary describes a tensor recorded only by statistics and probes.
type Summary struct {
	Shape       []int64   `json:"shape"`
	Sum         float64   `json:"sum"`
	L2          float64   `json:"l2"`
	Min         float64   `json:"min"`
	Max         float64   `json:"max"`
	First       []float64 `json:"first"`
	ProbeIndex  []int64   `json:"probe_flat_index"`
	ProbeValues []float64 `json:"probe_values"`
}

// Load parses expected.json.
func Load() (*Expected, error) {
	b, err := os.ReadFile(Path("expected.json"))
	if err != nil {
		return nil, err
	}
	var e Expected
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("expected.json: %w", err)
	}
	return &e, nil
}

// Pixels returns preprocessed.npy ([8,3,224,224] float32).
func Pixels() (*npy.Array, error) { return npy.ReadFile(Path("preprocessed.npy")) }

// Flatten concatenates rows.
func Flatten(rows [][]float64) []float64 {
	var out []float64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// RelErr is ‖got−want‖/‖want‖.
func RelErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// MaxAbs is max |got−want|.
func MaxAbs(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range want {
		m = math.Max(m, math.Abs(float64(got[i])-want[i]))
	}
	return m
}

// FlattenInts concatenates rows of ids.
func FlattenInts(rows [][]int64) []int64 {
	var out []int64
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}
