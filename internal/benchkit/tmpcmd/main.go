package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/torch"
)

func main() {
	th, _ := strconv.Atoi(os.Args[2])
	torch.SetNumThreads(th)
	m, err := clip.Load(os.Args[1], clip.Options{})
	if err != nil {
		panic(err)
	}
	r := int64(m.Config.ImageResolution)
	for _, a := range os.Args[3:] {
		b, _ := strconv.Atoi(a[1:])
		fused := a[0] == 'f'
		if fused {
			m.EnableFused()
		} else {
			m.DisableFused()
		}
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		px := s.Randn(torch.Float32, int64(b), 3, r, r)
		best := 1e9
		for i := 0; i < 3; i++ {
			sub := s.Sub()
			t := time.Now()
			m.EncodeImage(sub, px)
			d := time.Since(t).Seconds()
			sub.Close()
			if i > 0 && d < best {
				best = d
			}
		}
		if s.Err() != nil {
			panic(s.Err())
		}
		s.Close()
		fmt.Printf("%s batch %d: %.3f s  %.2f img/s\n", map[bool]string{true: "fused", false: "plain"}[fused], b, best, float64(b)/best)
	}
}
