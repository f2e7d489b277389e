// Package benchkit is the Go side of `clipagiqa bench`: it runs the Go
// implementation and the PyTorch eager reference (bench/reference.py, driven
// over a pipe) on the same weights, threads and batches, interleaving their
// runs so that load from other processes hits both alike, and writes the
// results as markdown and JSON.
package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/npy"
	"github.com/clipagiqa/clipagiqa/torch"
)

// AGIQA3KTrainImages is the training-set size of AGIQA-3K's paper split, the
// size the training projections use.
const AGIQA3KTrainImages = 2385

// Options configure Run. Zero values pick the defaults noted.
type Options struct {
	Quick   bool   // tiny fixture model, fewer repetitions (< 2 minutes)
	CLIP    string // weights ("": tiny fixture when Quick, else a generated ViT-B/16)
	Out     string // results directory ("": bench/results under Root)
	Threads int    // libtorch (and OpenBLAS) threads on both sides (0: all cores)
	Images  int    // training-set size (0: 2385)
	Score   int    // images scored end to end (0: 256 quick, 96 full)
	Cache   string // generated weights and JPEGs ("": user cache dir/clipagiqa-bench)
	Root    string // repository root holding bench/ and testdata/ ("": ".")
	Python  string // interpreter with torch ("": /usr/bin/python3)
	// Torch2 runs a program where PyTorch 2.x is (the PyTorch 2 columns):
	// "": scripts/trixie-run.sh when its root exists and we are root; "off".
	Torch2 string
	// ONNX is the directory whose node_modules has onnxruntime-node (the ONNX
	// Runtime column): "": <Cache>/onnxruntime; "off".
	ONNX string
	Node string // node binary ("": node on PATH)
	// Child is the command line that runs a child scoring phase in a fresh
	// process (the bench command itself); nil scores in this process.
	Child []string
	Log   io.Writer // progress ("": discarded)
}

func (o *Options) fill() error {
	if o.Root == "" {
		o.Root = "."
	}
	if o.Out == "" {
		o.Out = filepath.Join(o.Root, "bench", "results")
	}
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
	if o.Images <= 0 {
		o.Images = AGIQA3KTrainImages
	}
	if o.Score <= 0 {
		o.Score = 96
		if o.Quick {
			o.Score = 256
		}
	}
	o.Score = min(o.Score, o.Images)
	if o.Python == "" {
		o.Python = "/usr/bin/python3"
	}
	if o.Cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		o.Cache = filepath.Join(dir, "clipagiqa-bench")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.CLIP == "" && o.Quick {
		o.CLIP = filepath.Join(o.Root, "testdata", "clip-agiqa-ref", "tiny_clip_vit_fp16.pt")
	}
	return nil
}

// plan holds the repetition counts of a mode.
type plan struct {
	batches     []int
	warm        int
	iters       map[int]int
	textIters   int // per block; three blocks per side
	refSteps    int
	offSteps    int
	cachedEpoch int // epochs of the cached (center) timing run
	cachedN     int // images of that run (0: all)
	matmulIters int
}

func planFor(quick bool) plan {
	if quick {
		return plan{batches: []int{1, 8, 32}, warm: 1, iters: map[int]int{1: 5, 8: 5, 32: 3},
			textIters: 4, refSteps: 3, offSteps: 8, cachedEpoch: 3, cachedN: 512, matmulIters: 20}
	}
	return plan{batches: []int{1, 8, 32}, warm: 1, iters: map[int]int{1: 3, 8: 2, 32: 2},
		textIters: 3, refSteps: 2, offSteps: 4, cachedEpoch: 3, cachedN: 96, matmulIters: 20}
}

func logf(o *Options, format string, args ...any) {
	fmt.Fprintf(o.Log, "bench: "+format+"\n", args...)
}

