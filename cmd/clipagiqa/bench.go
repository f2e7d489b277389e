package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/clipagiqa/clipagiqa/internal/benchkit"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmark the Go implementation against a PyTorch eager reference (bench/reference.py) side by side",
		Description: "Runs both on the same weights, threads and batches and writes <out>/quick|full.md and .json:\n" +
			"image-encoder throughput (batch 1, 8, 32), scoring from JPEG files, training cost (feature cache off,\n" +
			"center, views=8) and the text path, peak RSS, and the machine's matmul floor; where available the image\n" +
			"encoder also against PyTorch 2.x (eager, torch.compile) and ONNX Runtime. Run it from the\n" +
			"repository root (it needs bench/reference.py and, without --clip in full mode, testdata/gen/make_clip.py).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "tiny fixture model and fewer repetitions (under two minutes)"},
			&cli.StringFlag{Name: "clip", Usage: "CLIP weights `FILE` (default: the tiny fixture with --quick, else a random ViT-B/16 generated once into the cache dir)"},
			&cli.StringFlag{Name: "out", Value: "bench/results", Usage: "results `DIR`"},
			&cli.IntFlag{Name: "threads", Usage: "libtorch and OpenBLAS threads for both sides (0: all cores)"},
			&cli.IntFlag{Name: "images", Value: benchkit.AGIQA3KTrainImages, Usage: "generated 512×512 JPEGs in the training set"},
			&cli.IntFlag{Name: "score-images", Usage: "images scored end to end (0: 256 with --quick, else 96)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "where generated weights and JPEGs are kept (default: the user cache dir)"},
			&cli.StringFlag{Name: "python", Value: "/usr/bin/python3", Usage: "Python with torch for the reference"},
			&cli.StringFlag{Name: "root", Value: ".", Usage: "repository root (bench/, testdata/)"},
			&cli.StringFlag{Name: "torch2", Usage: "`COMMAND` that runs a program where PyTorch 2.x is, for the PyTorch 2 eager and torch.compile columns (default: scripts/trixie-run.sh when its Debian trixie root exists and we are root; off: none)"},
			&cli.StringFlag{Name: "onnx", Usage: "`DIR` whose node_modules holds onnxruntime-node, for the ONNX Runtime column (default: <cache-dir>/onnxruntime; off: none)"},
			&cli.StringFlag{Name: "node", Value: "node", Usage: "node `BINARY` for the ONNX Runtime reference"},
			// A fresh process scores for the RSS measurement: these run it.
			&cli.StringFlag{Name: "child", Hidden: true},
			&cli.StringFlag{Name: "files", Hidden: true},
			&cli.IntFlag{Name: "batch", Hidden: true, Value: 32},
		},
		Action: func(c *cli.Context) error {
			if c.String("child") != "" {
				if c.String("child") != "score" {
					return fmt.Errorf("bench: unknown child phase %q", c.String("child"))
				}
				res, err := benchkit.ScoreFiles(c.Context, benchkit.ChildOptions{CLIP: c.String("clip"),
					Files: c.String("files"), Threads: c.Int("threads"), Batch: c.Int("batch")})
				if err != nil {
					return err
				}
				return json.NewEncoder(c.App.Writer).Encode(res)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			rep, err := benchkit.Run(c.Context, benchkit.Options{
				Quick: c.Bool("quick"), CLIP: c.String("clip"), Out: c.String("out"), Threads: c.Int("threads"),
				Images: c.Int("images"), Score: c.Int("score-images"), Cache: c.String("cache-dir"),
				Root: c.String("root"), Python: c.String("python"), Child: []string{self, "bench"}, Log: c.App.ErrWriter,
				Torch2: c.String("torch2"), ONNX: c.String("onnx"), Node: c.String("node"),
			})
			if err != nil {
				return err
			}
			rep.Markdown(c.App.Writer)
			return nil
		},
	}
}
