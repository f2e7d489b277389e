// Package method is the scoring-method contract and registry: what a
// quality model implements (ScoringHead and its optional capabilities) so
// that the Scorer, predict, eval, serve and export can use it by name, and
// the evaluation loop all CLIP-based heads share. Each model lives in its
// own package and registers itself here; nothing here knows any model.
package method

import (
	"fmt"
	"io"
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

// Description is what a loaded head reports about itself for the front
// ends' outputs (predict's and eval's "checkpoint" and "epoch").
type Description struct {
	Checkpoint string // the checkpoint read ("" for none)
	Epoch      int    // its epoch, when it has one (0 otherwise)
}

// Describer is implemented by a head that can say what it loaded.
type Describer interface {
	ScoringHead
	Describe() Description
}

// PromptPairsHead is implemented by a zero-shot head scored against
// antonym prompt pairs (positive, negative) that the user may replace
// (eval --pair); nil keeps its default pairs.
type PromptPairsHead interface {
	ScoringHead
	SetPromptPairs(pairs [][2]string) error
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
	// NeedsCheckpoint says that Open refuses an empty checkpoint, so front
	// ends can ask for one (in their own words) before loading anything.
	NeedsCheckpoint bool
	// Open reads checkpoint (a path, "" when none was given; epoch 0 = the
	// highest saved) before CLIP loads, since its errors are the likelier
	// ones, and returns the loader of the head.
	Open func(checkpoint string, epoch int) (HeadLoader, error)
	// Export, when set, writes a checkpoint of this method in its official
	// code's layout (the export command); nil for methods without trained
	// weights. Set it in Method or, from a package that the method's own
	// cannot import, with RegisterExport.
	Export ExportFunc
}

// ExportRequest is what the export command passes to a method's Export.
type ExportRequest struct {
	// CLIPPath is the CLIP weights file as given (--clip), for messages.
	CLIPPath string
	// LoadCLIP loads CLIPPath as the front end configures it (threads,
	// device, fused kernels); nil loads it with clip.Load's defaults.
	// Export calls it after reading the checkpoint, whose errors are the
	// likelier ones.
	LoadCLIP func() (*clip.Model, error)
	// Checkpoint is the input checkpoint path (a file or directory).
	Checkpoint string
	// Epoch picks one of several checkpoints in a directory (0: the
	// method's default).
	Epoch int
	// Out is where the exported checkpoint goes (a file or directory,
	// as the method's layout needs).
	Out string
	// LR is a learning rate to record in the optimizer state (0: the
	// method's default); methods that keep their own refuse a non-zero one.
	LR float64
	// Log receives progress notes (nil: none).
	Log io.Writer
}

// CLIP loads the request's CLIP with LoadCLIP, else clip.Load's defaults.
func (r ExportRequest) CLIP() (*clip.Model, error) {
	if r.LoadCLIP != nil {
		return r.LoadCLIP()
	}
	return clip.Load(r.CLIPPath, clip.Options{})
}

// ExportFunc writes the checkpoint a request names and returns a one-line
// summary of what it wrote, for the user.
type ExportFunc func(req ExportRequest) (summary string, err error)

// RegisterExport gives the registered method name its Export capability,
// for an exporter that lives in a package importing the method's (e.g. its
// trainer). An unknown name, a nil export or a second one is an error.
func RegisterExport(name string, export ExportFunc) error {
	if export == nil {
		return fmt.Errorf("register export for method %q: nil export", name)
	}
	methods.Lock()
	defer methods.Unlock()
	m, ok := methods.byName[name]
	if !ok {
		return fmt.Errorf("register export for method %q: no such method registered", name)
	}
	if m.Export != nil {
		return fmt.Errorf("register export for method %q: already has one", name)
	}
	m.Export = export
	methods.byName[name] = m
	return nil
}

var methods = struct {
	sync.RWMutex
	byName map[string]Method
}{byName: map[string]Method{}}

// Register makes m available by name to LoadScorer and the front ends. Registering a
// name twice, or a method without name or Open, is an error.
func Register(m Method) error {
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

// Lookup returns the method registered as name.
func Lookup(name string) (Method, error) {
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

// Names lists the registered methods, sorted.
func Names() []string {
	methods.RLock()
	defer methods.RUnlock()
	names := make([]string, 0, len(methods.byName))
	for n := range methods.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Tokenizer is the part of CLIP's BPE tokenizer the heads need.
type Tokenizer interface {
	// Encode returns BPE ids without start/end tokens.
	Encode(text string) []int
}

// CLIP's special tokens.
const (
	sotToken = 49406
	eotToken = 49407
)

// TokenizeRow is text as one row of CLIP's text input: start token, BPE
// ids, end token, zero padding to ctxLen; an error when it does not fit.
func TokenizeRow(tok Tokenizer, text string, ctxLen int) ([]int64, error) {
	ids := tok.Encode(text)
	if len(ids)+2 > ctxLen {
		return nil, fmt.Errorf("prompt %q has %d tokens, more than the context length %d allows", text, len(ids)+2, ctxLen)
	}
	row := make([]int64, ctxLen)
	row[0] = sotToken
	for i, id := range ids {
		row[1+i] = int64(id)
	}
	row[1+len(ids)] = eotToken
	return row, nil
}

// ByRow applies f to each row of x ([N, ...]) on its own and concatenates
// the results. BLAS picks its kernel, and so its summation order, by the
// number of rows; one row at a time makes an inference result independent
// of its batch companions and their order. Used for the small matrix
// products after the encoder, where it costs little.
func ByRow(s *torch.Scope, x *torch.Tensor, f func(row *torch.Tensor) *torch.Tensor) *torch.Tensor {
	n := s.ErrSafeDim(x, 0)
	if n <= 1 {
		return f(x)
	}
	rows := make([]*torch.Tensor, n)
	for i := range n {
		rows[i] = f(s.Narrow(x, 0, i, 1))
	}
	return s.Cat(0, rows...)
}
