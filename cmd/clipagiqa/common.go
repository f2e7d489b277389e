package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

// The tiny CLIP shipped in testdata: the demo's default model.
const tinyCLIPRel = "testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt"

// Flags shared by the model commands; functions so that every command gets
// its own flag values.
func clipFlag(required bool) *cli.StringFlag {
	return &cli.StringFlag{Name: "clip", Required: required,
		Usage: "OpenAI CLIP weights: a TorchScript `FILE` as released (ViT-B/16.pt, ...) or a torch.save state dict"}
}

func deviceFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "device", Value: "cpu", Usage: "compute device: cpu, cuda or cuda:N"}
}

func precisionFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "precision", Value: "fp32",
		Usage: "CLIP compute precision: fp32, fp16 or bf16 (half precisions need CUDA; the prompt learner and regressor stay fp32)"}
}

func batchFlag(def int) *cli.IntFlag {
	return &cli.IntFlag{Name: "batch-size", Value: def, Usage: "images per forward pass"}
}

func maxPixelsFlag() *cli.Int64Flag {
	return &cli.Int64Flag{Name: "max-pixels", Value: imageprep.DefaultMaxPixels,
		Usage: "refuse images whose header declares more pixels (decompression-bomb guard)"}
}

// repeatable collects every value of a flag given several times, verbatim:
// cli.StringSliceFlag would split "a, b" at the comma, which breaks texts.
type repeatable []string

func (r *repeatable) Set(v string) error { *r = append(*r, v); return nil }

func (r *repeatable) String() string { return strings.Join(*r, "\n") }

// repeatableValues returns the values of a repeatable flag.
func repeatableValues(c *cli.Context, name string) []string {
	if r, ok := c.Generic(name).(*repeatable); ok && r != nil {
		return *r
	}
	return nil
}

// deviceOptions parses --device and --precision and checks the device exists.
func deviceOptions(c *cli.Context) (torch.Device, torch.DType, error) {
	dev, err := torch.ParseDevice(c.String("device"))
	if err != nil {
		return dev, 0, err
	}
	if err := torch.CheckDevice(dev); err != nil {
		return dev, 0, err
	}
	prec, err := torch.ParsePrecision(c.String("precision"))
	if err != nil {
		return dev, 0, err
	}
	if prec != torch.Float32 && dev.Type != torch.CUDA {
		return dev, 0, fmt.Errorf("precision %s needs a CUDA device (CPU computes in fp32)", c.String("precision"))
	}
	return dev, prec, nil
}

// loadCLIP loads --clip on the chosen device, after --threads.
func loadCLIP(c *cli.Context) (*clip.Model, error) {
	if err := applyThreads(c); err != nil {
		return nil, err
	}
	path := c.String("clip")
	if path == "" {
		return nil, errors.New("--clip FILE is required (OpenAI CLIP .pt weights)")
	}
	if err := regularfile.Check(path); err != nil {
		return nil, fmt.Errorf("--clip: %w", err)
	}
	dev, prec, err := deviceOptions(c)
	if err != nil {
		return nil, err
	}
	m, err := clip.Load(path, clip.Options{Device: dev, Precision: prec})
	if err != nil {
		return nil, err
	}
	if c.Bool("no-fused") {
		m.DisableFused() // a ResNet starts on its fused eval trunk
	} else if _, err := m.EnableFused(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// loadCLIPAndTokenizer loads --clip and the BPE tokenizer that every model
// command needs.
func loadCLIPAndTokenizer(c *cli.Context) (*clip.Model, *tokenizer.Tokenizer, error) {
	cm, err := loadCLIP(c)
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizer.Default()
	if err != nil {
		cm.Close()
		return nil, nil, err
	}
	return cm, tok, nil
}

// writeJSON prints v indented, as people read and pipe it.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// inputError is one input that could not be processed; the others go on.
type inputError struct {
	Image string `json:"image"`
	Error string `json:"error"`
}

// imageExts are the extensions a directory argument is expanded to.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".gif": true, ".bmp": true, ".webp": true}

// imageInput is one image argument after directory expansion: a path to
// process, or the reason it cannot be (Err non-empty).
type imageInput struct {
	Path string
	Err  string
	Rel  string // relative to the directory argument it was found in ("" for a file argument)
}

// expandImages turns arguments into image inputs, in argument order: files
// as given (any extension: the decoder sniffs the content), directories into
// their image files (by extension, recursively, sorted). Unreadable
// arguments, and anything that is not a regular file (a FIFO would block in
// open), become inputs with Err set, so that errors keep their place.
func expandImages(args []string) []imageInput {
	var out []imageInput
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			out = append(out, imageInput{Path: a, Err: err.Error()})
			continue
		}
		if !st.IsDir() {
			in := imageInput{Path: a}
			if err := regularfile.CheckEntry(a, st.Mode()); err != nil {
				in.Err = err.Error()
			}
			out = append(out, in)
			continue
		}
		var found []imageInput
		_ = filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
			switch {
			case err != nil:
				found = append(found, imageInput{Path: p, Err: err.Error()})
			case !d.IsDir() && imageExts[strings.ToLower(filepath.Ext(p))]:
				in := imageInput{Path: p}
				if rel, err := filepath.Rel(a, p); err == nil {
					in.Rel = rel
				}
				if err := regularfile.Check(p); err != nil { // follows symlinks
					in.Err = "skipped: " + err.Error()
				}
				found = append(found, in)
			}
			return nil
		})
		sort.SliceStable(found, func(i, j int) bool { return found[i].Path < found[j].Path })
		out = append(out, found...)
	}
	return out
}

