package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/clipagiqa/clipagiqa/internal/benchkit"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmark the Go implementation against a PyTorch eager reference (bench/reference.py, bench/ipiqa_reference.py) side by side",
		Description: "Runs both on the same weights, threads and batches and writes <out>/quick|full.md and .json:\n" +
			"image-encoder throughput (batch 1, 8, 32), scoring from JPEG files, training cost (feature cache off,\n" +
			"center, views=8) and the text path, peak RSS, and the machine's matmul floor; where available the image\n" +
			"encoder also against PyTorch 2.x (eager, torch.compile) and ONNX Runtime. Run it from the\n" +
			"repository root (it needs bench/reference.py and, without --clip in full mode, testdata/gen/make_clip.py).\n\n" +
			"Full mode then runs the IP-IQA benchmark (alone: --only ipiqa), writing <out>/ipiqa.md and .json: full-size RN50\n" +
			"IP-IQA at 512×512 with random weights, scoring (batch 1, 32) and one training step (batch 8, 32) against\n" +
			"bench/ipiqa_reference.py (the official computation in PyTorch eager), each side in its own process, interleaved,\n" +
			"with each side's peak RSS, the FLOPs per step and the projected hours of the paper's 100 epochs on this CPU.\n" +
			"A training batch whose projected memory does not fit in what the machine has available is skipped (and says so).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "tiny fixture model and fewer repetitions (under two minutes; no IP-IQA part)"},
			&cli.StringFlag{Name: "only", Usage: "run one part: `PART` clip-agiqa (quick.md/full.md) or ipiqa (ipiqa.md, about 15 minutes on 2 cores)"},
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
			&cli.IntSliceFlag{Name: "ipiqa-score-batches", Value: cli.NewIntSlice(1, 32), Usage: "IP-IQA scoring batch sizes"},
			&cli.IntSliceFlag{Name: "ipiqa-train-batches", Value: cli.NewIntSlice(8, 32), Usage: "IP-IQA training-step batch sizes"},
			&cli.IntFlag{Name: "ipiqa-rounds", Usage: "timed IP-IQA rounds per measurement, each side once per round (0: 6 for scoring at batch ≤ 8, else 1)"},
			&cli.Int64Flag{Name: "ipiqa-host-cache-mib", Usage: "Go side's host cache idle cap in MiB (0: none beyond its peak rule, the CLI's default; -1: libtorch's allocator, and no third process)"},
			&cli.BoolFlag{Name: "ipiqa-no-solo", Usage: "leave an IP-IQA training batch that the shared processes cannot hold unmeasured, instead of measuring each side alone in a fresh process at the end"},
			&cli.IntFlag{Name: "ipiqa-profile-batch", Usage: "batch of the closing IP-IQA profile (time by part on each side; 0: 2, negative: none)"},
			// A fresh process scores for the RSS measurement: these run it.
			&cli.StringFlag{Name: "child", Hidden: true},
			&cli.StringFlag{Name: "files", Hidden: true},
			&cli.IntFlag{Name: "batch", Hidden: true, Value: 32},
		},
		Action: func(c *cli.Context) error {
			switch c.String("child") {
			case "":
			case "ipiqa":
				if n := c.Int("threads"); n > 0 {
					if err := torch.SetNumThreads(n); err != nil {
						return err
					}
					torch.SetBLASThreads(n)
				}
				return benchkit.ServeIPIQA(c.Context, os.Stdin, c.App.Writer)
			case "score":
				res, err := benchkit.ScoreFiles(c.Context, benchkit.ChildOptions{CLIP: c.String("clip"),
					Files: c.String("files"), Threads: c.Int("threads"), Batch: c.Int("batch")})
				if err != nil {
					return err
				}
				return json.NewEncoder(c.App.Writer).Encode(res)
			default:
				return fmt.Errorf("bench: unknown child phase %q", c.String("child"))
			}
			only := c.String("only")
			if only != "" && only != "clip-agiqa" && only != "ipiqa" {
				return fmt.Errorf("bench: --only %q, want clip-agiqa or ipiqa", only)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			if only != "ipiqa" {
				if err := benchCLIPAGIQA(c, self); err != nil {
					return err
				}
			}
			if only == "ipiqa" || (only == "" && !c.Bool("quick")) {
				rep, err := benchkit.RunIPIQA(c.Context, benchkit.IPIQAOptions{
					Out: c.String("out"), Threads: c.Int("threads"), Root: c.String("root"), Python: c.String("python"),
					Cache: c.String("cache-dir"), Child: []string{self, "bench"}, Log: c.App.ErrWriter,
					ScoreBatches: c.IntSlice("ipiqa-score-batches"), TrainBatches: c.IntSlice("ipiqa-train-batches"),
					Rounds: c.Int("ipiqa-rounds"), ProfileBatch: c.Int("ipiqa-profile-batch"), HostCacheMiB: c.Int64("ipiqa-host-cache-mib"),
					NoSolo: c.Bool("ipiqa-no-solo"),
				})
				if err != nil {
					return err
				}
				rep.Markdown(c.App.Writer)
			}
			return nil
		},
	}
}

// benchCLIPAGIQA is the CLIP-AGIQA part (quick.md or full.md).
func benchCLIPAGIQA(c *cli.Context, self string) error {
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
}
