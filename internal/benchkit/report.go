package benchkit

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
)

// Report is everything one bench run measured; it is written as JSON and as
// a markdown table.
type Report struct {
	Mode    string      `json:"mode"` // quick or full
	Started string      `json:"started"`
	Seconds float64     `json:"seconds"`
	Machine MachineInfo `json:"machine"`
	Model   ModelInfo   `json:"model"`

	Floor         Floor        `json:"floor"`
	Agreement     float64      `json:"features_rel_err"`      // Go fused vs reference, same pixels
	TextAgreement float64      `json:"text_features_rel_err"` // same context vectors
	Encoder       []EncoderRow `json:"encoder"`
	Extras        []ExtraInfo  `json:"extra_references"` // further encoder references, where available
	ExtraNotes    []string     `json:"extra_notes"`      // why one is absent
	Scoring       *ScoringRow  `json:"scoring,omitempty"`
	Text          *TextRow     `json:"text,omitempty"`
	Training      *TrainingRow `json:"training,omitempty"`
	Targets       []Target     `json:"targets"`
	Notes         []string     `json:"notes"`
}

// MachineInfo describes where the numbers come from.
type MachineInfo struct {
	CPU           string  `json:"cpu"`
	Cores         int     `json:"cores"`
	Threads       int     `json:"threads"`
	BLASThreads   int     `json:"blas_threads"`
	Go            string  `json:"go"`
	Libtorch      string  `json:"libtorch"`
	PyTorch       string  `json:"pytorch"`
	DirectBLAS    bool    `json:"fused_direct_blas"`
	DNNL          bool    `json:"fused_dnnl"`
	LoadAvgStart  float64 `json:"loadavg_start"`
	LoadAvgEnd    float64 `json:"loadavg_end"`
	OtherCPUStart float64 `json:"other_cpu_start"`
}

// ModelInfo names the weights.
type ModelInfo struct {
	Path          string      `json:"path"`
	Config        clip.Config `json:"config"`
	FLOPsPerImage float64     `json:"flops_per_image"`
}

// Floor is the machine's measured matrix-multiply rate and what it allows.
type Floor struct {
	N          int     `json:"n"`
	GoGFLOPS   float64 `json:"go_gflops"`
	RefGFLOPS  float64 `json:"ref_gflops"`
	ImgPerSec  float64 `json:"img_per_s"` // GoGFLOPS / FLOPsPerImage
	GoRuns     Stat    `json:"go_runs"`
	RefRuns    Stat    `json:"ref_runs"`
	Comparison string  `json:"-"`
}

// EncoderRow is image-encoder throughput at one batch size (images/s).
type EncoderRow struct {
	Batch      int     `json:"batch"`
	Fused      Stat    `json:"go_fused"`
	Plain      Stat    `json:"go_plain"`
	Ref        Stat    `json:"reference"`
	FusedRate  float64 `json:"go_fused_img_s"`
	PlainRate  float64 `json:"go_plain_img_s"`
	RefRate    float64 `json:"reference_img_s"`
	Ratio      float64 `json:"ratio"`       // fused / reference
	PlainRatio float64 `json:"plain_ratio"` // plain / reference
	PctFloor   float64 `json:"pct_floor"`   // fused as a share of the matmul floor
	// The reference with OMP_WAIT_POLICY=PASSIVE.
	Tuned      Stat    `json:"reference_passive"`
	TunedRate  float64 `json:"reference_passive_img_s"`
	TunedRatio float64 `json:"ratio_passive"`
	// PyTorch 2 eager / torch.compile and ONNX Runtime, where available.
	Extra []ExtraRate `json:"extra"`
}

// ScoringRow is end-to-end scoring from JPEG files, each side in a fresh
// process (so its peak RSS is its own).
type ScoringRow struct {
	Images        int     `json:"images"`
	Batch         int     `json:"batch"`
	GoRate        float64 `json:"go_img_s"`
	RefRate       float64 `json:"reference_img_s"`
	Ratio         float64 `json:"ratio"`
	GoPeakKB      int64   `json:"go_peak_kb"`      // during scoring (after load and warm-up)
	RefPeakKB     int64   `json:"ref_peak_kb"`     //
	GoProcPeakKB  int64   `json:"go_proc_peak_kb"` // whole process, load included
	RefProcPeakKB int64   `json:"ref_proc_peak_kb"`
	GoLoadS       float64 `json:"go_load_s"`
	RefLoadS      float64 `json:"ref_load_s"`
}

