package explain

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/clipagiqa/agiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Model scores one preprocessed image and returns its attention maps.
type Model interface {
	// NeedsPrompt reports whether images are scored against a prompt.
	NeedsPrompt() bool
	// Preprocess reads an image file into the model's input, as its
	// evaluation path does.
	Preprocess(path string) ([]float32, error)
	// Explain scores one image (Preprocess's output) and returns its
	// scores and maps (Image and Prompt are the caller's to set).
	Explain(pixels []float32, prompt string) (*Explanation, error)
	// Close frees the model.
	Close()
}

// Method is an explainable scoring method, under its registry name.
type Method struct {
	Name string
	// NeedsPrompt: every image is scored against its prompt.
	NeedsPrompt bool
	// CheckpointFile: the checkpoint is one file (not a directory).
	CheckpointFile bool
	// Open loads the model from CLIP weights and a checkpoint.
	Open func(clipPath, checkpoint string, o Options) (Model, error)
}

// methods are the explainable methods; a new one adds its row here.
var methods = []Method{
	{Name: ipiqa.MethodName, NeedsPrompt: true, CheckpointFile: true,
		Open: func(clipPath, ck string, o Options) (Model, error) { return OpenIPIQA(clipPath, ck, o) }},
	{Name: agiqa.MethodName,
		Open: func(clipPath, ck string, o Options) (Model, error) { return OpenAGIQA(clipPath, ck, o) }},
}

// LookupMethod returns the explainable method called name.
func LookupMethod(name string) (Method, error) {
	for _, m := range methods {
		if m.Name == name {
			return m, nil
		}
	}
	return Method{}, fmt.Errorf("method %q cannot be explained: want one of %v", name, MethodNames())
}

// MethodNames lists the explainable methods.
func MethodNames() []string {
	names := make([]string, len(methods))
	for i, m := range methods {
		names[i] = m.Name
	}
	return names
}

// Options are where the models compute and what they read.
type Options struct {
	Device    torch.Device // zero value: CPU
	MaxPixels int64        // decompression-bomb guard; <= 0: imageprep.DefaultMaxPixels
	Epoch     int          // CLIP-AGIQA official checkpoint epoch (0: the highest)
}

// IPIQA explains IP-IQA: the cross-modal attention of the prompt's feature
// (txt_attnpool) and CLIP's attnpool attention of the mean token, over the
// ResNet feature map.
type IPIQA struct {
	m     *ipiqa.Model
	prep  imageprep.Options
	owned bool // Close frees m
}

// OpenIPIQA loads an official IP-IQA checkpoint (checkpoint_best.pth) on
// the ResNet CLIP at clipPath.
func OpenIPIQA(clipPath, checkpoint string, o Options) (*IPIQA, error) {
	m, err := ipiqa.Load(clipPath, checkpoint, o.Device, nil)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	prep := ipiqa.PreprocessOptions(m.Options().InputResolution)
	prep.MaxPixels = o.MaxPixels
	return &IPIQA{m: m, prep: prep, owned: true}, nil
}

// FromIPIQA explains an IP-IQA model that is already built (it stays the
// caller's; Close does not free it).
func FromIPIQA(m *ipiqa.Model, maxPixels int64) *IPIQA {
	prep := ipiqa.PreprocessOptions(m.Options().InputResolution)
	prep.MaxPixels = maxPixels
	return &IPIQA{m: m, prep: prep}
}

// NeedsPrompt is true: IP-IQA scores an image against its prompt.
func (x *IPIQA) NeedsPrompt() bool { return true }

// Preprocess is IP-IQA's eval transform (squashed to S×S, no crop).
func (x *IPIQA) Preprocess(path string) ([]float32, error) { return ipiqa.PreprocessFile(path, x.prep) }

// Explain scores the image against prompt and returns the two pools' maps.
func (x *IPIQA) Explain(pixels []float32, prompt string) (*Explanation, error) {
	size := x.prep.Size
	ids, err := x.m.Tokenize([]string{prompt})
	if err != nil {
		return nil, fmt.Errorf("explain: prompt: %w", err)
	}
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	px := s.FromFloat32(pixels, 1, 3, int64(size), int64(size))
	scores := x.m.ForwardIDs(s, px, ids, false).Scores
	visual, text := x.m.AttentionMaps(s, px, ids)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	e := &Explanation{Pixels: pixels, Size: size, Mean: x.prep.Mean, Std: x.prep.Std}
	sv, err := s.To(scores, torch.Float32, torch.CPU).Float32s()
	if err != nil {
		return nil, fmt.Errorf("explain: scores: %w", err)
	}
	for i, name := range []string{"quality", "alignment"}[:len(sv)] {
		e.Scores = append(e.Scores, Score{name, float64(sv[i])})
	}
	g := x.m.Grid()
	cross, err := headsOf(s, text)
	if err != nil {
		return nil, err
	}
	vis, err := headsOf(s, visual)
	if err != nil {
		return nil, err
	}
	e.Maps = []Map{
		{Kind: KindCross, Title: "cross-modal attention (prompt query)", Token0: TokenMean, Grid: g, Heads: cross},
		{Kind: KindVisual, Title: "visual attnpool (mean-token query)", Token0: TokenMean, Grid: g, Heads: vis},
	}
	return e, nil
}

