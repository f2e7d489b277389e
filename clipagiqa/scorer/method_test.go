package scorer

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/torch"
)

// toyHead scores an image as its mean preprocessed pixel plus a prepared
// offset plus the length of its prompt: every part of the contract shows in
// the score.
type toyHead struct {
	offset float32
	closed *bool
}

func (h *toyHead) Prepare(s *torch.Scope) *torch.Tensor { return s.FromFloat32([]float32{h.offset}, 1) }
func (h *toyHead) Score(s *torch.Scope, pixels, prepared *torch.Tensor, prompts []string) *torch.Tensor {
	n := pixels.Shape()[0]
	lens := make([]float32, n)
	for i := range lens {
		if prompts != nil {
			lens[i] = float32(len(prompts[i]))
		}
	}
	mean := s.Mean(pixels, false, 1, 2, 3)
	return s.Add(s.Add(mean, prepared), s.FromFloat32On(pixels.Device(), lens, n))
}
func (h *toyHead) UsesPrompt() bool { return true }
func (h *toyHead) Close()           { *h.closed = true }

// TestRegisteredToyMethodScores: a method registered here (no edits in the
// scorer) is looked up by name and scores through the Scorer's batching,
// with its prepared tensor and per-image prompts; its checkpoint reaches
// Open, and Close reaches the head.
func TestRegisteredToyMethodScores(t *testing.T) {
	closed := false
	var gotCheckpoint string
	if err := method.Register(method.Method{Name: "toy-mean", Description: "test", Open: func(ck string, _ int) (method.HeadLoader, error) {
		gotCheckpoint = ck
		return func(*clip.Model, method.Tokenizer) (method.ScoringHead, error) {
			return &toyHead{offset: 0.25, closed: &closed}, nil
		}, nil
	}}); err != nil {
		t.Fatal(err)
	}
	if err := method.Register(method.Method{Name: "toy-mean", Open: func(string, int) (method.HeadLoader, error) { return nil, nil }}); err == nil ||
		!strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second registration: %v, want already registered", err)
	}
	if !strings.Contains(strings.Join(method.Names(), ","), "toy-mean") {
		t.Fatalf("MethodNames %v lacks toy-mean", method.Names())
	}
	sc, err := loadDefault(tinyCLIP, "toy.ckpt", WithMethod("toy-mean"))
	if err != nil {
		t.Fatal(err)
	}
	if gotCheckpoint != "toy.ckpt" || !sc.UsesPrompt() || sc.Method() != "toy-mean" {
		t.Fatalf("checkpoint %q UsesPrompt %v Method %q", gotCheckpoint, sc.UsesPrompt(), sc.Method())
	}
	img := fixtureImages(t)[0]
	got, err := sc.ScoreBytesPrompt(context.Background(), img, "a red fox")
	if err != nil {
		t.Fatal(err)
	}
	m, err := imageprep.Decode(img, imageprep.DefaultMaxPixels)
	if err != nil {
		t.Fatal(err)
	}
	px, err := imageprep.CenterTransform(m, imageprep.DefaultOptions(sc.Resolution()))
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, v := range px {
		sum += float64(v)
	}
	want := sum/float64(len(px)) + 0.25 + float64(len("a red fox"))
	if math.Abs(got-want) > 1e-4 {
		t.Fatalf("toy score %v, want %v", got, want)
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if !closed {
		t.Fatal("Scorer.Close did not close the head")
	}
}
