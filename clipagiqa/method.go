package clipagiqa

import (
	"fmt"
	"sort"
	"sync"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/torch"
)

// ScoringHead is a loaded scoring method on top of CLIP: what the Scorer runs
// for every batch. Adding a method means implementing it and registering a
// Method; the Scorer knows nothing else about methods.
type ScoringHead interface {
	// Prepare computes, once, what every batch reuses (e.g. text features);
	// it may return nil. The result lives until the Scorer closes.
	Prepare(s *torch.Scope) *torch.Tensor
	// Score maps preprocessed pixels [N,3,R,R] (and prepared, and the per-image
	// prompts: nil, or one per image) to N scores, allocating in s.
	Score(s *torch.Scope, pixels, prepared *torch.Tensor, prompts []string) *torch.Tensor
	// UsesPrompt reports whether Score reads the prompts.
	UsesPrompt() bool
	// Close frees the head's tensors (not the CLIP it was given).
	Close()
}

// ImageInputHead is implemented by a head whose images are not CLIP's own
// preprocessing (resize the short side, center crop at CLIP's resolution):
// ImageInput returns the transform's options (Size is the input side) and
// whether the whole image is squashed to Size×Size without crop
// (torchvision's Resize((S,S)), as IP-IQA evaluates).
type ImageInputHead interface {
	ScoringHead
	ImageInput() (opts imageprep.Options, squash bool)
}

// MultiOutputHead is implemented by a head whose Score returns [N, K]
// scores (K > 1) rather than [N]: Outputs names the K columns, the first
// being the one Scorer.Score returns (e.g. "quality", "alignment").
type MultiOutputHead interface {
	ScoringHead
	Outputs() []string
}

// HeadLoader builds a method's ScoringHead on a loaded CLIP.
type HeadLoader func(c *clip.Model, tok Tokenizer) (ScoringHead, error)

// Method is a registered scoring method.
type Method struct {
	// Name is what WithMethod and the --method flags take.
	Name string
	// Description is a one-line summary for help texts.
	Description string
	// UsesPrompt says that its heads score each image with its prompt, so
	// front ends can ask for prompts before loading anything.
	UsesPrompt bool
	// Open reads checkpoint (a path, "" when none was given; epoch 0 = the
	// highest saved) before CLIP loads, since its errors are the likelier
	// ones, and returns the loader of the head.
	Open func(checkpoint string, epoch int) (HeadLoader, error)
}

var methods = struct {
	sync.RWMutex
	byName map[string]Method
}{byName: map[string]Method{}}

// RegisterMethod makes m available by name to LoadScorer. Registering a
// name twice, or a method without name or Open, is an error.
func RegisterMethod(m Method) error {
	if m.Name == "" || m.Open == nil {
		return fmt.Errorf("register method %q: needs a name and Open", m.Name)
	}
	methods.Lock()
	defer methods.Unlock()
	if _, ok := methods.byName[m.Name]; ok {
		return fmt.Errorf("register method %q: already registered", m.Name)
	}
	methods.byName[m.Name] = m
	return nil
}

// LookupMethod returns the method registered as name.
func LookupMethod(name string) (Method, error) {
	methods.RLock()
	defer methods.RUnlock()
	m, ok := methods.byName[name]
	if !ok {
		names := make([]string, 0, len(methods.byName))
		for n := range methods.byName {
			names = append(names, n)
		}
		sort.Strings(names)
		return Method{}, fmt.Errorf("method %q: want one of %v", name, names)
	}
	return m, nil
}

// MethodNames lists the registered methods, sorted.
func MethodNames() []string {
	methods.RLock()
	defer methods.RUnlock()
	names := make([]string, 0, len(methods.byName))
	for n := range methods.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func init() {
	for _, m := range []Method{
		{Name: MethodAGIQA, Description: "CLIP-AGIQA: learned prompts and a regressor (needs a checkpoint)", Open: openAGIQA},
		{Name: MethodCLIPIQA, Description: "zero-shot CLIP-IQA: softmax(100·cos) against good/bad photo prompts (no checkpoint)", Open: openCLIPIQA},
		{Name: MethodIPIQA, Description: "IP-IQA: a ResNet CLIP fine-tuned with the image's prompt (official checkpoint_best.pth; quality and alignment)", UsesPrompt: true, Open: openIPIQA},
	} {
		if err := RegisterMethod(m); err != nil {
			panic(err) // a duplicate built-in name is a programming error
		}
	}
}

// agiqaHead is CLIP-AGIQA's head: text features of the learned prompts, then
// the regressor over the similarity features.
type agiqaHead struct{ m *Model }

func openAGIQA(checkpoint string, epoch int) (HeadLoader, error) {
	if checkpoint == "" {
		return nil, fmt.Errorf("method %s needs a checkpoint", MethodAGIQA)
	}
	ck, err := ReadCheckpoint(checkpoint, epoch)
	if err != nil {
		return nil, err
	}
	return func(c *clip.Model, tok Tokenizer) (ScoringHead, error) {
		m, err := FromCheckpoint(c, tok, ck)
		if err != nil {
			return nil, err
		}
		return &agiqaHead{m: m}, nil
	}, nil
}

func (h *agiqaHead) Prepare(s *torch.Scope) *torch.Tensor { return h.m.TextFeatures(s) }
func (h *agiqaHead) Score(s *torch.Scope, pixels, text *torch.Tensor, _ []string) *torch.Tensor {
	return h.m.Head(s, h.m.ImageFeatures(s, pixels), text, false)
}
func (h *agiqaHead) UsesPrompt() bool { return false }
func (h *agiqaHead) Close()           { h.m.Close() }

// clipIQAHead is zero-shot CLIP-IQA with the default prompt pairs.
type clipIQAHead struct {
	c   *clip.Model
	tok Tokenizer
}

func openCLIPIQA(string, int) (HeadLoader, error) {
	return func(c *clip.Model, tok Tokenizer) (ScoringHead, error) { return &clipIQAHead{c: c, tok: tok}, nil }, nil
}

func (h *clipIQAHead) Prepare(s *torch.Scope) *torch.Tensor {
	return clipIQAText(s, h.c, h.tok, DefaultCLIPIQAPairs)
}
func (h *clipIQAHead) Score(s *torch.Scope, pixels, text *torch.Tensor, _ []string) *torch.Tensor {
	return clipIQAFromText(s, h.c, pixels, text)
}
func (h *clipIQAHead) UsesPrompt() bool { return false }
func (h *clipIQAHead) Close()           {}