// Run performs the whole benchmark and writes <Out>/<mode>.md and .json.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	mode := "full"
	if o.Quick {
		mode = "quick"
	}
	p := planFor(o.Quick)
	rep := &Report{Mode: mode, Started: start.UTC().Format("2006-01-02 15:04 UTC")}
	rep.Machine = machineInfo(o.Threads)
	if err := torch.SetNumThreads(o.Threads); err != nil {
		return nil, err
	}
	torch.SetBLASThreads(o.Threads)
	rep.Machine.DirectBLAS = torch.FusedDirectBLAS()
	rep.Machine.DNNL = torch.FusedDNNL()

	if o.CLIP == "" {
		path, err := EnsureViTB16(o)
		if err != nil {
			return nil, err
		}
		o.CLIP = path
	}
	logf(&o, "generating %d JPEGs (512×512) in %s", o.Images, filepath.Join(o.Cache, "jpegs"))
	set, err := GenerateJPEGs(filepath.Join(o.Cache, "jpegs", fmt.Sprintf("n%d", o.Images)), o.Images, 512, 5)
	if err != nil {
		return nil, err
	}

	logf(&o, "loading %s (Go and reference)", o.CLIP)
	cm, err := clip.Load(o.CLIP, clip.Options{})
	if err != nil {
		return nil, err
	}
	defer cm.Close()
	if ok, err := cm.EnableFused(); err != nil || !ok {
		return nil, fmt.Errorf("fused encoder unavailable (ok=%v): %v", ok, err)
	}
	rep.Machine.BLASThreads = torch.BLASThreads()
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, err
	}
	if err := torch.ManualSeed(1); err != nil {
		return nil, err
	}
	model, err := clipagiqa.New(cm, tok, clipagiqa.DefaultConfig())
	if err != nil {
		return nil, err
	}
	defer model.Close()
	rep.Model = ModelInfo{Path: o.CLIP, Config: cm.Config, FLOPsPerImage: cm.Config.FLOPsPerImage()}

	// The reference as the official code runs it, and the same with idle
	// OpenMP threads sleeping instead of spinning (OMP_WAIT_POLICY=PASSIVE),
	// which helps PyTorch's small ops on few cores.
	script := filepath.Join(o.Root, "bench", "reference.py")
	ctxVals, err := model.Ctx.Float32s()
	if err != nil {
		return nil, err
	}
	load := map[string]any{"op": "load", "clip": o.CLIP, "threads": o.Threads, "token_ids": model.Tokenized,
		"n_ctx": model.NCtx(), "ctx": ctxVals}
	ref, err := StartReference(o.Python, script, refEnv(o.Threads))
	if err != nil {
		return nil, err
	}
	defer ref.Close()
	lr, err := ref.Call(load)
	if err != nil {
		return nil, err
	}
	rep.Machine.PyTorch = lr.Torch
	tuned, err := StartReference(o.Python, script, append(refEnv(o.Threads), "OMP_WAIT_POLICY=PASSIVE"))
	if err != nil {
		return nil, err
	}
	defer tuned.Close()
	if _, err := tuned.Call(load); err != nil {
		return nil, err
	}
	refs := []*Reference{ref, tuned}

	extras, infos, extraNotes, closeExtras := startExtras(&o, cm, load, ref)
	defer closeExtras()
	rep.Extras, rep.ExtraNotes = infos, extraNotes

	if rep.Agreement, err = agreement(cm, ref); err != nil {
		return nil, err
	}
	if rep.TextAgreement, err = textAgreement(model, ref); err != nil {
		return nil, err
	}
	logf(&o, "features agree to %.2g, text features to %.2g (relative L2)", rep.Agreement, rep.TextAgreement)

	// The floor is the machine's, measured with a full OpenBLAS pool (the
	// fused encoder runs with a single-threaded one).
	torch.SetBLASThreads(o.Threads)
	rep.Floor, err = measureFloor(ref, p.matmulIters)
	torch.SetBLASThreads(1)
	if err != nil {
		return nil, err
	}
	rep.Floor.ImgPerSec = rep.Floor.GoGFLOPS * 1e9 / rep.Model.FLOPsPerImage
	logf(&o, "matmul floor: Go %.1f GFLOP/s, reference %.1f GFLOP/s → %.2f img/s", rep.Floor.GoGFLOPS, rep.Floor.RefGFLOPS, rep.Floor.ImgPerSec)

	for i, b := range p.batches {
		if i == len(p.batches)-1 {
			// Once more mid-run: the floor is the best the machine showed.
			torch.SetBLASThreads(o.Threads)
			again, err := measureFloor(ref, p.matmulIters)
			torch.SetBLASThreads(1)
			if err != nil {
				return nil, err
			}
			if again.GoGFLOPS > rep.Floor.GoGFLOPS {
				again.ImgPerSec = again.GoGFLOPS * 1e9 / rep.Model.FLOPsPerImage
				rep.Floor = again
				for j := range rep.Encoder {
					rep.Encoder[j].PctFloor = rep.Encoder[j].FusedRate / rep.Floor.ImgPerSec
				}
			}
		}
		row, err := measureEncoder(cm, refs, extras, b, p.warm, p.iters[b], o.Threads)
		if err != nil {
			return nil, err
		}
		row.PctFloor = row.FusedRate / rep.Floor.ImgPerSec
		rep.Encoder = append(rep.Encoder, row)
		logf(&o, "encoder batch %d: fused %.2f, plain %.2f, reference %.2f (passive %.2f) img/s", b, row.FusedRate, row.PlainRate, row.RefRate, row.TunedRate)
		for _, e := range row.Extra {
			logf(&o, "encoder batch %d: %s %.2f img/s (fused ÷ that %.2f×)", b, e.Name, e.Rate, e.Ratio)
		}
	}

	if rep.Text, err = measureText(model, refs, p.textIters); err != nil {
		return nil, err
	}
	logf(&o, "text path: Go %.4f s, reference %.4f s (passive %.4f s)", rep.Text.Go.Median, rep.Text.Ref.Median, rep.Text.Tuned.Median)
	if err := tuned.Close(); err != nil {
		return nil, err
	}
	tuned = nil
	closeExtras()

	if rep.Training, err = measureTraining(ctx, &o, p, model, ref, set); err != nil {
		return nil, err
	}
	if err := ref.Close(); err != nil {
		return nil, err
	}
	ref = nil

	logf(&o, "scoring %d JPEGs end to end in fresh processes", o.Score)
	if rep.Scoring, err = measureScoring(ctx, &o, set.Paths[:o.Score]); err != nil {
		return nil, err
	}

	rep.Machine.LoadAvgEnd = loadAvg()
	rep.Seconds = time.Since(start).Seconds()
	rep.Targets = targets(rep)
	rep.Notes = notes(rep, &o)
	if _, _, err := rep.Write(o.Out); err != nil {
		return nil, err
	}
	return rep, nil
}

