package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/demo"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/plot"
	"github.com/urfave/cli/v2"
)

// Demo defaults: learning rates and dropout that let the tiny models learn
// in a few epochs (the papers' settings are tuned for real CLIPs and data).
// CLIP-AGIQA's regressor sees L2-normalised 64-d features whose entries are
// small, so it needs many SGD steps: batch 16 for 30 epochs at lr 0.02
// (lr 0.05 diverges to constant scores; batch 32 × 20 epochs at 0.01
// underfits: validation SRCC 0.749 against 0.791, measured on the earlier
// CLIP pre-trained on 48 bases).
const (
	demoEpochs      = 30
	demoLR          = 0.02
	demoBatch       = 16
	demoDropout     = 0.0
	demoBases       = 48
	demoValFrac     = 0.15
	demoIPIQAEpochs = 6
	demoIPIQALR     = 3e-4
	demoIPIQARes    = 224
	demoIPIQABatch  = 16
	// demoCLIPRel is the tiny ResNet CLIP whose image tower was pre-trained
	// by `make demo-clip` (Image2Prompt on synthetic images with quality
	// captions, seed demoPairsSeed; see the Makefile).
	demoCLIPRel   = "testdata/demo/tiny_clip_rn_i2p.pt"
	demoPairsSeed = 7001
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "generate a synthetic quality set, train CLIP-AGIQA and IP-IQA on the tiny CLIP, evaluate, score, plot",
		Description: "Runs the whole pipeline with nothing to download, in a few minutes on two\n" +
			"cores:\n" +
			"  1. generates OUT/data: procedural base images, each blurred, noised, JPEG-\n" +
			"     compressed and colour-shifted at severities 1-4, with MOS a known function\n" +
			"     of severity (see package clipagiqa/demo); train.csv and test.csv hold\n" +
			"     disjoint base images;\n" +
			"  2. loads the tiny ResNet CLIP shipped in " + demoCLIPRel + ": random\n" +
			"     weights whose image tower was pre-trained by Image2Prompt (`make demo-clip`)\n" +
			"     on other synthetic images with captions naming their quality and\n" +
			"     distortion; it has never seen a real photo (--clip takes real weights);\n" +
			"  3. CLIP-AGIQA (OUT/agiqa): evaluates the untrained model, trains prompt context\n" +
			"     and regressor with the centre feature cache (a validation part of the\n" +
			"     training bases picks the epoch), evaluates on the test bases;\n" +
			"  4. IP-IQA (OUT/ipiqa, ResNet CLIPs only): `train --method ipiqa` on the same\n" +
			"     parts (the image's base id stands in for its prompt), whole image tower\n" +
			"     fine-tuned, epoch chosen on the validation part;\n" +
			"  5. prints both methods' test metrics; each OUT/METHOD holds\n" +
			"     test_predictions.csv (image, mos, score), scatter.png and the curves.\n" +
			"--pairs-out DIR only writes an Image2Prompt pre-training set (images and\n" +
			"pairs.csv with captions) for `clipagiqa pretrain` and exits.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "demo-out", Usage: "output `DIR` (data/ and run/ inside)"},
			&cli.IntFlag{Name: "epochs", Value: demoEpochs, Usage: "training epochs"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the data set, the split, the initialisation and training"},
			&cli.IntFlag{Name: "bases", Value: demoBases, Usage: "base images to generate (each gives 17 images)"},
			&cli.Float64Flag{Name: "lr", Value: demoLR, Usage: "base learning rate"},
			&cli.Float64Flag{Name: "dropout", Value: demoDropout, Usage: "regressor dropout"},
			&cli.IntFlag{Name: "batch-size", Value: demoBatch, Usage: "CLIP-AGIQA images per SGD step"},
			&cli.StringFlag{Name: "clip", Usage: "CLIP weights `FILE` (default: " + demoCLIPRel + ", found next to the executable or above the working directory)"},
			&cli.StringFlag{Name: "methods", Value: "agiqa,ipiqa", Usage: "comma-separated methods to train: agiqa, ipiqa (ipiqa needs a ResNet CLIP)"},
			&cli.IntFlag{Name: "ipiqa-epochs", Value: demoIPIQAEpochs, Usage: "IP-IQA training epochs"},
			&cli.Float64Flag{Name: "ipiqa-lr", Value: demoIPIQALR, Usage: "IP-IQA AdamW learning rate (head groups ×10)"},
			&cli.IntFlag{Name: "ipiqa-resolution", Value: demoIPIQARes, Usage: "IP-IQA input side (multiple of 32)"},
			&cli.IntFlag{Name: "ipiqa-batch-size", Value: demoIPIQABatch, Usage: "IP-IQA images per AdamW step"},
			&cli.StringFlag{Name: "pairs-out", Usage: "only write an Image2Prompt pre-training set (seed --seed) to `DIR` and exit"},
			deviceFlag(), threadsFlag, hostCacheFlag,
		},
		Action: runDemo,
	}
}

