package benchkit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/internal/npy"
	"github.com/clipagiqa/clipagiqa/torch"
)

// The IP-IQA benchmark: full-size RN50 at 512×512 with random weights, the
// Go model (in a child process, so its peak RSS is its own) against
// bench/ipiqa_reference.py (PyTorch eager, the official computation), both
// driven over the same line protocol and interleaved round by round.

// IPIQAResolution is the official input side (ipiqa.yaml input_resolution).
const IPIQAResolution = 512

// AGIQA3KImages is AGIQA-3K's size; the official split trains on the
// images of 80 % of its 300 prompts (AGIQA3KTrainImages) and tests on the rest.
const AGIQA3KImages = 2982

// IPIQAOptions configure RunIPIQA. Zero values pick the defaults noted.
type IPIQAOptions struct {
	Out     string // results directory ("": bench/results under Root)
	Threads int    // libtorch and OpenBLAS threads on both sides (0: all cores)
	Root    string // repository root holding bench/ ("": ".")
	Python  string // interpreter with torch ("": /usr/bin/python3)
	Cache   string // where the shared weights file is written for a moment ("": user cache dir/clipagiqa-bench)
	// Child is the command line that serves the Go side in a fresh process
	// (the bench command with ChildArgsIPIQA); required.
	Child []string
	Log   io.Writer // progress ("": discarded)
	// ScoreBatches and TrainBatches are the measured batch sizes (nil: 1,
	// 32 and 8, 32); Rounds is the timed rounds per measurement after the
	// warm-up round of each (0: 6 for scoring at batch ≤ 8, else 1).
	ScoreBatches, TrainBatches []int
	Rounds                     int
	// ProfileBatch is the batch of the closing profile, where each side
	// times the parts of a scoring call and of a training step (0: 2;
	// negative: no profile).
	ProfileBatch int
	// HostCacheMiB is the Go side's torch.HostCache idle cap (0: none
	// beyond the cache's peak rule, as the CLI; negative: libtorch's own
	// allocator). With the cache on, a third process measures Go on
	// libtorch's allocator too, so that the allocator's share of the ratio shows.
	HostCacheMiB int64
	// NoSolo leaves a training batch that the shared processes cannot hold
	// unmeasured; by default it is measured at the end with each side alone
	// in a fresh process (measureSolo).
	NoSolo bool
}

func (o *IPIQAOptions) fill() error {
	if o.Root == "" {
		o.Root = "."
	}
	if o.Out == "" {
		o.Out = filepath.Join(o.Root, "bench", "results")
	}
	if o.Threads <= 0 {
		o.Threads = runtime.NumCPU()
	}
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
	if o.ScoreBatches == nil {
		o.ScoreBatches = []int{1, 32}
	}
	if o.TrainBatches == nil {
		o.TrainBatches = []int{8, 32}
	}
	if len(o.Child) == 0 {
		return fmt.Errorf("ipiqa bench: no command for the Go child process")
	}
	return nil
}

// ChildArgsIPIQA are the flags that make the bench command serve the Go
// side of the IP-IQA benchmark on stdin/stdout (ServeIPIQA).
func ChildArgsIPIQA(threads int) []string {
	return []string{"--child", "ipiqa", "--threads", strconv.Itoa(threads)}
}

// IPIQAReport is what one IP-IQA benchmark run measured.
type IPIQAReport struct {
	Started  string      `json:"started"`
	Seconds  float64     `json:"seconds"`
	Machine  MachineInfo `json:"machine"`
	Command  string      `json:"command"`
	Params   int64       `json:"params"`
	Trained  int64       `json:"trainable_params"`
	FLOPs    IPIQAFLOPs  `json:"flops"`
	ScoreErr float64     `json:"scores_rel_err"` // Go vs reference, eval mode, same weights and pixels
	// GoHostCacheMiB is the Go side's host cache idle cap (0: none beyond
	// the peak rule; -1: off).
	GoHostCacheMiB int64         `json:"go_host_cache_mib"`
	Rows           []IPIQARow    `json:"rows"`
	Epochs         *Projection   `json:"projection,omitempty"`
	Profile        *IPIQAProfile `json:"profile,omitempty"`
	Targets        []Target      `json:"targets"`
	Notes          []string      `json:"notes"`
}

// IPIQARow is one measurement (scoring or a training step at one batch).
type IPIQARow struct {
	What    string  `json:"what"` // "score" or "train_step"
	Batch   int     `json:"batch"`
	Go      Stat    `json:"go"`
	Ref     Stat    `json:"reference"`
	GoRate  float64 `json:"go_img_s"`
	RefRate float64 `json:"reference_img_s"`
	Ratio   float64 `json:"ratio"` // reference time ÷ Go time
	// Process CPU seconds (user + system, all threads) of the same calls:
	// less sensitive than wall time to other load on a shared machine.
	GoCPU     Stat    `json:"go_cpu"`
	RefCPU    Stat    `json:"reference_cpu"`
	CPURatio  float64 `json:"cpu_ratio"` // reference CPU ÷ Go CPU
	GoPeakKB  int64   `json:"go_peak_kb"`
	RefPeakKB int64   `json:"reference_peak_kb"`
	GoIdleKB  int64   `json:"go_idle_kb"` // RSS before the measurement
	RefIdleKB int64   `json:"reference_idle_kb"`
	StepGFLOP float64 `json:"gflop"`      // one call's FLOPs (official computation)
	GoGFLOPS  float64 `json:"go_gflops"`  // StepGFLOP ÷ Go median
	RefGFLOPS float64 `json:"ref_gflops"` // StepGFLOP ÷ reference median
	Skipped   string  `json:"skipped,omitempty"`
	// Solo: each side ran alone in a fresh process, one after the other
	// (the shared processes could not hold the batch together).
	Solo       bool    `json:"solo,omitempty"`
	LoadAvgEnd float64 `json:"loadavg_end"`
	// tooBig: skipped by the memory guard (a solo measurement may fit).
	tooBig bool
	// LibtorchAlloc is the same measurement of Go on libtorch's own CPU
	// allocator (host cache off) and libgomp's default wait policy, when
	// the main Go side has the cache.
	LibtorchAlloc *AllocRow `json:"go_libtorch_allocator,omitempty"`
}