// TextRow is the text path: 6 prompts, forward and backward to the context.
type TextRow struct {
	Go         Stat    `json:"go"`
	Ref        Stat    `json:"reference"`
	Ratio      float64 `json:"ratio"` // reference time / Go time
	Tuned      Stat    `json:"reference_passive"`
	TunedRatio float64 `json:"ratio_passive"`
}

// TrainingRow is training cost on the generated set at batch 32.
type TrainingRow struct {
	Images        int     `json:"images"`
	StepsPerEpoch int     `json:"steps_per_epoch"`
	Epochs        int     `json:"epochs"`
	OffStepGo     Stat    `json:"off_step_go"`
	OffStepRef    Stat    `json:"off_step_reference"`
	OffEpochGo    float64 `json:"off_epoch_go_s"`
	OffEpochRef   float64 `json:"off_epoch_reference_s"`
	OffEpochRatio float64 `json:"off_epoch_ratio"`
	// Cached steps (text path + regressor on cached features).
	CachedStepGo Stat `json:"cached_step_go"`
	// One pass: decode + centre transform + encoder for every image.
	EncodePassGo float64 `json:"encode_pass_go_s"`
	EncodeNote   string  `json:"encode_note"`
	Center100Go  float64 `json:"center_100_go_s"`
	Views100Go   float64 `json:"views8_100_go_s"`
	Off100Go     float64 `json:"off_100_go_s"`
	Ref100       float64 `json:"reference_100_s"`
	// Measured end-to-end runs (quick mode), for comparison with the projection.
	CenterMeasured *MeasuredRun `json:"center_measured,omitempty"`
	CenterVsPass   float64      `json:"center_vs_pass"`
	CenterVsRef    float64      `json:"center_speedup_vs_reference"`
	ViewsVsRef     float64      `json:"views8_speedup_vs_reference"`
	Method         string       `json:"method"`
}

// MeasuredRun is a whole Train call timed end to end.
type MeasuredRun struct {
	Images  int     `json:"images"`
	Epochs  int     `json:"epochs"`
	Seconds float64 `json:"seconds"`
	Encode  float64 `json:"encode_s"`
}