func runDemo(c *cli.Context) error {
	start := time.Now()
	w := c.App.Writer
	out := c.String("out")
	seed := c.Uint64("seed")
	if dir := c.String("pairs-out"); dir != "" {
		opts := demo.DefaultOptions()
		opts.Seed, opts.Bases = seed, c.Int("bases")
		table, err := demo.GeneratePairs(dir, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s (%d images, seed %d)\n", table, opts.Bases*(1+len(demo.Distortions)*(opts.Levels-1)), seed)
		return nil
	}
	methods := map[string]bool{}
	for _, m := range strings.Split(c.String("methods"), ",") {
		m = strings.TrimSpace(m)
		if m != trainMethodAGIQA && m != trainMethodIPIQA {
			return fmt.Errorf("--methods: unknown method %q (want agiqa, ipiqa)", m)
		}
		methods[m] = true
	}
	if c.String("clip") == "" {
		p, err := findShipped(demoCLIPRel)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if err := c.Set("clip", p); err != nil {
			return err
		}
	}

	// 1. Data.
	opts := demo.DefaultOptions()
	opts.Seed, opts.Bases = seed, c.Int("bases")
	dataDir := filepath.Join(out, "data")
	trainCSV, testCSV, err := demo.Generate(dataDir, opts)
	if err != nil {
		return err
	}
	trainAll, test, err := data.LoadTrainTestCSV(dataDir, trainCSV, testCSV)
	if err != nil {
		return err
	}
	splits, err := data.GroupSplits(trainAll, 1, 1-demoValFrac, 0, seed)
	if err != nil {
		return err
	}
	parts := clipagiqa.Datasets{Train: splits[0].Train, Val: splits[0].Test, Test: test}
	per := 1 + len(demo.Distortions)*(opts.Levels-1)
	fmt.Fprintf(w, "data: %d base images × %d versions (reference + %d distortions × %d severities), seed %d, in %s (%.1fs)\n",
		opts.Bases, per, len(demo.Distortions), opts.Levels-1, seed, dataDir, time.Since(start).Seconds())
	fmt.Fprintf(w, "      MOS = 1 + 4·(1 − s/%d)^γ (γ: blur 1, noise 1.25, jpeg 0.8, colour 0.6); %s\n", opts.Levels-1, partSizes(parts))

	ctx, stop := interruptible(c)
	defer stop()
	type methodResult struct {
		name, dir, chosen string
		rep               metrics.Report
		err               error
	}
	var results []methodResult

	// 2. CLIP-AGIQA.
	if methods[trainMethodAGIQA] {
		runDir := filepath.Join(out, trainMethodAGIQA)
		after, epoch, err := demoAGIQA(ctx, c, parts, test, dataDir, runDir, seed, per)
		if err != nil {
			return err
		}
		results = append(results, methodResult{name: "CLIP-AGIQA", dir: runDir, chosen: fmt.Sprintf("epoch %d, best validation", epoch), rep: after.rep, err: after.err})
	}

	// 3. IP-IQA through the train command, on the same parts.
	if methods[trainMethodIPIQA] {
		runDir := filepath.Join(out, trainMethodIPIQA)
		if err := demoIPIQA(c, dataDir, runDir, demoValFrac); err != nil {
			return err
		}
		rep, err := reportOfCSV(filepath.Join(runDir, predictionsFile))
		if err == nil {
			title := fmt.Sprintf("IP-IQA on the demo test set: SRCC %.3f PLCC %.3f", rep.SRCC, rep.PLCC)
			err = plot.Scatter(filepath.Join(runDir, scatterPlot), rep.mos, rep.score, title, "MOS", "predicted score")
		}
		if err != nil {
			return fmt.Errorf("demo: ipiqa: %w", err)
		}
		results = append(results, methodResult{name: "IP-IQA", dir: runDir, chosen: "best validation epoch", rep: rep.Report})
	}

	// 4. Report.
	fmt.Fprintf(w, "\ntest set: %d images of %d base images never seen in training or pre-training\n", test.Len(), test.Len()/per)
	fmt.Fprintf(w, "%-44s %8s %8s %8s %8s\n", "method (selected epoch)", "SRCC", "PLCC", "KRCC", "RMSE")
	for _, r := range results {
		printRow(w, fmt.Sprintf("%s (%s)", r.name, r.chosen), r.rep, r.err)
	}
	for _, r := range results {
		fmt.Fprintf(w, "%s: %s, %s, %s\n", r.name, filepath.Join(r.dir, predictionsFile), filepath.Join(r.dir, scatterPlot), filepath.Join(r.dir, lossPlot))
	}
	fmt.Fprintf(w, "wall time %.1fs\n", time.Since(start).Seconds())
	return nil
}

type demoReport struct {
	rep metrics.Report
	err error
}

// demoAGIQA trains CLIP-AGIQA on parts and reports it on test.
func demoAGIQA(ctx context.Context, c *cli.Context, parts clipagiqa.Datasets, test *data.Dataset, dataDir, runDir string, seed uint64, per int) (demoReport, int, error) {
	w := c.App.Writer
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return demoReport{}, 0, err
	}
	defer cm.Close()
	cfg := clipagiqa.DefaultConfig()
	cfg.Dropout = c.Float64("dropout")
	tc := clipagiqa.DefaultTrainConfig()
	tc.Epochs, tc.LR, tc.BatchSize, tc.Seed = c.Int("epochs"), c.Float64("lr"), c.Int("batch-size"), seed
	tc.OutDir, tc.CacheDir = runDir, filepath.Join(filepath.Dir(runDir), "feature-cache")
	fmt.Fprintf(w, "\nCLIP-AGIQA: CLIP %s (%s, embed %d), %d context vectors and words %s\n",
		c.String("clip"), cm.Config.Backbone, cm.Config.EmbedDim, cfg.NCtx, strings.Join(cfg.Categories, ", "))
	fmt.Fprintf(w, "training: %d epochs, batch %d, lr %g (cosine, 1 warm-up epoch at %g), dropout %g, feature cache %s\n",
		tc.Epochs, tc.BatchSize, tc.LR, tc.WarmupLR, cfg.Dropout, tc.FeatureCache)
	var before, after demoReport
	var examples []clipagiqa.Prediction
	run := trainRun{clip: cm, tok: tok, model: cfg, train: tc, protocol: "demo", w: w, errw: c.App.ErrWriter}
	run.before = func(ctx context.Context, m *clipagiqa.Model) error {
		fmt.Fprintln(c.App.ErrWriter, "encoding test features for the untrained model...")
		preds, err := cachedPredictions(ctx, m, test, tc)
		if err != nil {
			return err
		}
		before.rep, before.err = reportOfPredictions(preds) // constant scores are a result, not a failure
		return nil
	}
	run.after = func(ctx context.Context, m *clipagiqa.Model, o *splitOutcome) error {
		preds, err := cachedPredictions(ctx, m, test, tc)
		if err != nil {
			return err
		}
		after.rep, after.err = reportOfPredictions(preds)
		examples, err = clipagiqa.Predict(ctx, m, exampleImages(dataDir, test), clipagiqa.EvalOptions{})
		return err
	}
	o, err := run.split(ctx, splitPlan{Name: "demo", Parts: parts}, runDir)
	if err != nil {
		return after, 0, err
	}
	fmt.Fprintf(w, "%-44s %8s %8s %8s %8s\n", "CLIP-AGIQA on the test set", "SRCC", "PLCC", "KRCC", "RMSE")
	printRow(w, "untrained (random init)", before.rep, before.err)
	printRow(w, fmt.Sprintf("trained (epoch %d, best validation)", o.Selected.Epoch), after.rep, after.err)
	fmt.Fprintf(w, "scores of a few test images (selected epoch):\n%-40s %6s %8s\n", "image", "MOS", "score")
	mos := map[string]float64{}
	for _, s := range test.Samples {
		mos[s.Path] = s.MOS
	}
	for _, p := range examples {
		if p.Err != "" {
			fmt.Fprintf(w, "%-40s error: %s\n", filepath.Base(p.Name), p.Err)
			continue
		}
		fmt.Fprintf(w, "%-40s %6.2f %8.3f\n", filepath.Base(p.Name), mos[p.Path], p.Score)
	}
	fmt.Fprintf(w, "checkpoint: %s (score more images with `clipagiqa predict --clip %s --checkpoint %s IMAGE...`)\n",
		filepath.Join(runDir, clipagiqa.BestDir), c.String("clip"), filepath.Join(runDir, clipagiqa.BestDir))
	return after, o.Selected.Epoch, nil
}