// AllocRow is one measurement of a further Go process (another allocator).
type AllocRow struct {
	Go       Stat    `json:"go"`
	GoCPU    Stat    `json:"go_cpu"`
	Ratio    float64 `json:"ratio"`     // reference time ÷ this process's time
	CPURatio float64 `json:"cpu_ratio"` // reference CPU ÷ this process's CPU
	PeakKB   int64   `json:"peak_kb"`
	IdleKB   int64   `json:"idle_kb"`
}

// IPIQAProfile is where one scoring call and one training step spend
// their time on each side (seconds by part, one call each).
type IPIQAProfile struct {
	Batch int                `json:"batch"`
	Go    map[string]float64 `json:"go"`
	Ref   map[string]float64 `json:"reference"`
}

// IPIQAFLOPs counts one image's forward pass, multiply-adds × 2.
type IPIQAFLOPs struct {
	Visual      float64 `json:"visual"`       // ResNet at 512 + CLIP attnpool
	Fusion      float64 `json:"fusion"`       // txt_attnpool + head
	Text77      float64 `json:"text_77"`      // text tower over 77 positions (official)
	TextPrompts float64 `json:"text_prompts"` // over the benchmark prompts' own lengths (Go's shortcut)
	// TrainStep is one image's share of a training step, official
	// computation: 3 × (visual + fusion) (backward ≈ 2 × forward) + 2 ×
	// text (the frozen tower is back-propagated to wte/txt_pos, inputs only).
	TrainStep float64 `json:"train_step_per_image"`
}

// Projection is the paper's 100-epoch AGIQA-3K run on this CPU.
type Projection struct {
	TrainImages, TestImages, StepsPerEpoch, Epochs int
	StepBatch                                      int     // the measured training batch the step time comes from
	GoHours, RefHours                              float64 // training steps + one evaluation of the test part per epoch
	GoTrainHours, RefTrainHours                    float64 // training steps only
	// The same from CPU seconds ÷ threads: what an otherwise idle machine
	// would take if the threads kept busy (an estimate).
	GoCPUHours, RefCPUHours float64
	PFLOP                   float64 // 100 epochs of steps + evaluations, official computation
}

// ipiqaPrompts are distinct AGIQA-3K-like prompts (4 to 18 words), one per
// image: the worst case for Go's once-per-batch prompt features, and the
// common one in a shuffled AGIQA-3K batch (300 prompts, ~10 images each).
func ipiqaPrompts(n int) []string {
	subjects := []string{"a statue of a man", "a tray of sushi", "a lighthouse", "an old fox", "a red bicycle",
		"a castle on a hill", "a cat", "two robots", "a city street", "a bowl of ramen", "an astronaut", "a waterfall"}
	extras := []string{"at sunset", "in the rain", "anime style", "oil painting", "highly detailed", "baroque",
		"under a starry sky", "photorealistic", "in a small garden buzzing with bees", "trending on artstation",
		"watercolor", "cinematic lighting", "by a lake", "in winter"}
	out := make([]string, n)
	for i := range out {
		p := subjects[i%len(subjects)]
		for j := 0; j < 1+i%4; j++ {
			p += ", " + extras[(i*3+j*5)%len(extras)]
		}
		out[i] = fmt.Sprintf("%s, number %d", p, i)
	}
	return out
}

