// Package ipiqaref loads the IP-IQA reference fixture (testdata/ipiqa-ref:
// numbers produced by the official IP-IQA code on a tiny random CLIP ResNet,
// see its README) for tests.
package ipiqaref

import (
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
)

// Images is the number of fixture images.
const Images = 8

// Dir is the fixture directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "ipiqa-ref")
}

// Path joins name onto the fixture directory.
func Path(name string) string { return filepath.Join(Dir(), name) }

// Summary describes a tensor recorded by statistics and probes.
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

// BNStats are a BatchNorm layer's buffers after a step.
type BNStats struct {
	RunningMean       Summary `json:"running_mean"`
	RunningVar        Summary `json:"running_var"`
	NumBatchesTracked int64   `json:"num_batches_tracked"`
}

// Prompt is one fixture prompt with its CLIP token ids.
type Prompt struct {
	Text     string  `json:"text"`
	Tokens77 []int64 `json:"tokens_77"`
	EOTIndex int     `json:"eot_index"`
}

// Expected is the part of expected.json the tests use.
type Expected struct {
	TinyCLIP struct {
		Hyper struct {
			EmbedDim          int   `json:"embed_dim"`
			ImageResolution   int   `json:"image_resolution"`
			VisionLayers      []int `json:"vision_layers"`
			VisionWidth       int   `json:"vision_width"`
			ContextLength     int   `json:"context_length"`
			VocabSize         int   `json:"vocab_size"`
			TransformerWidth  int   `json:"transformer_width"`
			TransformerHeads  int   `json:"transformer_heads"`
			TransformerLayers int   `json:"transformer_layers"`
		} `json:"hyper_parameters"`
		AttnPool struct {
			EmbedDim   int `json:"embed_dim"`
			NumHeads   int `json:"num_heads"`
			SpacialDim int `json:"spacial_dim"`
			OutputDim  int `json:"output_dim"`
		} `json:"attnpool"`
	} `json:"tiny_clip"`
	Prompts []Prompt `json:"prompts"`
	Eval    struct {
		TextFeatures    [][]float64        `json:"text_features"`
		ResNetStages    map[string]Summary `json:"resnet_stages"`
		FeatureMapShape []int64            `json:"feature_map_shape"`
		FeatureMap      []Summary          `json:"feature_map"`
		GlobalVisual    [][]float64        `json:"global_visual"`
	} `json:"eval"`
	Image2Prompt struct {
		PromptEmbeddings       [][]float64        `json:"prompt_embeddings"`
		VisualOutputEvalBefore [][]float64        `json:"visual_output_eval_before"`
		VisualOutputTrainMode  [][]float64        `json:"visual_output_train_mode"`
		Loss                   float64            `json:"loss"`
		Grads                  map[string]Summary `json:"grads"`
		BNRunningStatsAfter    map[string]BNStats `json:"bn_running_stats_after"`
	} `json:"image2prompt"`
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

// CLIP's normalisation constants, as the official processor's float32 tensors.
var (
	mean = [3]float32{0.48145466, 0.4578275, 0.40821073}
	std  = [3]float32{0.26862954, 0.26130258, 0.27577711}
)

// Pixels returns the model input for all fixture images at side size (224 or
// 512): resized/img_k_<size>.png through (float32(u8)/255 − mean)/std, CHW,
// which the README says equals the official tensor bit for bit.
func Pixels(size int) ([]float32, error) {
	out := make([]float32, 0, Images*3*size*size)
	for k := range Images {
		name := Path(fmt.Sprintf("resized/img_%d_%d.png", k, size))
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rgba, ok := img.(*image.RGBA)
		if !ok {
			nrgba, ok2 := img.(*image.NRGBA)
			if !ok2 {
				return nil, fmt.Errorf("%s: decoded as %T, want 8-bit RGB", name, img)
			}
			rgba = (*image.RGBA)(nrgba)
		}
		if b := rgba.Bounds(); b.Dx() != size || b.Dy() != size {
			return nil, fmt.Errorf("%s: %v, want %d×%d", name, b, size, size)
		}
		for c := range 3 {
			for y := range size {
				for x := range size {
					u := rgba.Pix[y*rgba.Stride+4*x+c]
					out = append(out, (float32(u)/255-mean[c])/std[c])
				}
			}
		}
	}
	return out, nil
}

// Flatten concatenates rows (the CLIP-AGIQA fixture's helper).
func Flatten(rows [][]float64) []float64 { return reffix.Flatten(rows) }

// MaxAbs is max |got−want| (+Inf for different lengths).
func MaxAbs(got []float32, want []float64) float64 { return reffix.MaxAbs(got, want) }

// MaxAbsOf is max |want|.
func MaxAbsOf(want []float64) float64 {
	m := 0.0
	for _, v := range want {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// Compare checks got (flattened) against a summary: shape size, first
// values, probes, min, max and l2 within tol, the sum within tol·sqrt(n). It
// returns the largest deviation seen relative to tol (≤ 1 passes) and a
// description of the worst quantity.
func (s Summary) Compare(got []float32, tol float64) (float64, string) {
	n := int64(1)
	for _, d := range s.Shape {
		n *= d
	}
	if int64(len(got)) != n {
		return math.Inf(1), fmt.Sprintf("%d values, summary shape %v", len(got), s.Shape)
	}
	worst, what := 0.0, ""
	check := func(name string, g, w, t float64) {
		if r := math.Abs(g-w) / t; r > worst || math.IsNaN(r) {
			worst, what = r, fmt.Sprintf("%s: got %.9g, want %.9g", name, g, w)
		}
	}
	var sum, l2 float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range got {
		f := float64(v)
		sum += f
		l2 += f * f
		lo, hi = math.Min(lo, f), math.Max(hi, f)
	}
	for i, w := range s.First {
		check(fmt.Sprintf("first[%d]", i), float64(got[i]), w, tol)
	}
	for i, idx := range s.ProbeIndex {
		check(fmt.Sprintf("probe[%d]", idx), float64(got[idx]), s.ProbeValues[i], tol)
	}
	check("min", lo, s.Min, tol)
	check("max", hi, s.Max, tol)
	check("l2", math.Sqrt(l2), s.L2, tol)
	check("sum", sum, s.Sum, tol*math.Sqrt(float64(n)))
	return worst, what
}
