package clipagiqa_test

import (
	"context"
	"fmt"
	"os"

	agiqa "github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Embedding the scorer in a Go program: load once, score image bytes from
// any goroutine, close at the end. The README's "Use from Go" shows this code.
func ExampleLoadScorer() {
	device := torch.CPU
	if torch.CUDAAvailable() {
		device = torch.Device{Type: torch.CUDA} // a CUDA libtorch under our libraries
	}
	scorer, err := agiqa.LoadScorer(
		"../testdata/clip-agiqa-ref/tiny_clip_vit.pt", // OpenAI CLIP weights (ViT-B-16.pt)
		"../testdata/clip-agiqa-ref",                  // CLIP-AGIQA checkpoint directory
		agiqa.WithDevice(device),
		agiqa.WithThreads(2)) // libtorch CPU threads for the model
	if err != nil {
		fmt.Println("load:", err)
		return
	}
	defer scorer.Close()

	img, err := os.ReadFile("../testdata/clip-agiqa-ref/img_0.png") // JPEG, PNG, …
	if err != nil {
		fmt.Println(err)
		return
	}
	score, err := scorer.ScoreBytes(context.Background(), img)
	if err != nil {
		fmt.Println("score:", err)
		return
	}
	fmt.Printf("score %.5f\n", score)
	// Output: score 0.02825
}