// Target is one of the goals and whether this run met it.
type Target struct {
	Name  string  `json:"name"`
	Goal  string  `json:"goal"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Met   bool    `json:"met"`
}

// Write stores the report as <dir>/<mode>.md and <dir>/<mode>.json (where
// NaNs, values that could not be measured, become 0).
func (r *Report) Write(dir string) (jsonPath, mdPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	jsonPath = filepath.Join(dir, r.Mode+".json")
	mdPath = filepath.Join(dir, r.Mode+".md")
	var sb strings.Builder
	r.Markdown(&sb)
	if err := os.WriteFile(mdPath, []byte(sb.String()), 0o644); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	zeroNaNs(reflect.ValueOf(r))
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return "", "", fmt.Errorf("write report: %w", err)
	}
	return jsonPath, mdPath, nil
}

// zeroNaNs sets every NaN or infinite float64 reachable from v to 0: JSON
// cannot hold them (the markdown shows them as "–").
func zeroNaNs(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			zeroNaNs(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				zeroNaNs(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			zeroNaNs(v.Index(i))
		}
	case reflect.Float64:
		if f := v.Float(); (math.IsNaN(f) || math.IsInf(f, 0)) && v.CanSet() {
			v.SetFloat(0)
		}
	}
}

// Markdown renders the report's tables.
func (r *Report) Markdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "# clipagiqa bench (%s)\n\n", r.Mode)
	fmt.Fprintf(w, "%s · %s, %d cores · threads %d (Go's OpenBLAS pool %d once the fused encoder is on) · Go %s · libtorch %s · PyTorch %s · "+
		"load average %.2f at start, %.2f at end · %.0f s\n\n",
		r.Started, m.CPU, m.Cores, m.Threads, m.BLASThreads, m.Go, m.Libtorch, m.PyTorch, m.LoadAvgStart, m.LoadAvgEnd, r.Seconds)
	c := r.Model.Config
	fmt.Fprintf(w, "Model: `%s` — ViT %d×%d/%d (width %d, %d layers), text width %d × %d layers, "+
		"%.1f GFLOP per image. Go and the PyTorch reference load the same file; their image features of the same "+
		"pixels differ by %.2g and their prompts' text features (same context vectors) by %.2g (relative L2).\n\n",
		r.Model.Path, c.ImageResolution, c.ImageResolution, c.VisionPatchSize, c.VisionWidth, c.VisionLayers,
		c.TransformerWidth, c.TransformerLayers, r.Model.FLOPsPerImage/1e9, r.Agreement, r.TextAgreement)
	fmt.Fprintf(w, "Fused paths: BLAS sgemm called directly %v, oneDNN sgemm for few-row products %v.\n\n", m.DirectBLAS, m.DNNL)
	fmt.Fprintf(w, "Ratios are Go ÷ reference (higher is better for Go) from runs interleaved in this one process tree; "+
		"times are medians.\n\n")

	fmt.Fprintf(w, "## Physical floor\n\n| | Go (libtorch) | reference (PyTorch) |\n|---|---|---|\n")
	fmt.Fprintf(w, "| matmul %d×%d GFLOP/s | %.1f | %.1f |\n", r.Floor.N, r.Floor.N, r.Floor.GoGFLOPS, r.Floor.RefGFLOPS)
	fmt.Fprintf(w, "| encoder floor (img/s at that rate) | %.2f | %.2f |\n\n", r.Floor.ImgPerSec,
		r.Floor.RefGFLOPS*1e9/r.Model.FLOPsPerImage)

	fmt.Fprintf(w, "## (a) Image encoder throughput (img/s)\n\n")
	fmt.Fprintf(w, "| batch | Go fused | Go plain | reference | fused ÷ ref | plain ÷ ref | reference, passive OpenMP | fused ÷ that | fused %% of floor |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, e := range r.Encoder {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", e.Batch, f2(e.FusedRate), f2(e.PlainRate), f2(e.RefRate),
			x2(e.Ratio), x2(e.PlainRatio), f2(e.TunedRate), x2(e.TunedRatio), pct(e.PctFloor))
	}
	fmt.Fprintln(w)
	r.extraMarkdown(w)
	if s := r.Scoring; s != nil {
		fmt.Fprintf(w, "## (b) Scoring from JPEG files (decode + preprocess + model), batch %d, %d images\n\n", s.Batch, s.Images)
		fmt.Fprintf(w, "| | Go | reference | Go ÷ ref |\n|---|---|---|---|\n")
		fmt.Fprintf(w, "| img/s | %s | %s | %s |\n", f2(s.GoRate), f2(s.RefRate), x2(s.Ratio))
		fmt.Fprintf(w, "| (d) peak RSS while scoring | %s | %s | %s |\n", mib(s.GoPeakKB), mib(s.RefPeakKB), x2(Ratio(float64(s.GoPeakKB), float64(s.RefPeakKB))))
		fmt.Fprintf(w, "| peak RSS of the process (load included) | %s | %s | %s |\n", mib(s.GoProcPeakKB), mib(s.RefProcPeakKB),
			x2(Ratio(float64(s.GoProcPeakKB), float64(s.RefProcPeakKB))))
		fmt.Fprintf(w, "| model load (s) | %.1f | %.1f | |\n\n", s.GoLoadS, s.RefLoadS)
	}
	if t := r.Text; t != nil {
		fmt.Fprintf(w, "## (c) Text path: 6 prompts, forward + backward to the context\n\n")
		fmt.Fprintf(w, "| | Go | reference | ref ÷ Go | reference, passive OpenMP | that ÷ Go |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(w, "| seconds | %s | %s | %s | %s | %s |\n\n", f3(t.Go.Median), f3(t.Ref.Median), x2(t.Ratio), f3(t.Tuned.Median), x2(t.TunedRatio))
	}
	if t := r.Training; t != nil {
		fmt.Fprintf(w, "## (c) Training at batch 32 on %d generated 512×512 JPEGs (%d steps per epoch)\n\n", t.Images, t.StepsPerEpoch)
		fmt.Fprintf(w, "| | Go | reference | ref ÷ Go |\n|---|---|---|---|\n")
		fmt.Fprintf(w, "| `off`: seconds per step (encoder in the loop), mean | %s | %s | %s |\n", f3(mean(t.OffStepGo.Runs)), f3(mean(t.OffStepRef.Runs)),
			x2(Ratio(mean(t.OffStepRef.Runs), mean(t.OffStepGo.Runs))))
		fmt.Fprintf(w, "| `off`: seconds per epoch | %.1f | %.1f | %s |\n", t.OffEpochGo, t.OffEpochRef, x2(t.OffEpochRatio))
		fmt.Fprintf(w, "| cached step (text path + regressor), s | %s | | |\n", f3(mean(t.CachedStepGo.Runs)))
		fmt.Fprintf(w, "| one encoder pass over the set (decode + transform + encode), s | %.1f | | |\n", t.EncodePassGo)
		fmt.Fprintf(w, "| 100 epochs `off`, s | %.0f | %.0f | %s |\n", t.Off100Go, t.Ref100, x2(Ratio(t.Ref100, t.Off100Go)))
		fmt.Fprintf(w, "| 100 epochs `center`, s | %.0f | | %s |\n", t.Center100Go, x2(t.CenterVsRef))
		fmt.Fprintf(w, "| 100 epochs `views=8`, s | %.0f | | %s |\n", t.Views100Go, x2(t.ViewsVsRef))
		fmt.Fprintf(w, "| `center` 100 epochs ÷ one encoder pass | %.2f | | |\n", t.CenterVsPass)
		if mr := t.CenterMeasured; mr != nil {
			fmt.Fprintf(w, "| measured run behind it: `center`, %d epochs on %d images, whole Train call, s | %.1f (cache build %.1f) | | |\n",
				mr.Epochs, mr.Images, mr.Seconds, mr.Encode)
		}
		fmt.Fprintf(w, "\n%s\n\n", t.Method)
	}
	fmt.Fprintf(w, "## Targets (issue 5)\n\n| target | goal | this run | met |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		met := "no"
		if t.Met {
			met = "**yes**"
		}
		fmt.Fprintf(w, "| %s | %s | %s %s | %s |\n", t.Name, t.Goal, f2(t.Value), t.Unit, met)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// f2 formats a measured value; zero and NaN mean "not measured".
func f2(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return "–"
	}
	if v != 0 && math.Abs(v) < 0.1 {
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// f3 formats seconds with four significant digits.
func f3(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.4g", v)
}

func x2(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func pct(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*v)
}

func mib(kb int64) string {
	if kb <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
}

// extraMarkdown is the encoder table against the other runtimes.
func (r *Report) extraMarkdown(w io.Writer) {
	if len(r.Extras) == 0 && len(r.ExtraNotes) == 0 {
		return
	}
	fmt.Fprintf(w, "### Image encoder against other runtimes (img/s; interleaved with the table above)\n\n")
	if len(r.Extras) > 0 {
		fmt.Fprintf(w, "| batch | Go fused |")
		sep := "|---|---|"
		for _, e := range r.Extras {
			fmt.Fprintf(w, " %s | fused ÷ that |", e.Name)
			sep += "---|---|"
		}
		fmt.Fprintf(w, "\n%s\n", sep)
		for _, row := range r.Encoder {
			fmt.Fprintf(w, "| %d | %s |", row.Batch, f2(row.FusedRate))
			for _, e := range r.Extras {
				rate, ratio := math.NaN(), math.NaN()
				for _, x := range row.Extra {
					if x.Name == e.Name {
						rate, ratio = x.Rate, x.Ratio
					}
				}
				fmt.Fprintf(w, " %s | %s |", f2(rate), x2(ratio))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
		for _, e := range r.Extras {
			fmt.Fprintf(w, "- %s: %s, same weights and thread count; image features differ from Go's by %.2g (relative L2).\n", e.Name, e.Version, e.RelErr)
		}
	}
	for _, n := range r.ExtraNotes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintln(w)
}
