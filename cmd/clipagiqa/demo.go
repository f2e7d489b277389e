package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/demo"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/urfave/cli/v2"
)

// Demo defaults: a learning rate and dropout that let the regressor learn
// from the tiny random CLIP's nearly identical features in a few epochs
// (the paper's 0.002 and 0.5 are tuned for a real CLIP).
const (
	demoEpochs  = 20
	demoLR      = 0.01
	demoDropout = 0.0
	demoBases   = 96
	demoValFrac = 0.15
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "generate a synthetic quality set, train CLIP-AGIQA on the tiny CLIP, evaluate, score, plot",
		Description: "Runs the whole pipeline with nothing to download, in a minute or two on two\n" +
			"cores:\n" +
			"  1. generates OUT/data: procedural base images, each blurred, noised, JPEG-\n" +
			"     compressed and colour-shifted at severities 1-4, with MOS a known function\n" +
			"     of severity (see package clipagiqa/demo); train.csv and test.csv hold\n" +
			"     disjoint base images;\n" +
			"  2. loads the tiny CLIP shipped in testdata (random weights: its features barely\n" +
			"     depend on image quality, so expect modest correlations; --clip takes real\n" +
			"     OpenAI weights);\n" +
			"  3. evaluates the untrained model, trains prompt context and regressor with the\n" +
			"     centre feature cache (validation part of the training bases picks the\n" +
			"     epoch), and evaluates again on the test bases;\n" +
			"  4. scores a few test images and writes OUT/run/{loss,srcc,scatter}.png.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "demo-out", Usage: "output `DIR` (data/ and run/ inside)"},
			&cli.IntFlag{Name: "epochs", Value: demoEpochs, Usage: "training epochs"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the data set, the split, the initialisation and training"},
			&cli.IntFlag{Name: "bases", Value: demoBases, Usage: "base images to generate (each gives 17 images)"},
			&cli.Float64Flag{Name: "lr", Value: demoLR, Usage: "base learning rate"},
			&cli.Float64Flag{Name: "dropout", Value: demoDropout, Usage: "regressor dropout"},
			&cli.IntFlag{Name: "batch-size", Value: 32, Usage: "images per SGD step"},
			&cli.StringFlag{Name: "clip", Usage: "CLIP weights `FILE` (default: " + tinyCLIPRel + ", found next to the executable or above the working directory)"},
			deviceFlag(), threadsFlag,
		},
		Action: runDemo,
	}
}

func runDemo(c *cli.Context) error {
	start := time.Now()
	w := c.App.Writer
	out := c.String("out")
	seed := c.Uint64("seed")
	if c.String("clip") == "" {
		p, err := findShipped(tinyCLIPRel)
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

	// 2. Model.
	cm, tok, err := loadCLIPAndTokenizer(c)
	if err != nil {
		return err
	}
	defer cm.Close()
	cfg := clipagiqa.DefaultConfig()
	cfg.Dropout = c.Float64("dropout")
	tc := clipagiqa.DefaultTrainConfig()
	tc.Epochs, tc.LR, tc.BatchSize, tc.Seed = c.Int("epochs"), c.Float64("lr"), c.Int("batch-size"), seed
	runDir := filepath.Join(out, "run")
	tc.OutDir, tc.CacheDir = runDir, filepath.Join(out, "feature-cache")
	fmt.Fprintf(w, "model: CLIP %s (%s, embed %d), CLIP-AGIQA with %d context vectors and words %s\n",
		c.String("clip"), cm.Config.Backbone, cm.Config.EmbedDim, cfg.NCtx, strings.Join(cfg.Categories, ", "))
	fmt.Fprintf(w, "training: %d epochs, batch %d, lr %g (cosine, 1 warm-up epoch at %g), dropout %g, feature cache %s\n",
		tc.Epochs, tc.BatchSize, tc.LR, tc.WarmupLR, cfg.Dropout, tc.FeatureCache)

	// 3. Untrained → trained.
	var before, after metrics.Report
	var beforeErr, afterErr error
	var examples []clipagiqa.Prediction
	run := trainRun{clip: cm, tok: tok, model: cfg, train: tc, protocol: "demo", w: w, errw: c.App.ErrWriter}
	run.before = func(ctx context.Context, m *clipagiqa.Model) error {
		fmt.Fprintln(c.App.ErrWriter, "encoding test features for the untrained model...")
		preds, err := cachedPredictions(ctx, m, test, tc)
		if err != nil {
			return err
		}
		before, beforeErr = reportOfPredictions(preds) // constant scores are a result, not a failure
		return nil
	}
	run.after = func(ctx context.Context, m *clipagiqa.Model, o *splitOutcome) error {
		preds, err := cachedPredictions(ctx, m, test, tc)
		if err != nil {
			return err
		}
		after, afterErr = reportOfPredictions(preds)
		examples, err = clipagiqa.Predict(ctx, m, exampleImages(dataDir, test), clipagiqa.EvalOptions{})
		return err
	}
	ctx, stop := interruptible(c)
	defer stop()
	o, err := run.split(ctx, splitPlan{Name: "demo", Parts: parts}, runDir)
	if err != nil {
		return err
	}

	// 4. Report.
	fmt.Fprintf(w, "\ntest set: %d images of %d base images never seen in training\n", test.Len(), test.Len()/per)
	fmt.Fprintf(w, "%-34s %8s %8s %8s %8s\n", "model", "SRCC", "PLCC", "KRCC", "RMSE")
	printRow(w, "untrained (random init)", before, beforeErr)
	printRow(w, fmt.Sprintf("trained (epoch %d, best validation)", o.Selected.Epoch), after, afterErr)
	fmt.Fprintf(w, "\nscores of a few test images (selected epoch):\n%-40s %6s %8s\n", "image", "MOS", "score")
	mos := map[string]float64{}
	for _, s := range test.Samples {
		mos[s.Path] = s.MOS
	}
	for _, p := range examples {
		if p.Err != "" {
			fmt.Fprintf(w, "%-40s error: %s\n", p.Name, p.Err)
			continue
		}
		fmt.Fprintf(w, "%-40s %6.2f %8.3f\n", p.Name, mos[p.Path], p.Score)
	}
	fmt.Fprintf(w, "\nplots: %s, %s, %s\n", filepath.Join(runDir, lossPlot), filepath.Join(runDir, srccPlot), filepath.Join(runDir, scatterPlot))
	fmt.Fprintf(w, "checkpoints: %s, %s (score more images with `clipagiqa predict --clip %s --checkpoint %s IMAGE...`)\n",
		filepath.Join(runDir, clipagiqa.BestDir), filepath.Join(runDir, clipagiqa.LastDir), c.String("clip"), filepath.Join(runDir, clipagiqa.BestDir))
	fmt.Fprintf(w, "wall time %.1fs\n", time.Since(start).Seconds())
	return nil
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