// demoIPIQA runs `train --method ipiqa` on the demo's tables (validation:
// valFrac of the training bases, by group, as CLIP-AGIQA's).
func demoIPIQA(c *cli.Context, dataDir, runDir string, valFrac float64) error {
	args := []string{"clipagiqa", "train", "--method", trainMethodIPIQA, "--clip", c.String("clip"),
		"--dataset", "csv", "--root", dataDir, "--train-csv", filepath.Join(dataDir, "train.csv"), "--test-csv", filepath.Join(dataDir, "test.csv"),
		"--protocol", protocolPromptDisjoint, "--val-fraction", strconv.FormatFloat(valFrac, 'g', -1, 64),
		"--epochs", strconv.Itoa(c.Int("ipiqa-epochs")), "--lr", strconv.FormatFloat(c.Float64("ipiqa-lr"), 'g', -1, 64),
		"--dropout", "0", "--batch-size", strconv.Itoa(c.Int("ipiqa-batch-size")), "--outputs", "1", "--input-resolution", strconv.Itoa(c.Int("ipiqa-resolution")),
		"--seed", strconv.FormatUint(c.Uint64("seed"), 10), "--device", c.String("device"), "--out", runDir}
	if c.IsSet("threads") {
		args = append(args, "--threads", strconv.Itoa(c.Int("threads")))
	}
	if c.IsSet(hostCacheFlag.Name) {
		args = append(args, "--"+hostCacheFlag.Name, strconv.FormatInt(c.Int64(hostCacheFlag.Name), 10))
	}
	fmt.Fprintf(c.App.Writer, "\nIP-IQA: %s\n", strings.Join(args[1:], " "))
	app := newApp()
	app.Writer, app.ErrWriter = c.App.Writer, c.App.ErrWriter
	if err := app.RunContext(c.Context, args); err != nil {
		return fmt.Errorf("demo: ipiqa: %w", err)
	}
	return nil
}

