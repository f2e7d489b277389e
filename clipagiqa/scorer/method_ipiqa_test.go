package scorer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
)

// ipiqaScoreAtol is the fixture README's tolerance for scores after the
// training steps (checkpoint_best.pth holds the weights after them).
const ipiqaScoreAtol = 5e-5

// ipiqaFixtureInputs are the fixture's original images (the Scorer runs the
// official squash resize itself) and their prompts, image k with prompt k.
func ipiqaFixtureInputs(t *testing.T) (images [][]byte, prompts []string, want [][]float64) {
	t.Helper()
	f, err := ipiqaref.Load()
	if err != nil {
		t.Fatal(err)
	}
	for k := range ipiqaref.Images {
		b, err := os.ReadFile(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)))
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, b)
		prompts = append(prompts, f.Prompts[k].Text)
	}
	raw, err := os.ReadFile(ipiqaref.Path("expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ck struct {
		Checkpoint struct {
			Reload struct {
				Scores [][]float64 `json:"scores"`
			} `json:"reload"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal(raw, &ck); err != nil {
		t.Fatal(err)
	}
	if len(ck.Checkpoint.Reload.Scores) != ipiqaref.Images {
		t.Fatalf("expected.json: %d reload scores", len(ck.Checkpoint.Reload.Scores))
	}
	return images, prompts, ck.Checkpoint.Reload.Scores
}

// TestIPIQAMethodScoresOfficialCheckpoint: LoadScorer with MethodIPIQA on
// the official checkpoint_best.pth reproduces the official reload's scores
// (quality and alignment) from the original images, through the Scorer's
// batching, in one batch and one image at a time.
func TestIPIQAMethodScoresOfficialCheckpoint(t *testing.T) {
	images, prompts, want := ipiqaFixtureInputs(t)
	sc, err := loadDefault(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("checkpoint_best.pth"), WithMethod(MethodIPIQA), WithMaxBatch(8))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if !sc.UsesPrompt() || sc.Resolution() != 512 || strings.Join(sc.Outputs(), ",") != "quality,alignment" {
		t.Fatalf("UsesPrompt %v Resolution %d Outputs %v", sc.UsesPrompt(), sc.Resolution(), sc.Outputs())
	}
	ctx := context.Background()
	outs, errs := sc.ScoreBatchOutputs(ctx, images, prompts)
	worst := 0.0
	for i := range images {
		if errs[i] != nil {
			t.Fatalf("image %d: %v", i, errs[i])
		}
		for j := range 2 {
			worst = math.Max(worst, math.Abs(outs[i][j]-want[i][j]))
		}
	}
	t.Logf("batch: max abs error %.2g (tolerance %g)", worst, ipiqaScoreAtol)
	if worst > ipiqaScoreAtol {
		t.Fatalf("scores off by %g > %g: got %v want %v", worst, ipiqaScoreAtol, outs, want)
	}
	q, err := sc.ScoreBytesPrompt(ctx, images[3], prompts[3])
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(q-want[3][0]) > ipiqaScoreAtol {
		t.Fatalf("single image quality %v, want %v", q, want[3][0])
	}
}

// TestIPIQAMethodBadInputs: a missing prompt, a ViT CLIP, a checkpoint that
// does not fit the CLIP and a missing checkpoint are clear errors.
func TestIPIQAMethodBadInputs(t *testing.T) {
	images, prompts, _ := ipiqaFixtureInputs(t)
	ck := ipiqaref.Path("checkpoint_best.pth")
	sc, err := loadDefault(ipiqaref.Path("tiny_clip_rn_fp16.pt"), ck, WithMethod(MethodIPIQA))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	ctx := context.Background()
	if _, err := sc.ScoreBytes(ctx, images[0]); !errors.Is(err, ErrNoPrompt) {
		t.Fatalf("ScoreBytes without prompt: %v, want ErrNoPrompt", err)
	}
	if _, err := sc.ScoreBytesPrompt(ctx, images[0], ""); !errors.Is(err, ErrNoPrompt) {
		t.Fatalf("empty prompt: %v, want ErrNoPrompt", err)
	}
	_, errs := sc.ScoreBatchOutputs(ctx, images[:2], []string{prompts[0], ""})
	if errs[0] != nil || !errors.Is(errs[1], ErrNoPrompt) {
		t.Fatalf("batch with one missing prompt: %v", errs)
	}
	if _, errs := sc.ScoreBatch(ctx, images[:1]); !errors.Is(errs[0], ErrNoPrompt) {
		t.Fatalf("ScoreBatch without prompts: %v, want ErrNoPrompt", errs[0])
	}

	for _, tc := range []struct {
		name, clip, checkpoint, want string
	}{
		{"ViT CLIP", tinyCLIP, ck, "needs a ResNet CLIP"},
		{"checkpoint of another RN", "../../testdata/clipgen/tiny-rn/clip.pt", ck, "does not fit CLIP"},
		{"no checkpoint", ipiqaref.Path("tiny_clip_rn_fp16.pt"), "", "needs a checkpoint"},
		{"checkpoint directory", ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Dir(), "checkpoint file"},
		{"not a checkpoint", ipiqaref.Path("tiny_clip_rn_fp16.pt"), ipiqaref.Path("init_new_params.pth"), "not an IP-IQA checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := loadDefault(tc.clip, tc.checkpoint, WithMethod(MethodIPIQA))
			if err == nil {
				sc.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}
