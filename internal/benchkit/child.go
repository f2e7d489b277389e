package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

// ChildOptions configure a scoring phase run in a fresh process.
type ChildOptions struct {
	CLIP    string
	Files   string // text file, one image path per line
	Threads int
	Batch   int
}

// ChildArgs are the flags that make the bench command run ScoreFiles.
func ChildArgs(o ChildOptions) []string {
	return []string{"--child", "score", "--clip", o.CLIP, "--files", o.Files,
		"--threads", strconv.Itoa(o.Threads), "--batch", strconv.Itoa(o.Batch)}
}

// ScoreFiles is the Go side of the scoring benchmark: load CLIP (fused
// encoder on) and a CLIP-AGIQA model, score one warm-up batch, reset the peak
// RSS, then time clipagiqa.Predict over all files (the same code path as
// `clipagiqa predict`).
func ScoreFiles(ctx context.Context, o ChildOptions) (*ScoreResult, error) {
	if o.Threads > 0 {
		if err := torch.SetNumThreads(o.Threads); err != nil {
			return nil, err
		}
		torch.SetBLASThreads(o.Threads)
	}
	b, err := os.ReadFile(o.Files)
	if err != nil {
		return nil, fmt.Errorf("score files: %w", err)
	}
	var paths []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			paths = append(paths, l)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("score files: %s lists no images", o.Files)
	}
	t := time.Now()
	cm, err := clip.Load(o.CLIP, clip.Options{})
	if err != nil {
		return nil, err
	}
	defer cm.Close()
	if _, err := cm.EnableFused(); err != nil {
		return nil, err
	}
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, err
	}
	m, err := clipagiqa.New(cm, tok, clipagiqa.DefaultConfig())
	if err != nil {
		return nil, err
	}
	defer m.Close()
	res := &ScoreResult{LoadS: time.Since(t).Seconds()}
	if res.ProcPeakKB, err = PeakRSSKB(); err != nil {
		return nil, err
	}
	opts := clipagiqa.EvalOptions{BatchSize: o.Batch}
	if _, err := clipagiqa.Predict(ctx, m, paths[:min(o.Batch, len(paths))], opts); err != nil {
		return nil, err
	}
	ResetPeakRSS()
	t = time.Now()
	preds, err := clipagiqa.Predict(ctx, m, paths, opts)
	if err != nil {
		return nil, err
	}
	res.Seconds = time.Since(t).Seconds()
	res.Images = len(preds)
	for _, p := range preds {
		if p.Err != "" {
			res.Failed++
		}
	}
	if res.PeakKB, err = PeakRSSKB(); err != nil {
		return nil, err
	}
	res.ProcPeakKB = max(res.ProcPeakKB, res.PeakKB)
	return res, nil
}

func runGoChild(ctx context.Context, o *Options, list string, batch int) (*ScoreResult, error) {
	args := append(append([]string(nil), o.Child[1:]...), ChildArgs(ChildOptions{CLIP: o.CLIP, Files: list, Threads: o.Threads, Batch: batch})...)
	cmd := exec.CommandContext(ctx, o.Child[0], args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = o.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scoring child %s: %w", o.Child[0], err)
	}
	var r ScoreResult
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &r); err != nil {
		return nil, fmt.Errorf("scoring child: bad output %.200q: %w", out.String(), err)
	}
	return &r, nil
}