type csvReport struct {
	metrics.Report
	mos, score []float64
}

// reportOfCSV reads a test_predictions.csv (image, mos, score[, ...]).
func reportOfCSV(path string) (csvReport, error) {
	var r csvReport
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) < 2 || len(recs[0]) < 3 || recs[0][1] != "mos" || recs[0][2] != "score" {
		return r, fmt.Errorf("%s: want a header image,mos,score and rows", path)
	}
	for _, rec := range recs[1:] {
		m, err1 := strconv.ParseFloat(rec[1], 64)
		s, err2 := strconv.ParseFloat(rec[2], 64)
		if err1 != nil || err2 != nil {
			return r, fmt.Errorf("%s: bad row %v", path, rec)
		}
		r.mos, r.score = append(r.mos, m), append(r.score, s)
	}
	r.Report, err = metrics.Compute(r.score, r.mos)
	return r, err
}

// exampleImages picks one test base's reference and its strongest version of
// each distortion.
func exampleImages(dir string, test *data.Dataset) []string {
	if test.Len() == 0 {
		return nil
	}
	group := test.Samples[0].Group
	var out []string
	for _, s := range test.Samples {
		if s.Group == group && (strings.Contains(s.Name, "_ref") || strings.Contains(s.Name, "_s4")) {
			out = append(out, s.Path)
		}
	}
	return out
}

func reportOfPredictions(preds []clipagiqa.Prediction) (metrics.Report, error) {
	var mos, score []float64
	for _, p := range preds {
		if p.Err == "" {
			mos, score = append(mos, p.MOS), append(score, p.Score)
		}
	}
	return metrics.Compute(score, mos)
}

func printRow(w io.Writer, name string, r metrics.Report, err error) {
	if err != nil {
		fmt.Fprintf(w, "%-34s n/a: %v\n", name, err)
		return
	}
	fmt.Fprintf(w, "%-34s %8.4f %8.4f %8.4f %8.4f\n", name, r.SRCC, r.PLCC, r.KRCC, r.RMSE)
}
