package train_test

import (
	"context"
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/torch/optim"
)

// A model implements train.Model (see the toy model in the tests, or
// clipagiqa/train/ipiqatrain); the trainer does the rest.
func ExampleRun() {
	var model train.Model      // e.g. ipiqatrain.New(...)
	var opt optim.Optimizer    // e.g. optim.NewAdamW(groups, opts) over model.Trainable()
	var valTargets [][]float64 // one row of MOS per validation sample
	if model == nil {
		return
	}
	cfg := train.Config{
		Epochs: 100, BatchSize: 32, Seed: 1,
		Train:     []int{0, 1, 2 /* ... training-set positions */},
		Loss:      train.MSE,
		Optimizer: opt,
		Schedule:  optim.WarmupCosine{Warmup: 1, StartFactor: 0.1, Total: 100},
		Eval:      []train.EvalPart{{Name: "val", Targets: valTargets}},
		Select:    train.Selection{Part: "val", Metric: "srcc"},
		OutDir:    "runs/x", Resume: true, Plots: true,
	}
	res, err := train.Run(context.Background(), model, cfg, train.Callbacks{
		OnEpoch: func(e train.EpochReport) { fmt.Println(e.Epoch, e.TrainLoss, e.Best) },
	})
	if err != nil {
		fmt.Println(err) // an interrupted run: res.Interrupted; continue with Resume
		return
	}
	fmt.Println(res.BestEpoch, res.BestLabel)
}