// Close frees the model and its CLIP, unless it came from FromIPIQA.
func (x *IPIQA) Close() {
	if x.owned {
		x.m.Close()
	}
}

// headsOf copies weights [1, H, L] to [H][L] float32 on the host.
func headsOf(s *torch.Scope, w *torch.Tensor) ([][]float32, error) {
	shape := w.Shape()
	if len(shape) != 3 || shape[0] != 1 {
		return nil, fmt.Errorf("explain: attention weights have shape %v, want [1 H L]", shape)
	}
	v, err := s.To(w, torch.Float32, torch.CPU).Float32s()
	if err != nil {
		return nil, fmt.Errorf("explain: attention weights: %w", err)
	}
	h, l := int(shape[1]), int(shape[2])
	out := make([][]float32, h)
	for i := range out {
		out[i] = v[i*l : (i+1)*l]
	}
	return out, nil
}

// AGIQA explains CLIP-AGIQA on a ViT CLIP: the class-token attention of the
// image tower's last block (the token whose output becomes the feature the
// regressor reads).
type AGIQA struct {
	c    *clip.Model
	m    *agiqa.Model
	text *torch.Tensor // normalised learned-prompt features [K, E]
	prep imageprep.Options
}

// OpenAGIQA loads a CLIP-AGIQA checkpoint (ours or the official layout) on
// the ViT CLIP at clipPath.
func OpenAGIQA(clipPath, checkpoint string, o Options) (*AGIQA, error) {
	if checkpoint == "" {
		return nil, fmt.Errorf("explain: CLIP-AGIQA needs a checkpoint")
	}
	ck, err := agiqa.ReadCheckpoint(checkpoint, o.Epoch)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	c, err := clip.Load(clipPath, clip.Options{Device: o.Device})
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	if c.Config.IsResNet() {
		c.Close()
		return nil, fmt.Errorf("explain: CLIP %s is a ResNet: CLIP-AGIQA explanations show a ViT's class-token attention (use a ViT CLIP, or --method ipiqa for ResNet attention pools)", clipPath)
	}
	tok, err := tokenizer.Default()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("explain: %w", err)
	}
	m, err := agiqa.FromCheckpoint(c, tok, ck)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("explain: %w", err)
	}
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	text := s.Keep(m.TextFeatures(s))
	err = s.Err()
	s.Close()
	if err != nil {
		m.Close()
		c.Close()
		return nil, fmt.Errorf("explain: text features: %w", err)
	}
	prep := imageprep.DefaultOptions(c.Config.ImageResolution)
	prep.MaxPixels = o.MaxPixels
	return &AGIQA{c: c, m: m, text: text, prep: prep}, nil
}

// NeedsPrompt is false: CLIP-AGIQA's prompts are its learned ones.
func (x *AGIQA) NeedsPrompt() bool { return false }

// Preprocess is CLIP's test transform (shorter side to R, centre crop).
func (x *AGIQA) Preprocess(path string) ([]float32, error) { return imageprep.LoadFile(path, x.prep) }

// Explain scores the image and returns the last block's class-token map.
func (x *AGIQA) Explain(pixels []float32, _ string) (*Explanation, error) {
	size := x.prep.Size
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	feats, w := x.c.ClassAttention(s, s.FromFloat32(pixels, 1, 3, int64(size), int64(size)))
	img := s.Normalize(s.Cast(feats, torch.Float32), -1)
	score := x.m.Head(s, img, x.text, false)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	sv, err := s.To(score, torch.Float32, torch.CPU).Float32s()
	if err != nil {
		return nil, fmt.Errorf("explain: score: %w", err)
	}
	heads, err := headsOf(s, w)
	if err != nil {
		return nil, err
	}
	g := x.c.Config.ImageResolution / x.c.Config.VisionPatchSize
	return &Explanation{Pixels: pixels, Size: size, Mean: x.prep.Mean, Std: x.prep.Std,
		Scores: []Score{{"score", float64(sv[0])}},
		Maps: []Map{{Kind: KindClass, Title: fmt.Sprintf("class-token attention, last of %d blocks", x.c.Config.VisionLayers),
			Token0: TokenClass, Grid: g, Heads: heads}},
	}, nil
}

// Close frees the model and its CLIP.
func (x *AGIQA) Close() {
	x.text.Close()
	x.m.Close()
	x.c.Close()
}