// RunIPIQA performs the IP-IQA benchmark and writes <Out>/ipiqa.md and .json.
func RunIPIQA(ctx context.Context, o IPIQAOptions) (*IPIQAReport, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &IPIQAReport{Started: start.UTC().Format("2006-01-02 15:04 UTC"), Machine: machineInfo(o.Threads),
		Command: "bin/clipagiqa bench --only ipiqa --out " + o.Out}
	rep.Machine.BLASThreads = o.Threads
	maxBatch := 0
	for _, b := range append(append([]int(nil), o.ScoreBatches...), o.TrainBatches...) {
		maxBatch = max(maxBatch, b)
	}
	prompts := ipiqaPrompts(max(maxBatch, 2))
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, err
	}
	ids, err := tok.Tokenize(prompts, 77, true)
	if err != nil {
		return nil, err
	}

	logf2(&o, "starting the PyTorch reference and the Go child (RN50 at %d, random weights, %d threads)", IPIQAResolution, o.Threads)
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return nil, err
	}
	state := filepath.Join(o.Cache, fmt.Sprintf("ipiqa-rn50-%d.pth", os.Getpid()))
	defer os.Remove(state)
	rep.GoHostCacheMiB = max(o.HostCacheMiB, -1)
	// The sides' processes, loaded: the reference (seeded, so a later one
	// makes the same weights; the first writes them for the Go sides), Go as
	// the CLI runs, and Go on libtorch's allocator and libgomp's default
	// wait policy (the CLI sets it passive unless told; cmd/clipagiqa/omp.go).
	startRef := func(stateOut string) (*Reference, *RefReply, error) {
		r, err := StartReference(o.Python, filepath.Join(o.Root, "bench", "ipiqa_reference.py"), refEnv(o.Threads))
		if err != nil {
			return nil, nil, err
		}
		req := map[string]any{"op": "load", "threads": o.Threads, "token_ids": ids}
		if stateOut != "" {
			req["state_out"] = stateOut
		}
		lr, err := r.Call(req)
		if err != nil {
			r.Close()
			return nil, nil, err
		}
		return r, lr, nil
	}
	startGo := func(plain bool) (*Reference, *RefReply, error) {
		env, cache := refEnv(o.Threads), rep.GoHostCacheMiB
		if plain {
			env, cache = append(env, "CLIPAGIQA_OMP_DEFAULT=1"), -1
		}
		r, err := StartReferenceCommand(append(append([]string(nil), o.Child...), ChildArgsIPIQA(o.Threads)...), env)
		if err != nil {
			return nil, nil, err
		}
		gl, err := r.Call(map[string]any{"op": "load", "threads": o.Threads, "prompts": prompts, "state": state, "host_cache_mib": cache})
		if err != nil {
			r.Close()
			return nil, nil, err
		}
		return r, gl, nil
	}
	ref, lr, err := startRef(state)
	if err != nil {
		return nil, err
	}
	defer ref.Close()
	rep.Machine.PyTorch = lr.Torch
	goc, gl, err := startGo(false)
	if err != nil {
		return nil, err
	}
	defer goc.Close()
	var plain *Reference
	if rep.GoHostCacheMiB >= 0 {
		if plain, _, err = startGo(true); err != nil {
			return nil, err
		}
		defer plain.Close()
	}
	var info struct {
		Params, Trainable int64
		EOTs              []int64
	}
	if err := json.Unmarshal(gl.Config, &info); err != nil {
		return nil, fmt.Errorf("go child load reply: %w", err)
	}
	rep.Params, rep.Trained = info.Params, info.Trainable
	rep.FLOPs = ipiqaFLOPs(info.EOTs)

	if rep.ScoreErr, err = ipiqaAgreement(&o, goc, ref); err != nil {
		return nil, err
	}
	logf2(&o, "eval-mode scores of the same pixels and weights agree to %.2g (relative L2)", rep.ScoreErr)

	// Every measurement starts with a warm-up round at its own batch (the
	// first training one also creates the AdamW state on each side); the
	// memory a training batch needs is projected from the largest one
	// measured before it.
	var grown *IPIQARow
	// A row that fails (a side killed, e.g. out of memory) ends the
	// measurements, but the rows before it are still written.
	var failed error
	for _, what := range []string{"score", "train_step"} {
		batches := o.ScoreBatches
		if what == "train_step" {
			batches = o.TrainBatches
		}
		for _, b := range batches {
			if failed != nil {
				break
			}
			row, err := measureIPIQA(&o, goc, ref, plain, len(rep.Rows), what, b, grown, rep.FLOPs)
			if err != nil {
				failed = fmt.Errorf("%s batch %d: %w", what, b, err)
				row = IPIQARow{What: what, Batch: b, Skipped: "failed: " + err.Error()}
			}
			if row.Skipped != "" {
				logf2(&o, "%s batch %d skipped: %s", what, b, row.Skipped)
			} else {
				logf2(&o, "%s batch %d: Go %.3f s, reference %.3f s (ref ÷ Go %.2f×); peak RSS Go %s, reference %s",
					what, b, row.Go.Median, row.Ref.Median, row.Ratio, mib(row.GoPeakKB), mib(row.RefPeakKB))
				if a := row.LibtorchAlloc; a != nil {
					logf2(&o, "%s batch %d, Go on libtorch's allocator: %.3f s (ref ÷ Go %.2f×), peak RSS %s", what, b, a.Go.Median, a.Ratio, mib(a.PeakKB))
				}
			}
			rep.Rows = append(rep.Rows, row)
			if what == "train_step" && row.Skipped == "" {
				grown = &rep.Rows[len(rep.Rows)-1]
			}
		}
	}
	profileErr := ""
	if o.ProfileBatch >= 0 && failed == nil {
		b := o.ProfileBatch
		if b == 0 {
			b = 2
		}
		logf2(&o, "profile at batch %d", b)
		// The measurements are done: a failed profile is noted, not fatal.
		pr := &IPIQAProfile{Batch: b}
		for i, side := range []*Reference{goc, ref} {
			rr, err := side.Call(map[string]any{"op": "profile", "batch": b})
			if err != nil {
				logf2(&o, "profile: %v", err)
				profileErr = fmt.Sprintf("The profile failed: %v", err)
				pr = nil
				break
			}
			if i == 0 {
				pr.Go = rr.Phases
			} else {
				pr.Ref = rr.Phases
			}
		}
		rep.Profile = pr
	}
	if !o.NoSolo && failed == nil {
		if err := measureSoloRows(&o, rep, []*Reference{goc, ref, plain}, startGo, startRef); err != nil {
			failed = err
		}
	}
	rep.Epochs = project(rep)
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.Seconds = time.Since(start).Seconds()
	rep.Targets = ipiqaTargets(rep)
	rep.Notes = ipiqaNotes(rep)
	if profileErr != "" {
		rep.Notes = append(rep.Notes, profileErr)
	}
	if failed != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("The run stopped at a failed row (%v); the rows before it are complete.", failed))
	}
	if err := rep.Write(o.Out); err != nil {
		return nil, err
	}
	if failed != nil {
		return rep, fmt.Errorf("bench ipiqa: %w (the rows before it are in %s)", failed, o.Out)
	}
	return rep, nil
}

func logf2(o *IPIQAOptions, format string, args ...any) {
	fmt.Fprintf(o.Log, "bench ipiqa: "+format+"\n", args...)
}

// memoryGuard refuses a training batch whose projected extra memory does
// not fit in what the machine has available now: on a shared machine an
// out-of-memory kill would hit other people's processes. The sides run one
// at a time, but a Go side on its host cache keeps up to its own growth as
// idle blocks between calls (at most cacheCapKB when > 0; cacheCapKB < 0:
// no cache), so the projection is that retained memory (the Go side's
// growth, scaled) plus stepGrowthKB.
func memoryGuard(measured *IPIQARow, batch int, cacheCapKB int64) string {
	scale := float64(batch) / float64(measured.Batch) * 1.15
	goGrowth := float64(measured.GoPeakKB-measured.GoIdleKB) * scale
	growth := stepGrowthKB(measured, batch)
	retained := 0.0
	switch {
	case cacheCapKB == 0:
		retained = goGrowth
	case cacheCapKB > 0:
		retained = min(goGrowth, float64(cacheCapKB))
	}
	need := growth + retained
	avail, err := memAvailableKB()
	if err != nil || need <= float64(avail) {
		return ""
	}
	return fmt.Sprintf("a step at batch %d needs about %.1f GiB more than the idle processes (batch %d grew by %.1f GiB on the largest side, scaled, +15 %%, "+
		"plus %.1f GiB that the Go side's host cache keeps between calls); the machine has %.1f GiB available",
		batch, need/(1<<20), measured.Batch, growth/scale/(1<<20), retained/(1<<20), float64(avail)/(1<<20))
}