func refEnv(threads int) []string {
	n := strconv.Itoa(threads)
	return []string{"OPENBLAS_NUM_THREADS=" + n, "PYTHONUNBUFFERED=1"}
}

// EnsureViTB16 returns a full-size ViT-B/16 with random weights, generated
// once by testdata/gen/make_clip.py into the cache directory.
func EnsureViTB16(o Options) (string, error) {
	if err := o.fill(); err != nil {
		return "", err
	}
	path := filepath.Join(o.Cache, "vitb16.pt")
	if st, err := os.Stat(path); err == nil && st.Size() > 500<<20 {
		return path, nil
	}
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return "", err
	}
	script := filepath.Join(o.Root, "testdata", "gen", "make_clip.py")
	logf(&o, "generating a random ViT-B/16 with %s (once)", script)
	tmp := path + ".tmp.pt"
	cmd := exec.Command(o.Python, script, "--config", "vitb16", "--out", tmp, "--no-trace")
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("generate ViT-B/16 weights: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	return path, nil
}

func machineInfo(threads int) MachineInfo {
	m := MachineInfo{Cores: runtime.NumCPU(), Threads: threads, Go: runtime.Version(), Libtorch: torch.TorchVersion(), LoadAvgStart: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// loadAvg is the 1-minute load average (0 when unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// agreement encodes the same random pixels on both sides.
func agreement(cm *clip.Model, ref *Reference) (float64, error) {
	return agreementIn(cm, "", extraRef{ref: ref})
}

// agreementIn is agreement for any reference, with the pixels file written
// in dir ("": the temp dir), which the reference must be able to read.
func agreementIn(cm *clip.Model, dir string, ref extraRef) (float64, error) {
	r := int64(cm.Config.ImageResolution)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px := s.Randn(torch.Float32, 2, 3, r, r)
	feat := cm.EncodeImage(s, px)
	if err := s.Err(); err != nil {
		return 0, err
	}
	pv, err := px.Float32s()
	if err != nil {
		return 0, err
	}
	gv, err := feat.Float32s()
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, "clipagiqa-bench-*.npy")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(npy.EncodeFloat32([]int64{2, 3, r, r}, pv)); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	rr, err := ref.call(map[string]any{"op": "features", "pixels": f.Name()})
	if err != nil {
		return 0, err
	}
	if len(rr.Features) != len(gv) {
		return 0, fmt.Errorf("reference returned %d feature values, Go %d", len(rr.Features), len(gv))
	}
	return relErr(gv, rr.Features), nil
}

// textAgreement compares the normalised text features of the prompts (the
// reference got the same context vectors at load).
func textAgreement(m *clipagiqa.Model, ref *Reference) (float64, error) {
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	f := m.TextFeatures(s)
	if err := s.Err(); err != nil {
		return 0, err
	}
	gv, err := f.Float32s()
	if err != nil {
		return 0, err
	}
	rr, err := ref.Call(map[string]any{"op": "text_features"})
	if err != nil {
		return 0, err
	}
	if len(rr.Features) != len(gv) {
		return 0, fmt.Errorf("reference returned %d text feature values, Go %d", len(rr.Features), len(gv))
	}
	return relErr(gv, rr.Features), nil
}

func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		d := float64(got[i]) - w
		num += d * d
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func measureFloor(ref *Reference, iters int) (Floor, error) {
	const n = 768
	fl := Floor{N: n}
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	a, b := s.Randn(torch.Float32, n, n), s.Randn(torch.Float32, n, n)
	flops := 2.0 * n * n * n
	var goRuns, refRuns []float64
	for round := 0; round < 3; round++ {
		for i := 0; i < iters; i++ {
			sub := s.Sub()
			t := time.Now()
			sub.MatMul(a, b)
			d := time.Since(t).Seconds()
			sub.Close()
			if round > 0 {
				goRuns = append(goRuns, d)
			}
		}
		rr, err := ref.Call(map[string]any{"op": "matmul", "n": n, "iters": iters, "warmup": 0})
		if err != nil {
			return fl, err
		}
		if round > 0 {
			refRuns = append(refRuns, rr.Times...)
		}
	}
	if err := s.Err(); err != nil {
		return fl, err
	}
	fl.GoRuns, fl.RefRuns = NewStat(goRuns), NewStat(refRuns)
	// The floor is the best rate the machine showed, not a typical one.
	fl.GoGFLOPS = flops / fl.GoRuns.Min / 1e9
	fl.RefGFLOPS = flops / fl.RefRuns.Min / 1e9
	return fl, nil
}

func timeEncode(cm *clip.Model, px *torch.Tensor) (float64, error) {
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	t := time.Now()
	cm.EncodeImage(s, px)
	d := time.Since(t).Seconds()
	return d, s.Err()
}

// measureEncoder times the image encoder at one batch size: Go fused, Go
// plain and each reference, interleaved round by round.
func measureEncoder(cm *clip.Model, refs []*Reference, extras []extraRef, batch, warm, iters, blasThreads int) (EncoderRow, error) {
	row := EncoderRow{Batch: batch}
	r := int64(cm.Config.ImageResolution)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px := s.Randn(torch.Float32, int64(batch), 3, r, r)
	if err := s.Err(); err != nil {
		return row, err
	}
	defer func() { _, _ = cm.EnableFused() }()
	var fused, plain []float64
	refT := make([][]float64, len(refs))
	extraT := make([][]float64, len(extras))
	// One untimed call each first: torch.compile compiles for a new batch
	// size on its first call.
	for _, e := range extras {
		if _, err := e.call(map[string]any{"op": "encoder", "batch": batch, "iters": 0, "warmup": 1}); err != nil {
			return row, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	for round := 0; round < warm+iters; round++ {
		if _, err := cm.EnableFused(); err != nil {
			return row, err
		}
		df, err := timeEncode(cm, px)
		if err != nil {
			return row, err
		}
		// The plain path gets an OpenBLAS pool of its own, as without fusion.
		cm.DisableFused()
		torch.SetBLASThreads(blasThreads)
		dp, err := timeEncode(cm, px)
		torch.SetBLASThreads(1)
		if err != nil {
			return row, err
		}
		if round >= warm {
			fused, plain = append(fused, df), append(plain, dp)
		}
		for i, ref := range refs {
			rr, err := ref.Call(map[string]any{"op": "encoder", "batch": batch, "iters": 1, "warmup": 0})
			if err != nil {
				return row, err
			}
			if round >= warm {
				refT[i] = append(refT[i], rr.Times...)
			}
		}
		for i, e := range extras {
			rr, err := e.call(map[string]any{"op": "encoder", "batch": batch, "iters": 1, "warmup": 0})
			if err != nil {
				return row, fmt.Errorf("%s: %w", e.name, err)
			}
			if round >= warm {
				extraT[i] = append(extraT[i], rr.Times...)
			}
		}
	}
	row.Fused, row.Plain, row.Ref = NewStat(fused), NewStat(plain), NewStat(refT[0])
	b := float64(batch)
	row.FusedRate, row.PlainRate, row.RefRate = row.Fused.Rate(b), row.Plain.Rate(b), row.Ref.Rate(b)
	row.Ratio = Ratio(row.FusedRate, row.RefRate)
	row.PlainRatio = Ratio(row.PlainRate, row.RefRate)
	if len(refs) > 1 {
		row.Tuned = NewStat(refT[1])
		row.TunedRate = row.Tuned.Rate(b)
		row.TunedRatio = Ratio(row.FusedRate, row.TunedRate)
	}
	row.Extra = extraRates(extras, extraT, batch, row.FusedRate)
	return row, nil
}

// measureText times the text path (see textStep) on both sides.
func measureText(m *clipagiqa.Model, refs []*Reference, iters int) (*TextRow, error) {
	// Blocks of iterations per side, alternating, so that each side runs warm.
	var goT []float64
	refT := make([][]float64, len(refs))
	for block := 0; block < 4; block++ {
		for i := 0; i < iters; i++ {
			d, err := textStep(m)
			if err != nil {
				return nil, err
			}
			if block > 0 {
				goT = append(goT, d)
			}
		}
		for k, ref := range refs {
			n, warm := iters, 0
			if block == 0 {
				n, warm = 1, 1
			}
			rr, err := ref.Call(map[string]any{"op": "text", "iters": n, "warmup": warm})
			if err != nil {
				return nil, err
			}
			if block > 0 {
				refT[k] = append(refT[k], rr.Times...)
			}
		}
	}
	row := &TextRow{Go: NewStat(goT), Ref: NewStat(refT[0])}
	row.Ratio = Ratio(row.Ref.Median, row.Go.Median)
	if len(refs) > 1 {
		row.Tuned = NewStat(refT[1])
		row.TunedRatio = Ratio(row.Tuned.Median, row.Go.Median)
	}
	return row, nil
}

// textStep times the K prompts' features, forward and backward to the
// context (loss Σ f², as the reference uses).
func textStep(m *clipagiqa.Model) (float64, error) {
	s := torch.NewScope()
	defer s.Close()
	t := time.Now()
	f := m.TextFeatures(s)
	loss := s.Sum(s.Square(f), false)
	if err := s.Err(); err != nil {
		return 0, err
	}
	if err := loss.Backward(); err != nil {
		return 0, err
	}
	d := time.Since(t).Seconds()
	for _, p := range m.Params() {
		if err := p.ZeroGrad(); err != nil {
			return 0, err
		}
	}
	return d, nil
}

func dataset(set *JPEGSet, n int) *data.Dataset {
	ds := &data.Dataset{Name: "bench-synthetic", Root: set.Dir}
	for i := 0; i < n; i++ {
		ds.Samples = append(ds.Samples, data.Sample{Name: filepath.Base(set.Paths[i]), Path: set.Paths[i], MOS: set.MOS[i]})
	}
	return ds
}

// trainSteps runs Train and records its step times; maxSteps > 0 cancels
// the run after that many steps.
func trainSteps(ctx context.Context, m *clipagiqa.Model, ds *data.Dataset, mode string, epochs, maxSteps int) (*trainRun, error) {
	cfg := clipagiqa.DefaultTrainConfig()
	cfg.Epochs = epochs
	cfg.FeatureCache = mode
	cfg.Seed = 7
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := &trainRun{}
	var last time.Duration
	n := 0
	cb := clipagiqa.Callbacks{
		OnStep: func(si clipagiqa.StepInfo) {
			if si.Step > 1 {
				run.steps = append(run.steps, (si.Elapsed - last).Seconds())
			}
			last = si.Elapsed
			n++
			if maxSteps > 0 && n >= maxSteps {
				cancel()
			}
		},
		OnEpoch: func(e clipagiqa.EpochReport) {
			if e.Steps > 0 {
				run.stepPerEpoch = append(run.stepPerEpoch, e.Seconds/float64(e.Steps))
			}
		},
	}
	t := time.Now()
	res, err := clipagiqa.Train(ctx, m, clipagiqa.Datasets{Train: ds}, cfg, cb)
	run.wall = time.Since(t).Seconds()
	if err != nil && !(maxSteps > 0 && errors.Is(err, context.Canceled) && res != nil && res.Interrupted) {
		return nil, fmt.Errorf("train (%s): %w", mode, err)
	}
	run.res = res
	return run, nil
}

// trainRun is what trainSteps observed.
type trainRun struct {
	steps        []float64 // step-to-step times within epochs
	stepPerEpoch []float64 // each epoch's seconds per step (its first step included)
	wall         float64
	res          *clipagiqa.TrainResult
}

func measureTraining(ctx context.Context, o *Options, p plan, m *clipagiqa.Model, ref *Reference, set *JPEGSet) (*TrainingRow, error) {
	const batch = 32
	tr := &TrainingRow{Images: o.Images, StepsPerEpoch: o.Images / batch, Epochs: 100}
	all := dataset(set, o.Images)

	// `off`: the encoder and a fresh augmentation in every step.
	logf(o, "training, off: %d Go steps", p.offSteps)
	off, err := trainSteps(ctx, m, all, clipagiqa.CacheOff, 1, p.offSteps)
	if err != nil {
		return nil, err
	}
	tr.OffStepGo = NewStat(off.steps)
	tr.OffEpochGo = mean(off.steps) * float64(tr.StepsPerEpoch)
	tr.Off100Go = tr.OffEpochGo * 100

	logf(o, "training, off: %d reference steps", p.refSteps)
	files, mos := set.Paths[:o.Images], set.MOS[:o.Images]
	rr, err := ref.Call(map[string]any{"op": "train_step", "files": files, "mos": mos, "batch": batch, "steps": p.refSteps, "warmup": 1})
	if err != nil {
		return nil, err
	}
	tr.OffStepRef = NewStat(rr.Times)
	tr.OffEpochRef = mean(rr.Times) * float64(tr.StepsPerEpoch)
	tr.Ref100 = tr.OffEpochRef * 100
	tr.OffEpochRatio = Ratio(tr.OffEpochRef, tr.OffEpochGo)

	// `center`: one encoder pass, then cached steps.
	n := min(p.cachedN, o.Images)
	logf(o, "training, center: %d epochs on %d images", p.cachedEpoch, n)
	run, err := trainSteps(ctx, m, dataset(set, n), clipagiqa.CacheCenter, p.cachedEpoch, 0)
	if err != nil {
		return nil, err
	}
	tr.CachedStepGo = NewStat(run.stepPerEpoch)
	logf(o, "training, center: cache build %.1f s, seconds per step by epoch %.4f, step-to-step median %.4f",
		run.wall-sum(run.stepPerEpoch)*float64(n/batch), run.stepPerEpoch, NewStat(run.steps).Median)
	enc := 0.0
	if c := run.res.Cache; c != nil {
		enc = c.EncodeSeconds + c.HashSeconds
	}
	tr.EncodePassGo = enc / float64(n) * float64(o.Images)
	tr.CenterMeasured = &MeasuredRun{Images: n, Epochs: p.cachedEpoch, Seconds: run.wall, Encode: enc}
	cachedTraining := mean(run.stepPerEpoch) * float64(tr.StepsPerEpoch) * 100
	tr.Center100Go = tr.EncodePassGo + cachedTraining
	tr.Views100Go = 8*tr.EncodePassGo + cachedTraining
	tr.CenterVsPass = Ratio(tr.Center100Go, tr.EncodePassGo)
	tr.CenterVsRef = Ratio(tr.Ref100, tr.Center100Go)
	tr.ViewsVsRef = Ratio(tr.Ref100, tr.Views100Go)
	tr.Method = trainingMethod(o, p, n)
	return tr, nil
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t / float64(len(v))
}

func trainingMethod(o *Options, p plan, n int) string {
	return fmt.Sprintf("Method: Go numbers come from `clipagiqa.Train` itself (paper schedule, batch 32, fused encoder). "+
		"`off`: a real run on all %d images, cancelled after %d steps; per epoch = mean step-to-step time × steps per epoch. "+
		"`center`: a real run of %d epochs on %d images; one encoder pass = its cache build (hash + decode + centre transform + encode) "+
		"per image × %d; 100 epochs = that pass + 100 × steps per epoch × the mean cached step (epoch seconds ÷ steps). "+
		"`views=8` = 8 passes (augmented views cost the same encoder work) + the same cached steps. "+
		"Reference: bench/reference.py's `train_step` (PIL decode + RandomResizedCrop + flip, eager encoder, 6 prompts × 77 tokens "+
		"forward + backward, regressor, SGD), %d steps after one warm-up; 100 epochs = mean step × steps per epoch × 100. "+
		"Projections assume the measured step times hold for the whole run.",
		o.Images, p.offSteps, p.cachedEpoch, n, o.Images, p.refSteps)
}

// ScoreResult is what a scoring child reports.
type ScoreResult struct {
	Images     int     `json:"images"`
	Failed     int     `json:"failed"`
	Seconds    float64 `json:"seconds"`
	LoadS      float64 `json:"load_s"`
	PeakKB     int64   `json:"peak_kb"`
	ProcPeakKB int64   `json:"proc_peak_kb"`
}

func measureScoring(ctx context.Context, o *Options, paths []string) (*ScoringRow, error) {
	const batch = 32
	row := &ScoringRow{Images: len(paths), Batch: batch}
	list, err := os.CreateTemp("", "clipagiqa-bench-files-*.txt")
	if err != nil {
		return nil, err
	}
	defer os.Remove(list.Name())
	if _, err := list.WriteString(strings.Join(paths, "\n") + "\n"); err != nil {
		list.Close()
		return nil, err
	}
	if err := list.Close(); err != nil {
		return nil, err
	}
	var goRes *ScoreResult
	if len(o.Child) > 0 {
		goRes, err = runGoChild(ctx, o, list.Name(), batch)
	} else {
		goRes, err = ScoreFiles(ctx, ChildOptions{CLIP: o.CLIP, Files: list.Name(), Threads: o.Threads, Batch: batch})
	}
	if err != nil {
		return nil, err
	}
	refRes, err := refScore(o, paths, batch)
	if err != nil {
		return nil, err
	}
	row.GoRate = float64(goRes.Images) / goRes.Seconds
	row.RefRate = float64(refRes.Images) / refRes.Seconds
	row.Ratio = Ratio(row.GoRate, row.RefRate)
	row.GoPeakKB, row.RefPeakKB = goRes.PeakKB, refRes.PeakKB
	row.GoProcPeakKB, row.RefProcPeakKB = goRes.ProcPeakKB, refRes.ProcPeakKB
	row.GoLoadS, row.RefLoadS = goRes.LoadS, refRes.LoadS
	if goRes.Failed > 0 {
		return nil, fmt.Errorf("scoring: %d images failed in Go", goRes.Failed)
	}
	return row, nil
}

// refScore scores in a fresh reference process: load, warm-up batch, then
// the timed pass; the peak RSS is reset after the warm-up.
func refScore(o *Options, paths []string, batch int) (*ScoreResult, error) {
	ref, err := StartReference(o.Python, filepath.Join(o.Root, "bench", "reference.py"), refEnv(o.Threads))
	if err != nil {
		return nil, err
	}
	defer ref.Close()
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, err
	}
	ids, err := promptIDs(tok)
	if err != nil {
		return nil, err
	}
	lr, err := ref.Call(map[string]any{"op": "load", "clip": o.CLIP, "threads": o.Threads, "token_ids": ids, "n_ctx": 16})
	if err != nil {
		return nil, err
	}
	res := &ScoreResult{LoadS: lr.LoadS, ProcPeakKB: lr.HWMKB}
	if _, err := ref.Call(map[string]any{"op": "score", "files": paths[:min(batch, len(paths))], "batch": batch}); err != nil {
		return nil, err
	}
	rr, err := ref.Call(map[string]any{"op": "score", "files": paths, "batch": batch})
	if err != nil {
		return nil, err
	}
	res.Images = rr.Images
	res.Seconds = rr.Times[0]
	res.PeakKB = rr.HWMKB
	res.ProcPeakKB = max(res.ProcPeakKB, rr.HWMKB)
	return res, nil
}

// promptIDs are the token rows of the default CLIP-AGIQA prompts.
func promptIDs(tok clipagiqa.Tokenizer) ([][]int64, error) {
	cfg := clipagiqa.DefaultConfig()
	prefix := strings.TrimSpace(strings.Repeat("X ", cfg.NCtx))
	var rows [][]int64
	for _, w := range cfg.Categories {
		ids := tok.Encode(prefix + " " + w + ".")
		if len(ids)+2 > 77 {
			return nil, fmt.Errorf("prompt for %q too long", w)
		}
		row := make([]int64, 77)
		row[0] = 49406
		for i, id := range ids {
			row[1+i] = int64(id)
		}
		row[1+len(ids)] = 49407
		rows = append(rows, row)
	}
	return rows, nil
}
