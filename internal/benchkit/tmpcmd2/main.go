package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
)

func main() {
	torch.SetNumThreads(2)
	cm, _ := clip.Load(os.Args[1], clip.Options{})
	cm.EnableFused()
	tok, _ := tokenizer.Default()
	m, _ := clipagiqa.New(cm, tok, clipagiqa.DefaultConfig())
	n, _ := strconv.Atoi(os.Args[2])
	ds := &data.Dataset{Name: "x", Root: "/root/.cache/clipagiqa-bench/jpegs/n2385"}
	for i := 0; i < n; i++ {
		p := filepath.Join(ds.Root, fmt.Sprintf("img_%05d.jpg", i))
		ds.Samples = append(ds.Samples, data.Sample{Name: p, Path: p, MOS: float64(i % 5)})
	}
	cfg := clipagiqa.DefaultTrainConfig()
	cfg.Epochs = 3
	cfg.FeatureCache = os.Args[3]
	var last time.Duration
	var d []float64
	t := time.Now()
	res, err := clipagiqa.Train(context.Background(), m, clipagiqa.Datasets{Train: ds}, cfg, clipagiqa.Callbacks{
		OnStep: func(si clipagiqa.StepInfo) {
			if si.Step > 1 {
				d = append(d, (si.Elapsed - last).Seconds())
			}
			last = si.Elapsed
		},
		OnEpoch: func(e clipagiqa.EpochReport) { fmt.Println("epoch", e.Epoch, e.Seconds, time.Since(t)) },
	})
	fmt.Println(err, time.Since(t), res.Cache)
	sort.Float64s(d)
	fmt.Println(len(d), d[0], d[len(d)/2], d[len(d)-1])
	sum := 0.0
	for _, x := range d {
		sum += x
	}
	fmt.Println("mean", sum/float64(len(d)))
}