func memAvailableKB() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "MemAvailable" {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}

// measureIPIQA times one measurement (the index-th row): the Go sides'
// host caches are emptied, every side runs a warm-up round at the batch and
// then has its peak RSS counter reset, and the timed rounds follow (o.Rounds;
// 0: 6 for scoring at batch ≤ 8, else 1), the sides (Go, reference and,
// unless nil, Go on libtorch's allocator) rotating which goes first. So each
// row times steady-state calls, and each peak is that of the row's own work.
// A training batch is skipped when the memory that grown (a measured
// training row, or nil) projects for it is not available.
func measureIPIQA(o *IPIQAOptions, goc, ref, plain *Reference, index int, what string, batch int, grown *IPIQARow, fl IPIQAFLOPs) (IPIQARow, error) {
	row := IPIQARow{What: what, Batch: batch, Go: NewStat(nil), Ref: NewStat(nil), GoCPU: NewStat(nil), RefCPU: NewStat(nil)}
	rounds := o.Rounds
	if rounds <= 0 {
		rounds = 1
		if what == "score" && batch <= 8 {
			rounds = 6 // sub-second calls: more samples for a steadier median
		}
	}
	if what == "train_step" && grown != nil {
		capKB := o.HostCacheMiB * 1024 // 0: no cap, negative: no cache
		if row.Skipped = memoryGuard(grown, batch, capKB); row.Skipped != "" {
			row.tooBig = true
			return row, nil
		}
	}
	sides := []*Reference{goc, ref}
	if plain != nil {
		sides = append(sides, plain)
	}
	for i, r := range sides {
		if i != 1 { // a Go side
			if _, err := r.Call(map[string]any{"op": "empty_cache"}); err != nil {
				return row, err
			}
		}
		if _, err := r.Call(map[string]any{"op": what, "batch": batch, "iters": 0, "warmup": 1}); err != nil {
			return row, err
		}
	}
	n := len(sides)
	idle := make([]int64, n)
	for i, r := range sides {
		rr, err := r.Call(map[string]any{"op": "reset_hwm"})
		if err != nil {
			return row, err
		}
		if !rr.HWMReset {
			return row, fmt.Errorf("%s batch %d: cannot reset the peak RSS counter (/proc/self/clear_refs)", what, batch)
		}
		idle[i] = rr.RSSKB
	}
	times, cpu := make([][]float64, n), make([][]float64, n)
	peaks := make([]int64, n)
	// Who goes first changes between rounds and, for single-round rows,
	// between measurements, so that a load that drifts during the run does
	// not always fall on the same side; so does who goes before whom (a
	// process's idle OpenMP workers may still spin as the next one starts).
	for round := range rounds {
		for k := range sides {
			i := sideOrder(n, round+index, k)
			rr, err := sides[i].Call(map[string]any{"op": what, "batch": batch, "iters": 1, "warmup": 0})
			if err != nil {
				return row, err
			}
			times[i] = append(times[i], rr.Times...)
			cpu[i] = append(cpu[i], rr.CPU...)
			peaks[i] = max(peaks[i], rr.HWMKB)
		}
	}
	row.fill(times, cpu, peaks, idle, fl)
	return row, nil
}

// fill sets row's statistics from each side's timed calls (Go, reference
// and, when given, Go on libtorch's allocator), peaks and idle RSS.
func (row *IPIQARow) fill(times, cpu [][]float64, peaks, idle []int64, fl IPIQAFLOPs) {
	row.Go, row.Ref = NewStat(times[0]), NewStat(times[1])
	row.GoCPU, row.RefCPU = NewStat(cpu[0]), NewStat(cpu[1])
	row.CPURatio = Ratio(row.RefCPU.Median, row.GoCPU.Median)
	row.GoPeakKB, row.RefPeakKB = peaks[0], peaks[1]
	row.GoIdleKB, row.RefIdleKB = idle[0], idle[1]
	if len(times) > 2 {
		a := &AllocRow{Go: NewStat(times[2]), GoCPU: NewStat(cpu[2]), PeakKB: peaks[2], IdleKB: idle[2]}
		a.Ratio, a.CPURatio = Ratio(row.Ref.Median, a.Go.Median), Ratio(row.RefCPU.Median, a.GoCPU.Median)
		row.LibtorchAlloc = a
	}
	b := float64(row.Batch)
	row.GoRate, row.RefRate = row.Go.Rate(b), row.Ref.Rate(b)
	row.Ratio = Ratio(row.Ref.Median, row.Go.Median)
	per := fl.Visual + fl.Fusion + fl.Text77
	if row.What == "train_step" {
		per = fl.TrainStep
	}
	row.StepGFLOP = per * b / 1e9
	row.GoGFLOPS, row.RefGFLOPS = row.StepGFLOP/row.Go.Median, row.StepGFLOP/row.Ref.Median
	row.LoadAvgEnd = loadAvg()
}

// stepGrowthKB is the memory one side needs for a training step at batch
// beyond its idle process: the largest growth over the idle RSS that any
// side showed at the measured batch (the Go side on its host cache starts
// from an RSS that already holds cached blocks, so its own growth
// understates), scaled by the batch, +15 %.
func stepGrowthKB(measured *IPIQARow, batch int) float64 {
	growth := max(measured.GoPeakKB-measured.GoIdleKB, measured.RefPeakKB-measured.RefIdleKB)
	if a := measured.LibtorchAlloc; a != nil {
		growth = max(growth, a.PeakKB-a.IdleKB)
	}
	return float64(growth) * float64(batch) / float64(measured.Batch) * 1.15
}

