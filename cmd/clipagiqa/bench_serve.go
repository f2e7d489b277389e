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
	}, serveScorerFlags(benchServeCLIP, benchServeCheckpoint, `; "random" benchmarks a random-weight head`)...)
	return &cli.Command{
		Name:  "bench-serve",
		Usage: "load-test the HTTP server in-process on loopback: throughput, p50/p99 latency, batch fill",
		Description: "Starts `serve` on 127.0.0.1:0 and drives it with closed-loop Go clients at each\n" +
			"concurrency level, posting synthetic 640×480 JPEGs. Defaults use the tiny reference fixture.",
		Flags: flags,
		Action: func(c *cli.Context) error {
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