func targets(r *Report) []Target {
	var ts []Target
	add := func(name, goal string, v float64, unit string, met bool) {
		ts = append(ts, Target{Name: name, Goal: goal, Value: v, Unit: unit, Met: met && !math.IsNaN(v)})
	}
	if s := r.Scoring; s != nil {
		add("scoring from JPEG, batch 32", "≥ 1.2× reference", s.Ratio, "×", s.Ratio >= 1.2)
	}
	for _, e := range r.Encoder {
		if e.Batch == 32 || e.Batch == 1 {
			add(fmt.Sprintf("image encoder, batch %d", e.Batch), "≥ 1.2× reference", e.Ratio, "×", e.Ratio >= 1.2)
		}
	}
	// Issue 11: against ONNX Runtime and the best PyTorch 2 figure.
	for _, e := range r.Encoder {
		goal := map[int]float64{1: 1.1, 32: 1.2}[e.Batch]
		if goal == 0 {
			continue
		}
		if rate, _ := bestExtra(e, extraONNX); rate > 0 {
			v := Ratio(e.FusedRate, rate)
			add(fmt.Sprintf("image encoder, batch %d, vs ONNX Runtime", e.Batch), fmt.Sprintf("≥ %.1f×", goal), v, "×", v >= goal)
		}
		if rate, name := bestExtra(e, "PyTorch 2"); rate > 0 {
			v := Ratio(e.FusedRate, rate)
			add(fmt.Sprintf("image encoder, batch %d, vs best PyTorch 2 (%s)", e.Batch, name), fmt.Sprintf("≥ %.1f×", goal), v, "×", v >= goal)
		}
		if e.Batch == 32 {
			add("image encoder, batch 32, share of the matmul floor", "≥ 85 %", 100*e.PctFloor, "%", e.PctFloor >= 0.85)
		}
	}
	if t := r.Text; t != nil {
		add("text path (6 prompts, fwd + bwd to ctx)", "≥ 10× faster", t.Ratio, "×", t.Ratio >= 10)
	}
	if t := r.Training; t != nil {
		add("100 epochs `center` ÷ one encoder pass", "≤ 2.5", t.CenterVsPass, "", t.CenterVsPass <= 2.5)
		add("100 epochs `center` vs reference's 100-epoch regime", "≥ 50× faster", t.CenterVsRef, "×", t.CenterVsRef >= 50)
	}
	if s := r.Scoring; s != nil && s.GoPeakKB > 0 && s.RefPeakKB > 0 {
		v := float64(s.GoPeakKB) / float64(s.RefPeakKB)
		add("peak RSS while scoring", "≤ reference", v, "× reference", v <= 1)
	}
	return ts
}

func notes(r *Report, o *Options) []string {
	n := []string{
		"Go fused = `clip.Model.EnableFused` (cpp/fused.cc): the ViT's residual blocks in one native call (buffers reused, products split over libtorch's threads with BLAS single-threaded; stem and head are the Go model's ops) and the text tower's blocks over the shared prefix forward + hand-written backward in one call each. Go plain = the op-by-op path (`DisableFused`). Both compute the reference's numbers to float32 rounding. Training and scoring use the fused paths.",
		fmt.Sprintf("Both sides run with %d libtorch threads and an OpenBLAS pool of %d (OPENBLAS_NUM_THREADS for Python); the reference is PyTorch %s eager, no TorchScript, torch.no_grad for inference.", o.Threads, o.Threads, r.Machine.PyTorch),
		"Scoring: each side runs in a fresh process that loads the model, scores one warm-up batch, resets its peak RSS (/proc/self/clear_refs) and then scores every file; Go uses `clipagiqa.Predict` (decoding goroutines feeding the model), the reference decodes with PIL in its main loop.",
	}
	if r.Mode == "quick" {
		n = append(n, "Quick mode uses the tiny fixture CLIP (3-layer ViT of width 192, 3-layer text tower of width 64): its targets are indicative only — the issue's targets are defined for ViT-B/16 (full mode), where the encoder and the text path dominate the cost.")
	}
	if r.Machine.LoadAvgStart > 0.5*float64(r.Machine.Cores) || r.Machine.LoadAvgEnd > 0.5*float64(r.Machine.Cores) {
		n = append(n, fmt.Sprintf("The machine was shared (load average %.1f → %.1f on %d cores): absolute numbers are noisy; ratios come from interleaved runs.",
			r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd, r.Machine.Cores))
	}
	return n
}
