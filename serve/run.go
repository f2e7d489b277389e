package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
)

// RunConfig is what `clipagiqa serve` needs.
type RunConfig struct {
	CLIP, Checkpoint string
	Addr             string // default 127.0.0.1:8080
	Scorer           []clipagiqa.ScorerOption
	Server           Config
	// Listening, if set, is called with the bound address once the socket is open.
	Listening func(addr net.Addr)
}

// Run listens on cfg.Addr at once (so /healthz answers while the model
// loads), loads and warms up the scorer, marks the server ready and serves
// until ctx ends; then it finishes in-flight requests and frees the model.
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	srv := New(cfg.Server)
	log := srv.log
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	if cfg.Listening != nil {
		cfg.Listening(ln.Addr())
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var sc *clipagiqa.Scorer
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		var err error
		sc, err = clipagiqa.LoadScorer(cfg.CLIP, cfg.Checkpoint, cfg.Scorer...)
		if err != nil {
			cancel(err)
			return
		}
		log.Info("model loaded", "clip", cfg.CLIP, "checkpoint", cfg.Checkpoint, "method", sc.Method(),
			"max_batch", sc.MaxBatch(), "seconds", time.Since(start).Seconds())
		if err := sc.Warmup(ctx); err != nil {
			cancel(err)
			return
		}
		if ctx.Err() == nil {
			srv.SetBackend(sc)
			log.Info("ready", "seconds", time.Since(start).Seconds())
		}
	}()
	serveErr := srv.Serve(ctx, ln)
	cancel(nil)
	<-done
	if sc != nil {
		sc.Close()
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("serve: %w", cause)
	}
	return serveErr
}
