package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/serve"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/urfave/cli/v2"
)

// serveScorerFlags are the model and batching flags shared by serve and bench-serve.
func serveScorerFlags(clipDefault, ckptDefault, ckptNote string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "clip", Value: clipDefault, Usage: "CLIP weights `FILE` (OpenAI TorchScript .pt or a torch.save state dict)"},
		&cli.StringFlag{Name: "checkpoint", Value: ckptDefault, Usage: "CLIP-AGIQA checkpoint directory (ours or the official prompt_learner/ + regression/ layout), or for ipiqa an official checkpoint_best.pth" + ckptNote},
		&cli.IntFlag{Name: "epoch", Usage: "epoch of an official checkpoint directory (0: the last)"},
		methodFlag(),
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "cpu, cuda or cuda:N"},
		&cli.StringFlag{Name: "precision", Value: "fp32", Usage: "CLIP compute precision: fp32, fp16 or bf16 (half precisions need CUDA)"},
		&cli.IntFlag{Name: "max-batch", Value: 32, Usage: "most images per device batch"},
		&cli.DurationFlag{Name: "max-wait", Value: clipagiqa.DefaultMaxWait, Usage: "how long a request waits for others to share its batch"},
		&cli.IntFlag{Name: "queue", Usage: "requests waiting for the device before 503 (0: 8 × max batch)"},
		maxPixelsFlag(), // one default everywhere; 422 above it
		threadsFlag, hostCacheFlag,
	}
}

func serveScorerOptions(c *cli.Context) ([]clipagiqa.ScorerOption, error) {
	dev, err := torch.ParseDevice(c.String("device"))
	if err != nil {
		return nil, err
	}
	prec, err := torch.ParsePrecision(c.String("precision"))
	if err != nil {
		return nil, err
	}
	if c.String("clip") == "" {
		return nil, fmt.Errorf("--clip is required")
	}
	if err := applyHostCache(c); err != nil {
		return nil, err
	}
	// All cores for the model by default: a batch is the unit of work.
	threads := c.Int("threads")
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return []clipagiqa.ScorerOption{
		clipagiqa.WithDevice(dev), clipagiqa.WithPrecision(prec), clipagiqa.WithEpoch(c.Int("epoch")),
		clipagiqa.WithMethod(c.String("method")), clipagiqa.WithMaxBatch(c.Int("max-batch")),
		clipagiqa.WithMaxWait(c.Duration("max-wait")), clipagiqa.WithQueueSize(c.Int("queue")),
		clipagiqa.WithMaxPixels(c.Int64("max-pixels")), clipagiqa.WithThreads(threads), clipagiqa.WithFused(!c.Bool("no-fused")),
	}, nil
}

func serveCommand() *cli.Command {
	flags := append([]cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address"},
		&cli.Int64Flag{Name: "max-bytes", Value: serve.DefaultMaxBytes, Usage: "largest request body in bytes (413 above)"},
		&cli.IntFlag{Name: "max-parts", Value: 64, Usage: "most files in one multipart request"},
		&cli.DurationFlag{Name: "timeout", Value: serve.DefaultTimeout, Usage: "per-request limit for upload and scoring (408/504 after)"},
		&cli.IntFlag{Name: "max-inflight", Value: 1024, Usage: "score requests served at once before 503"},
		&cli.DurationFlag{Name: "shutdown-timeout", Value: serve.DefaultTimeout, Usage: "how long SIGTERM waits for in-flight requests"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error (JSON logs on stderr)"},
	}, serveScorerFlags("", "", "")...)
	return &cli.Command{
		Name:  "serve",
		Usage: "serve image quality scores over HTTP (POST /v1/score, GET /v1/info, a browser page at /, /openapi.json, /healthz, /readyz, /metrics)",
		Description: "POST /v1/score takes a raw image body (Content-Type image/* or application/octet-stream;\n" +
			"?name= labels it, ?prompt= gives its prompt) or multipart/form-data with one or more files\n" +
			"(and optional text parts named prompt, paired with the files in order), and answers\n" +
			`{"results":[{"image":name,"score":x}]}` + ". Concurrent requests share device batches.\n" +
			"--method ipiqa needs every image's prompt (else 400 missing_prompt) and adds \"alignment\" for a\n" +
			"2-output checkpoint; /v1/info says the method, uses_prompt and the outputs.\n" +
			"Bad input gets a 4xx JSON error {\"error\":message,\"code\":stable-code}; a full queue 503 with\n" +
			"Retry-After. GET / is a page to drop images on; GET /openapi.json documents the API (Go client:\n" +
			"package serve/client). SIGTERM/SIGINT stop accepting connections and finish the requests in flight.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			opts, err := serveScorerOptions(c)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return serve.Run(ctx, serve.RunConfig{
				CLIP: c.String("clip"), Checkpoint: c.String("checkpoint"), Addr: c.String("addr"), Scorer: opts,
				Server: serve.Config{
					Model:    modelName(c.String("clip")),
					MaxBytes: c.Int64("max-bytes"), MaxParts: c.Int("max-parts"), Timeout: c.Duration("timeout"),
					MaxInFlight: c.Int("max-inflight"), ShutdownTimeout: c.Duration("shutdown-timeout"),
					Logger: serve.NewJSONLogger(os.Stderr, level),
				},
			})
		},
	}
}

// modelName is the CLIP file name without its extension, for /v1/info.
func modelName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}
