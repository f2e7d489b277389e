package optim_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/optim"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// IP-IQA-style groups (no weight decay for biases and norms, the head at
// lr × 10), AdamW, a per-step warm-up + cosine schedule, and a checkpoint of
// the optimizer that Python's optimizer.load_state_dict reads.
func Example() {
	newParam := func(name string, vals ...float32) optim.Param {
		t, _ := torch.FromFloat32(vals, int64(len(vals)))
		_ = t.SetRequiresGrad(true)
		return optim.Param{Name: name, T: t}
	}
	params := []optim.Param{
		newParam("backbone.weight", 1, 2),
		newParam("backbone.norm.bias", 0.1, 0.2),
		newParam("head.weight", -1, 1),
	}
	defer func() {
		for _, p := range params {
			p.T.Close()
		}
	}()
	groups, err := optim.GroupBy(params, func(name string) int {
		switch {
		case strings.HasPrefix(name, "head."):
			return 2
		case strings.HasSuffix(name, ".bias") || strings.Contains(name, "norm"):
			return 1
		}
		return 0
	}, optim.ParamGroup{}, optim.ParamGroup{WeightDecay: optim.Decay(0)}, optim.ParamGroup{LRScale: 10})
	if err != nil {
		fmt.Println(err)
		return
	}
	opts := optim.AdamWDefaults()
	opts.LR = 1e-3
	opt, err := optim.NewAdamW(groups, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer opt.Close()
	sched := optim.WarmupCosine{Warmup: 2, StartFactor: 0.5, Total: 4}
	for step := 0; step < 4; step++ {
		optim.Apply(opt, sched, optim.PerStep.Tick(0, 4, step))
		s := torch.NewScope()
		var loss *torch.Tensor
		for _, p := range params {
			sq := s.Sum(s.Mul(p.T, p.T), false)
			if loss == nil {
				loss = sq
			} else {
				loss = s.Add(loss, sq)
			}
		}
		if err := loss.Backward(); err != nil {
			fmt.Println(err)
		}
		s.Close()
		if err := opt.Step(); err != nil {
			fmt.Println(err)
		}
		_ = opt.ZeroGrad()
		fmt.Printf("step %d: lr %.2g %.2g %.2g\n", step, opt.LR(0), opt.LR(1), opt.LR(2))
	}
	sd, err := opt.StateDict()
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, _ := os.MkdirTemp("", "optim-example")
	defer os.RemoveAll(dir)
	root := ptfile.NewDict(ptfile.KindDict)
	root.Set("optimizer", sd)
	if err := ptfile.SaveValue(filepath.Join(dir, "ckpt.pt"), root); err != nil {
		fmt.Println(err)
	}
	// Output:
	// step 0: lr 0.0005 0.0005 0.005
	// step 1: lr 0.00075 0.00075 0.0075
	// step 2: lr 0.001 0.001 0.01
	// step 3: lr 0.0005 0.0005 0.005
}
