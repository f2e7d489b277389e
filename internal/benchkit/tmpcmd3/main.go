package main

import (
	"fmt"
	"os"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

func main() {
	torch.SetNumThreads(2)
	cm, _ := clip.Load(os.Args[1], clip.Options{})
	tok, _ := tokenizer.Default()
	m, _ := clipagiqa.New(cm, tok, clipagiqa.DefaultConfig())
	for i := 0; i < 8; i++ {
		s := torch.NewScope()
		t := time.Now()
		f := m.TextFeatures(s)
		t1 := time.Since(t)
		loss := s.Sum(s.Square(f), false)
		if err := loss.Backward(); err != nil {
			panic(err)
		}
		fmt.Printf("fwd %.4f total %.4f\n", t1.Seconds(), time.Since(t).Seconds())
		for _, p := range m.Params() {
			p.ZeroGrad()
		}
		s.Close()
	}
}
