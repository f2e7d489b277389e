package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/torch/dist"
	"github.com/urfave/cli/v2"
)

// joinTrainingGroup joins the data-parallel group torchrun's variables
// describe (a single-process group without them). Ranks other than 0 print
// nothing: rank 0 speaks for the run, errors still reach each one's stderr.
func joinTrainingGroup(c *cli.Context) (*dist.Group, error) {
	env, err := dist.EnvFromOS()
	if err != nil {
		return nil, err
	}
	opts := dist.Options{Backend: dist.Gloo}
	if env.Distributed() {
		dev := rankDevice(c.String("device"), env)
		if dev != c.String("device") {
			if err := c.Set("device", dev); err != nil {
				return nil, err
			}
		}
		if strings.HasPrefix(dev, "cuda") && dist.HasNCCL() {
			opts.Backend = dist.NCCL
		}
	}
	g, err := dist.Init(env, opts)
	if err != nil {
		return nil, err
	}
	if g.WorldSize() > 1 {
		if g.IsMain() {
			fmt.Fprintf(c.App.ErrWriter, "data-parallel: %d ranks (%s, store %s:%d, collective timeout %v); batch %d = %d per rank\n",
				g.WorldSize(), opts.Backend, env.MasterAddr, env.MasterPort, g.Timeout(), c.Int("batch-size"), c.Int("batch-size")/g.WorldSize())
		} else {
			c.App.Writer, c.App.ErrWriter = io.Discard, io.Discard
		}
	}
	return g, nil
}

// reportAllReduce prints rank 0's gradient all-reduce costs of a
// data-parallel run (parsed by bench/dist.sh).
func reportAllReduce(w io.Writer, dp *dist.DataParallel, res *clipagiqa.TrainResult) {
	if res == nil {
		return
	}
	steps := 0
	var secs float64
	for _, h := range res.History[min(res.StartEpoch, len(res.History)):] {
		steps += h.Steps
		secs += h.Seconds
	}
	printAllReduce(w, dp, steps, secs)
}

// reportAllReduceIPIQA is reportAllReduce for the generic trainer's result,
// plus the BatchNorm buffer broadcasts.
func reportAllReduceIPIQA(w io.Writer, dp *dist.DataParallel, res *train.Result) {
	if res == nil {
		return
	}
	steps := 0
	var secs float64
	for _, h := range res.History[min(res.StartEpoch, len(res.History)):] {
		steps += h.Steps
		secs += h.Seconds
	}
	printAllReduce(w, dp, steps, secs)
	if b := dp.Stats().Buffers; dp != nil && dp.WorldSize() > 1 && b.Calls > 0 {
		fmt.Fprintf(w, "data-parallel: buffer broadcast %d bytes in %d calls (%d bytes/step), %.3fs\n",
			b.Bytes, b.Calls, b.Bytes/int64(max(steps, 1)), b.Elapsed.Seconds())
	}
}

func printAllReduce(w io.Writer, dp *dist.DataParallel, steps int, secs float64) {
	if dp == nil || dp.WorldSize() == 1 {
		return
	}
	st := dp.Stats()
	fmt.Fprintf(w, "data-parallel: all-reduce %d bytes in %d calls over %d steps (%d bytes/step), %.3fs of %.3fs training epochs (%.1f%%)\n",
		st.Bytes, st.Calls, steps, st.Bytes/int64(max(steps, 1)), st.Elapsed.Seconds(), secs, 100*st.Elapsed.Seconds()/max(secs, 1e-9))
}

// rankDevice maps a plain --device cuda to this rank's GPU, cuda:LOCAL_RANK,
// as torchrun scripts do; an explicit cuda:N or cpu is kept.
func rankDevice(flag string, env dist.Env) string {
	if flag == "cuda" && env.Distributed() {
		return fmt.Sprintf("cuda:%d", env.LocalRank)
	}
	return flag
}

// The generic trainer broadcasts BatchNorm buffers coalesced through it.
var _ train.BufferBroadcaster = (*dist.DataParallel)(nil)