// measureSoloRows measures the training rows the memory guard refused with
// the shared processes up (sides: Go, reference, Go on libtorch's
// allocator or nil), each side alone: the shared processes exit first, then
// every side runs in a fresh process of its own (measureSolo). The rows
// keep their places; a side that does not fit even alone leaves its row
// skipped with the reason.
func measureSoloRows(o *IPIQAOptions, rep *IPIQAReport, sides []*Reference,
	startGo func(plain bool) (*Reference, *RefReply, error), startRef func(stateOut string) (*Reference, *RefReply, error)) error {
	var grown *IPIQARow
	closed := false
	for i := range rep.Rows {
		row := &rep.Rows[i]
		if row.What != "train_step" {
			continue
		}
		if !row.tooBig {
			if row.Skipped == "" {
				grown = row
			}
			continue
		}
		if grown == nil {
			continue
		}
		if !closed {
			for _, s := range sides {
				if s != nil {
					s.Close()
				}
			}
			closed = true
		}
		starts := []func() (*Reference, error){
			func() (*Reference, error) { r, _, err := startGo(false); return r, err },
			func() (*Reference, error) { r, _, err := startRef(""); return r, err },
		}
		if sides[2] != nil {
			starts = append(starts, func() (*Reference, error) { r, _, err := startGo(true); return r, err })
		}
		logf2(o, "train_step batch %d: each side alone in a fresh process", row.Batch)
		solo, err := measureSolo(o, starts, row.Batch, stepGrowthKB(grown, row.Batch), rep.FLOPs)
		if err != nil {
			*row = IPIQARow{What: row.What, Batch: row.Batch, Skipped: "failed: " + err.Error()}
			return fmt.Errorf("train_step batch %d, each side alone: %w", row.Batch, err)
		}
		*row = solo
		if row.Skipped != "" {
			logf2(o, "train_step batch %d skipped: %s", row.Batch, row.Skipped)
			continue
		}
		logf2(o, "train_step batch %d, each side alone: Go %.3f s, reference %.3f s (ref ÷ Go %.2f×); peak RSS Go %s, reference %s",
			row.Batch, row.Go.Median, row.Ref.Median, row.Ratio, mib(row.GoPeakKB), mib(row.RefPeakKB))
		grown = row
	}
	return nil
}

// measureSolo times a training step at batch with each side (the starts,
// in order Go, reference, Go on libtorch's allocator) alone: it starts the
// side's process, checks that the machine has need KB available for the
// step, runs a warm-up step, resets the peak counter and times the rounds
// (o.Rounds, 0: 1), then ends the process before the next side starts. So
// no side's idle memory, host cache included, counts against another's.
func measureSolo(o *IPIQAOptions, starts []func() (*Reference, error), batch int, need float64, fl IPIQAFLOPs) (IPIQARow, error) {
	row := IPIQARow{What: "train_step", Batch: batch, Solo: true}
	rounds := max(o.Rounds, 1)
	n := len(starts)
	times, cpu := make([][]float64, n), make([][]float64, n)
	peaks, idle := make([]int64, n), make([]int64, n)
	names := []string{"the Go side", "the reference", "Go on libtorch's allocator"}
	for i, start := range starts {
		side, err := start()
		if err != nil {
			return row, err
		}
		if avail, err := memAvailableKB(); err == nil && need > float64(avail) {
			side.Close()
			row.Skipped = fmt.Sprintf("a step at batch %d needs about %.1f GiB more than an idle process even with each side alone; "+
				"with %s loaded the machine has %.1f GiB available", batch, need/(1<<20), names[i], float64(avail)/(1<<20))
			row.tooBig = true
			return row, nil
		}
		err = func() error {
			defer side.Close()
			if _, err := side.Call(map[string]any{"op": "train_step", "batch": batch, "iters": 0, "warmup": 1}); err != nil {
				return err
			}
			rr, err := side.Call(map[string]any{"op": "reset_hwm"})
			if err != nil {
				return err
			}
			if !rr.HWMReset {
				return fmt.Errorf("cannot reset the peak RSS counter (/proc/self/clear_refs)")
			}
			idle[i] = rr.RSSKB
			for range rounds {
				rr, err := side.Call(map[string]any{"op": "train_step", "batch": batch, "iters": 1, "warmup": 0})
				if err != nil {
					return err
				}
				times[i] = append(times[i], rr.Times...)
				cpu[i] = append(cpu[i], rr.CPU...)
				peaks[i] = max(peaks[i], rr.HWMKB)
			}
			return side.Close()
		}()
		if err != nil {
			return row, fmt.Errorf("%s: %w", names[i], err)
		}
	}
	row.fill(times, cpu, peaks, idle, fl)
	return row, nil
}

// sideOrder is the k-th side to run in round r of n sides. Two sides
// alternate; with more, rounds go through every starting side, each once
// forwards and once backwards, so with three sides six rounds run all six
// orders and each side goes first twice.
func sideOrder(n, r, k int) int {
	if n <= 2 {
		return (r + k) % n
	}
	start := (r / 2) % n
	if r%2 == 1 {
		return ((start-k)%n + n) % n
	}
	return (start + k) % n
}

// ipiqaAgreement scores the same random pixels on both sides in eval mode.
func ipiqaAgreement(o *IPIQAOptions, goc, ref *Reference) (float64, error) {
	const n = 2
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	px := s.Randn(torch.Float32, n, 3, IPIQAResolution, IPIQAResolution)
	if err := s.Err(); err != nil {
		return 0, err
	}
	pv, err := px.Float32s()
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(o.Cache, "ipiqa-pixels-*.npy")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(npy.EncodeFloat32([]int64{n, 3, IPIQAResolution, IPIQAResolution}, pv)); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	g, err := goc.Call(map[string]any{"op": "features", "pixels": f.Name()})
	if err != nil {
		return 0, err
	}
	r, err := ref.Call(map[string]any{"op": "features", "pixels": f.Name()})
	if err != nil {
		return 0, err
	}
	if len(g.Features) != len(r.Features) || len(g.Features) == 0 {
		return 0, fmt.Errorf("scores: Go returned %d values, the reference %d", len(g.Features), len(r.Features))
	}
	got := make([]float32, len(g.Features))
	for i, v := range g.Features {
		got[i] = float32(v)
	}
	return relErr(got, r.Features), nil
}