// preprocess decodes and center-transforms the images in parallel; errs[i]
// is non-nil where image i failed (its pixels are then nil).
func preprocess(paths []string, opts imageprep.Options) (pixels [][]float32, errs []error) {
	pixels = make([][]float32, len(paths))
	errs = make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pixels[i], errs[i] = imageprep.LoadFile(paths[i], opts)
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	return pixels, errs
}

// findShipped locates a file shipped in the repository (rel, slash-separated)
// from the executable's directory, its parent, or the working directory and
// its parents, so that bin/clipagiqa finds testdata/ in a checkout.
func findShipped(rel string) (string, error) {
	var bases []string
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		bases = append(bases, filepath.Dir(exe), filepath.Dir(filepath.Dir(exe)))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			bases = append(bases, d)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, b := range bases {
		p := filepath.Join(b, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found next to the executable or above the working directory (pass its path explicitly)", rel)
}

// isTerminal reports whether w is a character device (a TTY), where a
// redrawn progress line makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress is a one-line progress bar redrawn with \r; silent when its
// writer is not a terminal.
type progress struct {
	w       io.Writer
	on      bool
	label   string
	suffix  string // appended after the ETA
	total   int
	start   time.Time
	last    time.Time
	lastLen int
}

func newProgress(w io.Writer, label string, total int) *progress {
	now := time.Now()
	return &progress{w: w, on: isTerminal(w), label: label, total: total, start: now}
}

// update redraws the line (at most every 100 ms, and always at the end).
func (p *progress) update(done int, extra string) {
	if !p.on {
		return
	}
	now := time.Now()
	if done < p.total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	p.draw(renderProgress(p.label, done, p.total, now.Sub(p.start), extra) + p.suffix)
}

func (p *progress) draw(line string) {
	pad := max(0, p.lastLen-len(line))
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
	p.lastLen = len(line)
}

// clear erases the line so that ordinary output can follow.
func (p *progress) clear() {
	if p.on && p.lastLen > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastLen))
		p.lastLen = 0
	}
}

// renderProgress formats "label [=====>    ]  45/100 loss 0.1234  0:12 ETA 0:15".
func renderProgress(label string, done, total int, elapsed time.Duration, extra string) string {
	const width = 24
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	eta := "--:--"
	if done > 0 && total > 0 {
		eta = clock(time.Duration(float64(elapsed) / float64(done) * float64(total-done)))
	}
	s := fmt.Sprintf("%s [%s] %*d/%d", label, bar, len(fmt.Sprint(total)), done, total)
	if extra != "" {
		s += " " + extra
	}
	return s + fmt.Sprintf("  %s ETA %s", clock(elapsed), eta)
}

// clock formats a duration as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	t := int(d.Round(time.Second).Seconds())
	if t >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", t/3600, t/60%60, t%60)
	}
	return fmt.Sprintf("%d:%02d", t/60, t%60)
}

