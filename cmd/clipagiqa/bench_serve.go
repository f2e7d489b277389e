package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clipagiqa/clipagiqa/internal/benchkit"
	"github.com/clipagiqa/clipagiqa/serve"
	"github.com/urfave/cli/v2"
)

// The tiny reference fixture, so that `make bench-serve` needs no flags.
const (
	benchServeCLIP       = "testdata/clip-agiqa-ref/tiny_clip_vit_fp16.pt"
	benchServeCheckpoint = "testdata/clip-agiqa-ref"
)

func parseConcurrency(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad concurrency level %q: want positive integers separated by commas", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func benchServeCommand() *cli.Command {
	flags := append([]cli.Flag{
		&cli.StringFlag{Name: "concurrency", Value: "1,4,16", Usage: "client counts, one level each"},
		&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "time per level"},
		&cli.StringFlag{Name: "out", Value: "bench/results", Usage: "directory for serve-<model>.md (empty: print only)"},
		&cli.StringFlag{Name: "model", Usage: "name in the output file (default: the CLIP file name)"},
		&cli.BoolFlag{Name: "no-offline", Usage: "skip the offline encoder and decode references (and the ratios)"},
		&cli.StringFlag{Name: "cache-dir", Usage: "where --clip vitb16 keeps its generated weights (default: the user cache dir)"},
	}, serveScorerFlags(benchServeCLIP, benchServeCheckpoint, `; "random" benchmarks a random-weight head`)...)
	return &cli.Command{
		Name:  "bench-serve",
		Usage: "load-test the HTTP server in-process on loopback: throughput, p50/p99 latency, batch fill",
		Description: "Starts `serve` on 127.0.0.1:0 and drives it with closed-loop Go clients at each\n" +
			"concurrency level, posting synthetic 640×480 JPEGs. Then, in the same run, times the fused image\n" +
			"encoder offline at each level's mean batch and one image's decode, and prints the ratios:\n" +
			"throughput / offline, p99 / mean batch time, and (1 client) p50 / (batch-1 encoder + decode).\n" +
			"Defaults use the tiny reference fixture; the full-size run is\n" +
			"  clipagiqa bench-serve --clip vitb16 --checkpoint random --model vitb16-random --duration 60s\n" +
			"(--clip vitb16: a random ViT-B/16 generated once with testdata/gen/make_clip.py).",
		Flags: flags,
		Action: func(c *cli.Context) error {
			clipPath := c.String("clip")
			if clipPath == "vitb16" {
				p, err := benchkit.EnsureViTB16(benchkit.Options{Root: ".", Cache: c.String("cache-dir"), Log: c.App.ErrWriter})
				if err != nil {
					return fmt.Errorf("--clip vitb16: %w", err)
				}
				if err := c.Set("clip", p); err != nil {
					return err
				}
				if c.String("model") == "" {
					_ = c.Set("model", "vitb16")
				}
			}
			opts, err := serveScorerOptions(c)
			if err != nil {
				return err
			}
			levels, err := parseConcurrency(c.String("concurrency"))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			w := c.App.Writer
			rep, err := serve.Bench(ctx, serve.BenchConfig{
				CLIP: c.String("clip"), Checkpoint: c.String("checkpoint"), Concurrency: levels,
				Duration: c.Duration("duration"), Out: c.String("out"), Model: c.String("model"), Scorer: opts,
				NoOffline: c.Bool("no-offline"),
				Progress: func(r serve.LoadResult) {
					fmt.Fprintf(os.Stderr, "concurrency %d: %.1f img/s, p50 %v, p99 %v, mean batch %.2f, errors %d\n",
						r.Concurrency, r.Throughput, r.P50, r.P99, r.MeanBatch, r.Errors)
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprint(w, rep.Markdown)
			if rep.Path != "" {
				fmt.Fprintf(w, "\nwrote %s\n", rep.Path)
			}
			return nil
		},
	}
}