// ipiqaFLOPs counts RN50 IP-IQA at 512 (multiply-adds × 2 per image); eots
// are the benchmark prompts' EOT positions (for Go's text shortcut).
func ipiqaFLOPs(eots []int64) IPIQAFLOPs {
	cfg := clip.Config{Backbone: clip.BackboneResNet, VisionWidth: 64, VisionStages: []int{3, 4, 6, 3}, EmbedDim: 1024, ImageResolution: IPIQAResolution}
	const d, e, w, layers, outputs = 2048.0, 1024.0, 512.0, 12.0, 2.0
	g := float64(IPIQAResolution / 32)
	l := g*g + 1
	var f IPIQAFLOPs
	f.Visual = cfg.FLOPsPerImage()
	// txt_attnpool: q from the text feature, k and v over all tokens, the
	// single query's scores and mix, out_proj; then the MLP head.
	f.Fusion = 2 * (e*d + 2*l*d*d + 2*l*d + d*e + (2*e)*(2*e) + 2*e*outputs)
	text := func(n float64) float64 {
		perLayer := n*12*w*w + 2*n*n*w // qkv + out + 4w MLP; scores and mix
		return 2 * (layers*perLayer + w*e)
	}
	f.Text77 = text(77)
	if len(eots) > 0 {
		for _, t := range eots {
			f.TextPrompts += text(float64(t + 1))
		}
		f.TextPrompts /= float64(len(eots))
	}
	f.TrainStep = 3*(f.Visual+f.Fusion) + 2*f.Text77
	return f
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func project(r *IPIQAReport) *Projection {
	var step, score *IPIQARow
	for i := range r.Rows {
		row := &r.Rows[i]
		if row.Skipped != "" {
			continue
		}
		// The step measured nearest the official batch 32 scales best.
		if row.What == "train_step" && (step == nil || abs(32-row.Batch) < abs(32-step.Batch)) {
			step = row
		}
		if row.What == "score" && (score == nil || row.Batch == 32) {
			score = row
		}
	}
	if step == nil || score == nil {
		return nil
	}
	p := &Projection{TrainImages: AGIQA3KTrainImages, TestImages: AGIQA3KImages - AGIQA3KTrainImages, Epochs: 100}
	// The official loader drops the last partial batch; steps are scaled
	// from the measured batch to the official 32.
	p.StepsPerEpoch = p.TrainImages / 32
	p.StepBatch = step.Batch
	scale := 32 / float64(step.Batch)
	hours := func(stepS, scoreRate float64) (train, all float64) {
		train = float64(p.Epochs*p.StepsPerEpoch) * stepS * scale / 3600
		return train, train + float64(p.Epochs*p.TestImages)/scoreRate/3600
	}
	p.GoTrainHours, p.GoHours = hours(step.Go.Median, score.GoRate)
	p.RefTrainHours, p.RefHours = hours(step.Ref.Median, score.RefRate)
	th := float64(max(r.Machine.Threads, 1))
	cpuRate := func(st Stat) float64 { return float64(score.Batch) / (st.Median / th) }
	_, p.GoCPUHours = hours(step.GoCPU.Median/th, cpuRate(score.GoCPU))
	_, p.RefCPUHours = hours(step.RefCPU.Median/th, cpuRate(score.RefCPU))
	p.PFLOP = float64(p.Epochs) * (float64(p.StepsPerEpoch*32)*r.FLOPs.TrainStep +
		float64(p.TestImages)*(r.FLOPs.Visual+r.FLOPs.Fusion+r.FLOPs.Text77)) / 1e15
	return p
}

func ipiqaTargets(r *IPIQAReport) []Target {
	var ts []Target
	for _, row := range r.Rows {
		if row.Skipped != "" {
			continue
		}
		name, goal := fmt.Sprintf("scoring, batch %d", row.Batch), 1.2
		if row.What == "train_step" {
			name, goal = fmt.Sprintf("training step, batch %d", row.Batch), 1.0
		}
		ts = append(ts, Target{Name: name, Goal: fmt.Sprintf("≥ %.1f× reference", goal), Value: row.Ratio, Unit: "×",
			Met: row.Ratio >= goal})
		if row.GoPeakKB > 0 && row.RefPeakKB > 0 {
			v := float64(row.GoPeakKB) / float64(row.RefPeakKB)
			ts = append(ts, Target{Name: "peak RSS, " + name, Goal: "≤ reference", Value: v, Unit: "× reference", Met: v <= 1})
		}
	}
	return ts
}

func ipiqaNotes(r *IPIQAReport) []string {
	n := []string{
		"Reference: bench/ipiqa_reference.py, our restatement of the official IP-IQA forward and training step (Coobiw/IP-IQA at b486be5) " +
			"with the official module names; it writes its random weights as a state dict that the Go side loads, so both compute on the same weights. " +
			"Each image has its own prompt (as in a shuffled AGIQA-3K batch); the reference re-runs the text tower over all 77 positions of every row " +
			"on every call, as the official forward does; Go encodes each distinct prompt once per batch, up to the batch's longest EOT (the causal mask " +
			"makes later positions irrelevant). The reference gets token ids (the official code tokenizes on every call; Go's timing includes its tokenizer).",
		"Scoring: eval mode, torch.no_grad on the reference, inference mode in Go, random pixels made before the clock starts. " +
			"Training step: model.train() (BatchNorm on batch statistics, head dropout 0.5; the frozen text modules in eval), MSE on two targets, " +
			"backward, AdamW over the official parameter groups (lr 1e-5, head × 10, no weight decay), zero_grad.",
		"Memory layout and folding: Go's ResNet scores on its fused eval trunk (the eval-mode default: one native op with each BatchNorm folded into " +
			"the convolution before it, channels-last activations, where oneDNN's convolutions run faster, ReLU and the residual add in place; " +
			"torch.FusedResNet) and trains op by op, row-major " +
			"(channels-last BatchNorm sums its batch statistics in float32 and misses the official running statistics' 1e-5 agreement); the reference " +
			"runs as the official code does, NCHW throughout, BatchNorm as its own op. A PyTorch user can get part of this with " +
			"model.to(memory_format=torch.channels_last) and torch.jit.freeze (which folds BatchNorm); this benchmark does not time those variants.",
		"Each side runs in its own process (Go: a child of the bench command; reference: the Python) with the same libtorch and OpenBLAS thread counts; " +
			"each row starts with a warm-up round at its batch (Go's host cache emptied before it), then timed rounds; who goes first rotates between rounds and rows; " +
			"times are medians. Peak RSS is each process's VmHWM over the timed rounds (counter reset after the warm-up), model, gradients and AdamW state included.",
		fmt.Sprintf("FLOPs (multiply-adds × 2, per image, official computation): visual %.1f G (ResNet at 512 and the CLIP attnpool), fusion %.2f G, "+
			"text tower %.2f G at 77 positions (%.2f G at this benchmark's prompt lengths, Go's shortcut); a training step ≈ 3 × (visual + fusion) + "+
			"2 × text = %.1f GFLOP per image, %.2f TFLOP at batch 32.", r.FLOPs.Visual/1e9, r.FLOPs.Fusion/1e9, r.FLOPs.Text77/1e9,
			r.FLOPs.TextPrompts/1e9, r.FLOPs.TrainStep/1e9, 32*r.FLOPs.TrainStep/1e12),
	}
	if r.GoHostCacheMiB >= 0 {
		n = append(n, "Allocator: libtorch's default CPU allocator hands each block to glibc malloc, which maps every block above its mmap threshold "+
			"(at most 32 MiB) afresh and unmaps it on free; at 512 px most activations and gradients are larger, so both PyTorch and Go on that allocator "+
			"fault in and zero each step's memory anew (system time is a large part of their CPU seconds). Go's host cache keeps freed blocks of 1 MiB and more "+
			"for the next request of the same size (2 MiB pieces on transparent huge pages), never more than the gap between the bytes in use and their peak, "+
			"so it does not raise the peak; the Go child empties it when its peak counter is reset before each row. The reference runs with PyTorch's defaults, "+
			"as the official code does; a PyTorch user could get part of this gain with a caching malloc (LD_PRELOAD of jemalloc or tcmalloc) or glibc tunables, "+
			"which this benchmark does not time. The third process shows Go on libtorch's allocator, the like-for-like comparison of the two engines.",
			"OpenMP: libgomp's default lets idle workers spin after each parallel region; at batch 1 (hundreds of short regions per image) the spinning threads "+
				"take the cores from the working ones. The CLI therefore runs with OMP_WAIT_POLICY=PASSIVE unless the environment sets a policy "+
				"(cmd/clipagiqa/omp.go); the reference and the third process run with libgomp's default, as the official code does. PyTorch gains from the same setting "+
				"(export OMP_WAIT_POLICY=PASSIVE before starting Python); this benchmark does not time that variant.")
	}
	for _, row := range r.Rows {
		if row.Solo && row.Skipped == "" {
			n = append(n, fmt.Sprintf("The %s at batch %d ran with each side alone: the processes of the other rows could not hold it together "+
				"(at 512×512 activations take about 0.5 GiB per image per process in training, and a Go side on its host cache keeps its blocks between calls), "+
				"so after the other rows and the profile they exited, and each side ran in a fresh process of its own, one after the other "+
				"(Go, the reference, Go on libtorch's allocator): a warm-up step, then %d timed step(s). Its sides are not interleaved, so load that changed "+
				"between them moves the ratio.", strings.ReplaceAll(row.What, "_", " "), row.Batch, len(row.Go.Runs)))
		}
		if row.Skipped != "" {
			n = append(n, fmt.Sprintf("The %s at batch %d was not run: at 512×512 activations take about 0.5 GiB per image per process in training, "+
				"and the bench refuses a batch whose projected memory the machine does not have available (an out-of-memory kill would hit other processes). "+
				"Run it on a machine with more memory for that row.", strings.ReplaceAll(row.What, "_", " "), row.Batch))
		}
	}
	n = append(n, "CPU seconds are the process's user + system time over the call (getrusage on the Go side, time.process_time in Python), all threads; "+
		"idle OpenMP threads that spin count too, on both sides alike. With one or two rounds per row, wall-time ratios on a loaded machine can move by "+
		"±15 % between runs (batch-1 scoring rounds of the first run differed by 28 % on the reference side).")
	if r.Machine.LoadAvgStart > 0.5*float64(r.Machine.Cores) || r.Machine.LoadAvgEnd > 0.5*float64(r.Machine.Cores) {
		n = append(n, fmt.Sprintf("The machine was shared (load average %.1f → %.1f on %d cores): absolute numbers are noisy and the projected hours are those of a loaded machine; ratios come from interleaved runs.",
			r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd, r.Machine.Cores))
	}
	return n
}

// Write stores the report as <dir>/ipiqa.md and <dir>/ipiqa.json.
func (r *IPIQAReport) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	var sb strings.Builder
	r.Markdown(&sb)
	if err := os.WriteFile(filepath.Join(dir, "ipiqa.md"), []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return writeJSON(filepath.Join(dir, "ipiqa.json"), r)
}

func writeJSON(path string, v any) error {
	zeroNaNs(reflect.ValueOf(v))
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// rowLabel names a row's kind in the tables.
func rowLabel(row IPIQARow) string {
	switch {
	case row.What == "score":
		return "scoring"
	case row.Solo && row.Skipped == "":
		return "training step (each side alone)"
	}
	return "training step"
}

// Markdown renders the IP-IQA report.
func (r *IPIQAReport) Markdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "# clipagiqa bench: IP-IQA, RN50 at %d×%d\n\n", IPIQAResolution, IPIQAResolution)
	fmt.Fprintf(w, "`%s` · %s · %s, %d cores · threads %d (libtorch and OpenBLAS, both sides) · Go %s · libtorch %s · PyTorch %s · "+
		"load average %.2f at start, %.2f at end · %.0f s\n\n",
		r.Command, r.Started, m.CPU, m.Cores, m.Threads, m.Go, m.Libtorch, m.PyTorch, m.LoadAvgStart, m.LoadAvgEnd, r.Seconds)
	fmt.Fprintf(w, "Model: RN50 geometry (stages 3-4-6-3, width 64, attnpool 2048 → 1024, text 512 × 12 layers), random weights, "+
		"%.1f M parameters, %.1f M trained (official freezing, [QA] token embedding on). Go and the reference use the same weights; their "+
		"eval-mode scores of the same pixels differ by %.2g (relative L2).\n\n", float64(r.Params)/1e6, float64(r.Trained)/1e6, r.ScoreErr)
	fmt.Fprintf(w, "Ratios are reference ÷ Go (higher is better for Go), wall time and process CPU time (user + system, all threads) of the same calls; "+
		"times are medians of interleaved rounds. On a shared machine the CPU ratio is the steadier one.\n\n")
	fmt.Fprintf(w, "| | batch | Go s | reference s | Go img/s | reference img/s | ref ÷ Go | Go CPU s | reference CPU s | ref ÷ Go, CPU | Go GFLOP/s | ref GFLOP/s | peak RSS Go | peak RSS reference | Go ÷ ref |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		what := rowLabel(row)
		if row.Skipped != "" {
			fmt.Fprintf(w, "| %s | %d | not run: %s | | | | | | | | | | | | |\n", what, row.Batch, row.Skipped)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", what, row.Batch, f3(row.Go.Median), f3(row.Ref.Median),
			f2(row.GoRate), f2(row.RefRate), x2(row.Ratio), f3(row.GoCPU.Median), f3(row.RefCPU.Median), x2(row.CPURatio),
			f2(row.GoGFLOPS), f2(row.RefGFLOPS), mib(row.GoPeakKB), mib(row.RefPeakKB),
			x2(float64(row.GoPeakKB)/float64(max(row.RefPeakKB, 1))))
	}
	if r.GoHostCacheMiB >= 0 {
		limit := "the CLI's default: no cap beyond its peak rule"
		if r.GoHostCacheMiB > 0 {
			limit = fmt.Sprintf("idle blocks capped at %d MiB", r.GoHostCacheMiB)
		}
		fmt.Fprintf(w, "\nGo runs as the CLI does: with its host cache (torch.HostCache, %s) and libgomp's passive wait policy "+
			"(OMP_WAIT_POLICY=PASSIVE unless set). The same measurements of Go on libtorch's own CPU allocator and libgomp's default policy, "+
			"a third process in the same rounds (the like-for-like comparison of the two engines):\n\n", limit)
		fmt.Fprintf(w, "| | batch | Go, libtorch/libgomp defaults, s | ref ÷ it | CPU s | ref ÷ it, CPU | peak RSS | ÷ ref | speed-up from the two settings (its time ÷ Go's) |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, row := range r.Rows {
			a := row.LibtorchAlloc
			if a == nil {
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", rowLabel(row), row.Batch, f3(a.Go.Median), x2(a.Ratio), f3(a.GoCPU.Median),
				x2(a.CPURatio), mib(a.PeakKB), x2(float64(a.PeakKB)/float64(max(row.RefPeakKB, 1))), x2(Ratio(a.Go.Median, row.Go.Median)))
		}
	}
	if p := r.Epochs; p != nil {
		fmt.Fprintf(w, "\n## The paper's 100 epochs on this CPU (projected)\n\n")
		fmt.Fprintf(w, "AGIQA-3K, %d images: %d train (80 %% of the prompts), %d test; batch 32, %d steps per epoch (last partial batch dropped, as the official loader), "+
			"one evaluation of the test part per epoch (the official eval_freq 1).", AGIQA3KImages, p.TrainImages, p.TestImages, p.StepsPerEpoch)
		if p.StepBatch != 32 {
			fmt.Fprintf(w, " A batch-32 step is taken as %d × the measured batch-%d step (the FLOPs are linear in the batch).", 32/p.StepBatch, p.StepBatch)
		}
		fmt.Fprintf(w, " Evaluations use the batch-32 scoring rate.\n\n")
		fmt.Fprintf(w, "| | Go | reference |\n|---|---|---|\n")
		fmt.Fprintf(w, "| training steps, hours | %.1f | %.1f |\n", p.GoTrainHours, p.RefTrainHours)
		fmt.Fprintf(w, "| steps + evaluations, hours | %.1f | %.1f |\n", p.GoHours, p.RefHours)
		fmt.Fprintf(w, "| steps + evaluations, hours on an idle machine (CPU seconds ÷ %d threads; estimate) | %.1f | %.1f |\n",
			max(m.Threads, 1), p.GoCPUHours, p.RefCPUHours)
		fmt.Fprintf(w, "\nThe whole run is %.2f PFLOP (official computation): divide by a GPU's sustained FLOP/s for its time "+
			"(e.g. at 100 TFLOP/s sustained, %.1f minutes). Image decoding is not counted; the projection assumes the measured step holds.\n",
			p.PFLOP, p.PFLOP*1e15/100e12/60)
	}
	if p := r.Profile; p != nil {
		fmt.Fprintf(w, "\n## Where the time goes (batch %d, one call of each part per side)\n\n", p.Batch)
		fmt.Fprintf(w, "| part | Go s | reference s | ref ÷ Go | Go share | reference share |\n|---|---|---|---|---|---|\n")
		parts := []struct{ key, name, of string }{
			{"text", "scoring: text tower (Go: distinct prompts, up to the longest EOT; reference: every row, 77 positions)", "score"},
			{"resnet", "scoring: ResNet to the feature map", "score"},
			{"score", "scoring: the whole call", "score"},
			{"forward", "training step: forward + loss (train mode)", "step"},
			{"backward", "training step: backward", "step"},
			{"optimizer", "training step: AdamW step + zero_grad", "step"},
		}
		total := func(m map[string]float64, of string) float64 {
			if of == "score" {
				return m["score"]
			}
			return m["forward"] + m["backward"] + m["optimizer"]
		}
		for _, q := range parts {
			g, rf := p.Go[q.key], p.Ref[q.key]
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", q.name, f3(g), f3(rf), x2(Ratio(rf, g)),
				pct(g/total(p.Go, q.of)), pct(rf/total(p.Ref, q.of)))
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n## Targets\n\n| target | goal | measured | met |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			fmt.Fprintf(w, "| %s | %s | %s %s | %s |\n", t.Name, t.Goal, f2(t.Value), t.Unit, met)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}