// Dataset and protocol flags shared by train and eval.
func datasetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "dataset", Required: true,
			Usage: "agiqa3k, agiqa1k, aigciqa2023 or csv (a generic image,mos table)"},
		&cli.StringFlag{Name: "root", Usage: "image root `DIR` (names in the table are relative to it)"},
		&cli.StringFlag{Name: "table", Usage: "score table of a built-in set (default ROOT/data.csv for agiqa3k, ROOT/AIGC_all.csv for agiqa1k, ROOT/mosz{1,2,3}.mat by --target for aigciqa2023; .mat or .csv)"},
		&cli.StringFlag{Name: "train-csv", Usage: "csv: the table (image|name,mos[,group]) to split, or the training side when --test-csv is given"},
		&cli.StringFlag{Name: "test-csv", Usage: "csv: a fixed test table (its images must not appear in --train-csv)"},
		&cli.StringFlag{Name: "target", Value: "quality", Usage: "score column: quality or alignment (agiqa3k); quality, authenticity or correspondence (aigciqa2023)"},
		&cli.StringFlag{Name: "protocol", Value: protocolPromptDisjoint,
			Usage: "prompt-disjoint: splits by prompt (no prompt on two sides), epoch chosen on a validation part; paper: the official split, last and best-on-test epochs reported; random: image-level random splits (prompts leak)"},
		&cli.IntFlag{Name: "splits", Value: 1, Usage: "number of splits (prompt-disjoint, random); results are mean ± std"},
		&cli.Float64Flag{Name: "test-fraction", Value: 0.2, Usage: "share of the data in the test part (prompt-disjoint, random)"},
		&cli.Float64Flag{Name: "val-fraction", Value: 0.1, Usage: "share of the training side held out for choosing the epoch (prompt-disjoint, random)"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the splits, the initialisation, shuffling and dropout"},
	}
}

// Evaluation protocols (the --protocol values).
const (
	protocolPaper          = data.ProtocolPaper
	protocolPromptDisjoint = data.ProtocolPromptDisjoint
	protocolRandom         = data.ProtocolRandom
)

// loadData reads --dataset (see data.Open): the whole set, and the fixed test
// table for csv with --test-csv (nil otherwise).
func loadData(c *cli.Context) (all, fixedTest *data.Dataset, err error) {
	name := strings.ToLower(c.String("dataset"))
	switch {
	case name != "csv" && c.String("root") == "":
		return nil, nil, fmt.Errorf("--root DIR is required for --dataset %s", name)
	case name == "csv" && c.String("train-csv") == "":
		return nil, nil, errors.New("--dataset csv needs --train-csv FILE (and optionally --test-csv FILE)")
	case !slices.Contains(data.SourceNames, name):
		return nil, nil, fmt.Errorf("--dataset %q: want %s", c.String("dataset"), strings.Join(data.SourceNames, ", "))
	}
	return data.Open(data.Source{Name: name, Root: c.String("root"), Table: c.String("table"), Target: c.String("target"),
		TrainCSV: c.String("train-csv"), TestCSV: c.String("test-csv")})
}

// splitPlan is one train/validation/test partition of a protocol.
type splitPlan struct {
	Name  string
	Parts clipagiqa.Datasets
}

// planSplits partitions the data per --protocol (see datasetFlags, data.Plan).
func planSplits(c *cli.Context, all, fixedTest *data.Dataset) ([]splitPlan, error) {
	p := data.Protocol{Name: c.String("protocol"), Splits: c.Int("splits"), TestFraction: c.Float64("test-fraction"),
		ValFraction: c.Float64("val-fraction"), Seed: c.Uint64("seed")}
	parts, err := data.Plan(p, all, fixedTest)
	if err != nil {
		return nil, fmt.Errorf("--protocol %s --splits %d: %w", p.Name, p.Splits, err)
	}
	plans := make([]splitPlan, len(parts))
	for i, pt := range parts {
		plans[i] = splitPlan{pt.Name, clipagiqa.Datasets{Train: pt.Train, Val: pt.Val, Test: pt.Test}}
	}
	return plans, nil
}

// meanStd returns the mean and the sample standard deviation (0 for one value).
func meanStd(x []float64) (mean, std float64) {
	if len(x) == 0 {
		return math.NaN(), math.NaN()
	}
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	if len(x) < 2 {
		return mean, 0
	}
	for _, v := range x {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(x)-1))
}
