// Package agiqa implements CLIP-AGIQA (ICPR 2024): a frozen OpenAI CLIP
// whose text path gets learnable context vectors before each quality word,
// and a regressor on the normalised image feature and the normalised text
// features of the quality prompts, trained with MSE on MOS.
package agiqa

import (
	"fmt"
	"math"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/method"
	"github.com/clipagiqa/clipagiqa/torch"
)

// DefaultCategories are the paper's six quality words.
var DefaultCategories = []string{"terrible", "bad", "poor", "average", "good", "perfect"}

// Class-token positions inside the prompt.
const (
	PositionEnd    = "end"
	PositionMiddle = "middle"
	PositionFront  = "front"
)

// Config describes the prompt learner and the regressor.
type Config struct {
	NCtx               int      `json:"n_ctx"`                // context vectors M (ignored with CtxInit)
	CtxInit            string   `json:"ctx_init"`             // initialise ctx from these words
	CSC                bool     `json:"csc"`                  // one context per category
	Categories         []string `json:"categories"`           // quality words
	ClassTokenPosition string   `json:"class_token_position"` // end, middle or front
	Hidden             int      `json:"hidden"`               // regressor hidden width (512)
	Dropout            float64  `json:"dropout"`              // regressor dropout (0.5)
}

// DefaultConfig is the paper's configuration.
func DefaultConfig() Config {
	return Config{NCtx: 16, Categories: append([]string(nil), DefaultCategories...),
		ClassTokenPosition: PositionEnd, Hidden: 512, Dropout: 0.5}
}

func (c *Config) normalise() error {
	if len(c.Categories) == 0 {
		c.Categories = append([]string(nil), DefaultCategories...)
	}
	if c.ClassTokenPosition == "" {
		c.ClassTokenPosition = PositionEnd
	}
	switch c.ClassTokenPosition {
	case PositionEnd, PositionMiddle, PositionFront:
	default:
		return fmt.Errorf("class token position %q: want end, middle or front", c.ClassTokenPosition)
	}
	if c.Hidden == 0 {
		c.Hidden = 512
	}
	if c.NCtx <= 0 && strings.TrimSpace(c.CtxInit) == "" {
		return fmt.Errorf("n_ctx must be positive (got %d)", c.NCtx)
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("dropout %v outside [0, 1)", c.Dropout)
	}
	for i, w := range c.Categories {
		if strings.TrimSpace(w) == "" {
			return fmt.Errorf("category %d is empty", i)
		}
	}
	return nil
}

// Tokenizer is the part of CLIP's BPE tokenizer the prompt learner needs.
type Tokenizer = method.Tokenizer

// Model is CLIP-AGIQA: frozen CLIP, prompt learner and regressor.
type Model struct {
	CLIP   *clip.Model
	Config Config

	// Trainable.
	Ctx *torch.Tensor // [M, D] shared, or [K, M, D] with CSC
	W1  *torch.Tensor // [Hidden, (1+K)·E]
	B1  *torch.Tensor // [Hidden]
	W2  *torch.Tensor // [1, Hidden]
	B2  *torch.Tensor // [1]

	// Frozen embeddings around the context (CoOp's token_prefix/suffix).
	TokenPrefix *torch.Tensor // [K, 1, D]
	TokenSuffix *torch.Tensor // [K, C-1-M, D]

	Tokenized [][]int64 // [K][C] prompt ids
	EOT       []int64   // EOT position per prompt
	NameLens  []int     // BPE tokens per category word
	nCtx      int

	disableSharedPrefix bool // tests compare both text paths
}

// New builds a CLIP-AGIQA model on clip with freshly initialised ctx
// (N(0, 0.02²), or the embeddings of CtxInit) and regressor (PyTorch's Linear
// default), drawn from libtorch's generator (seed it with torch.ManualSeed).
func New(c *clip.Model, tok Tokenizer, cfg Config) (*Model, error) {
	if err := cfg.normalise(); err != nil {
		return nil, err
	}
	m := &Model{CLIP: c, Config: cfg}
	if err := m.buildPrompts(tok); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.initParams(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// NumCategories is K.
func (m *Model) NumCategories() int { return len(m.Config.Categories) }

// NCtx is the number of context vectors M.
func (m *Model) NCtx() int { return m.nCtx }

// FeatureDim is the regressor input width (1+K)·E.
func (m *Model) FeatureDim() int { return (1 + m.NumCategories()) * m.CLIP.Config.EmbedDim }

func (m *Model) buildPrompts(tok Tokenizer) error {
	cfg := m.Config
	ctxLen := m.CLIP.Config.ContextLength
	prefix := ""
	if init := strings.TrimSpace(strings.ReplaceAll(cfg.CtxInit, "_", " ")); init != "" {
		m.nCtx = len(tok.Encode(init))
		if m.nCtx == 0 {
			return fmt.Errorf("ctx init %q has no tokens", cfg.CtxInit)
		}
		prefix = init
	} else {
		m.nCtx = cfg.NCtx
		prefix = strings.TrimSpace(strings.Repeat("X ", cfg.NCtx))
	}
	rows := make([][]int64, len(cfg.Categories))
	for i, name := range cfg.Categories {
		name = strings.ReplaceAll(name, "_", " ")
		m.NameLens = append(m.NameLens, len(tok.Encode(name)))
		row, err := method.TokenizeRow(tok, prefix+" "+name+".", ctxLen)
		if err != nil {
			return err
		}
		rows[i] = row
	}
	m.Tokenized = rows
	m.EOT = clip.EOTIndices(rows)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	k, l, mm := int64(len(rows)), int64(ctxLen), int64(m.nCtx)
	flat := make([]int64, 0, len(rows)*ctxLen)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	emb := m.CLIP.TokenEmbeddings(s, s.FromInt64(flat, k, l)) // [K, C, D]
	m.TokenPrefix = s.Keep(s.Contiguous(s.Narrow(emb, 1, 0, 1)))
	m.TokenSuffix = s.Keep(s.Contiguous(s.Narrow(emb, 1, 1+mm, l-1-mm)))
	if cfg.CtxInit != "" && s.Err() == nil {
		ctx := s.Narrow(s.Select(emb, 0, 0), 0, 1, mm) // [M, D]: the init words
		if cfg.CSC {
			ctx = s.Expand(s.Unsqueeze(ctx, 0), k, mm, -1)
		}
		m.Ctx = s.Keep(s.Copy(ctx))
	}
	return s.Err()
}

// uniform returns U(-bound, bound) samples of the given shape.
func uniform(s *torch.Scope, bound float64, shape ...int64) *torch.Tensor {
	return s.AddScalar(s.MulScalar(s.Rand(torch.Float32, shape...), 2*bound), -bound)
}

func (m *Model) initParams() error {
	s := torch.NewScope().WithGrad(torch.NoGrad).WithDevice(m.CLIP.Device())
	defer s.Close()
	d := int64(m.CLIP.Config.TransformerWidth)
	if m.Ctx == nil {
		shape := []int64{int64(m.nCtx), d}
		if m.Config.CSC {
			shape = []int64{int64(m.NumCategories()), int64(m.nCtx), d}
		}
		m.Ctx = s.Keep(s.MulScalar(s.Randn(torch.Float32, shape...), 0.02))
	}
	in, h := int64(m.FeatureDim()), int64(m.Config.Hidden)
	b1 := 1 / math.Sqrt(float64(in))
	b2 := 1 / math.Sqrt(float64(h))
	m.W1 = s.Keep(uniform(s, b1, h, in))
	m.B1 = s.Keep(uniform(s, b1, h))
	m.W2 = s.Keep(uniform(s, b2, 1, h))
	m.B2 = s.Keep(uniform(s, b2, 1))
	if err := s.Err(); err != nil {
		return fmt.Errorf("init parameters: %w", err)
	}
	return m.setTrainable()
}

func (m *Model) setTrainable() error {
	for _, p := range m.Params() {
		if err := p.SetRequiresGrad(true); err != nil {
			return err
		}
	}
	return nil
}

// Params are the trainable tensors: ctx, then the regressor's.
func (m *Model) Params() []*torch.Tensor { return []*torch.Tensor{m.Ctx, m.W1, m.B1, m.W2, m.B2} }

// Close frees the prompt learner and regressor (not the CLIP model).
func (m *Model) Close() {
	if m == nil {
		return
	}
	for _, t := range []*torch.Tensor{m.Ctx, m.W1, m.B1, m.W2, m.B2, m.TokenPrefix, m.TokenSuffix} {
		t.Close()
	}
}

// PromptEmbeddings assembles [K, C, D] prompt embeddings from ctx and the
// frozen prefix/suffix, honouring the class-token position.
func (m *Model) PromptEmbeddings(s *torch.Scope) *torch.Tensor {
	k := int64(m.NumCategories())
	mm := int64(m.nCtx)
	ctx := m.Ctx
	if !m.Config.CSC {
		ctx = s.Expand(s.Unsqueeze(ctx, 0), k, mm, -1) // [K, M, D]
	}
	switch m.Config.ClassTokenPosition {
	case PositionEnd:
		return s.Cat(1, m.TokenPrefix, ctx, m.TokenSuffix)
	case PositionMiddle, PositionFront:
		rows := make([]*torch.Tensor, k)
		half := mm / 2
		for i := range k {
			nl := int64(m.NameLens[i])
			pre := s.Narrow(m.TokenPrefix, 0, i, 1)
			cls := s.Narrow(s.Narrow(m.TokenSuffix, 0, i, 1), 1, 0, nl)
			rest := s.Narrow(s.Narrow(m.TokenSuffix, 0, i, 1), 1, nl, s.ErrSafeDim(m.TokenSuffix, 1)-nl)
			c := s.Narrow(ctx, 0, i, 1)
			if m.Config.ClassTokenPosition == PositionFront {
				rows[i] = s.Cat(1, pre, cls, c, rest)
			} else {
				rows[i] = s.Cat(1, pre, s.Narrow(c, 1, 0, half), cls, s.Narrow(c, 1, half, mm-half), rest)
			}
		}
		return s.Cat(0, rows...)
	}
	s.Fail(fmt.Errorf("unknown class token position %q", m.Config.ClassTokenPosition))
	return nil
}

// TextFeatures returns the L2-normalised text features of the K prompts
// [K, E]; gradients flow to ctx. With one shared context at the end position
// the SOT+ctx prefix is computed once for all prompts (same numbers, less
// work); otherwise every prompt runs whole.
func (m *Model) TextFeatures(s *torch.Scope) *torch.Tensor {
	if m.sharedPrefix() {
		return s.Normalize(m.textFeaturesShared(s), -1)
	}
	return s.Normalize(m.textFeaturesFull(s), -1)
}

func (m *Model) sharedPrefix() bool {
	return !m.Config.CSC && m.Config.ClassTokenPosition == PositionEnd && !m.disableSharedPrefix
}

// textFeaturesFull runs every prompt through the whole text transformer.
func (m *Model) textFeaturesFull(s *torch.Scope) *torch.Tensor {
	emb := m.PromptEmbeddings(s)
	return m.CLIP.EncodeTextEmbeddings(s, s.Cast(emb, m.CLIP.DType()), m.EOT)
}

// textFeaturesShared runs [SOT; ctx] once and each category's suffix against it.
func (m *Model) textFeaturesShared(s *torch.Scope) *torch.Tensor {
	dt := m.CLIP.DType()
	prefix := s.Cat(1, s.Narrow(m.TokenPrefix, 0, 0, 1), s.Unsqueeze(m.Ctx, 0)) // [1, 1+M, D]
	return m.CLIP.EncodeTextSharedPrefix(s, s.Cast(prefix, dt), s.Cast(m.TokenSuffix, dt), m.EOT)
}

// ImageFeatures returns L2-normalised image features [N, E] of pixels.
func (m *Model) ImageFeatures(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	return s.Normalize(s.Cast(m.CLIP.EncodeImage(s, pixels), torch.Float32), -1)
}

// Head maps normalised image features [N, E] and text features [K, E] to
// predicted MOS [N]. train enables dropout. In inference each row is
// computed on its own, so a score does not depend on its batch (method.ByRow).
func (m *Model) Head(s *torch.Scope, img, text *torch.Tensor, train bool) *torch.Tensor {
	shape := img.Shape()
	if len(shape) != 2 {
		s.Fail(fmt.Errorf("head: image features have shape %v, want [N E]", shape))
		return nil
	}
	if !train {
		return method.ByRow(s, img, func(row *torch.Tensor) *torch.Tensor { return m.head(s, row, text, false) })
	}
	return m.head(s, img, text, train)
}

// head is Head on all rows at once (training, and benchmarks).
func (m *Model) head(s *torch.Scope, img, text *torch.Tensor, train bool) *torch.Tensor {
	n := img.Shape()[0]
	txt := s.Expand(s.Reshape(s.Cast(text, torch.Float32), 1, -1), n, -1) // [N, K·E]
	x := s.Cat(1, img, txt)                                               // [N, (1+K)·E]
	p := m.Config.Dropout
	x = s.Relu(s.Linear(s.Dropout(x, p, train), m.W1, m.B1))
	x = s.Linear(s.Dropout(x, p, train), m.W2, m.B2) // [N, 1]
	return s.Reshape(x, n)
}

// Forward predicts MOS [N] for preprocessed pixels [N, 3, R, R].
func (m *Model) Forward(s *torch.Scope, pixels *torch.Tensor, train bool) *torch.Tensor {
	img := m.ImageFeatures(s, pixels)
	return m.Head(s, img, m.TextFeatures(s), train)
}

// Score predicts MOS for a batch of preprocessed pixels (float32, NCHW) in
// inference mode.
func (m *Model) Score(pixels []float32, n int) ([]float32, error) {
	r := int64(m.CLIP.Config.ImageResolution)
	s := torch.NewScope().WithGrad(torch.InferenceMode)
	defer s.Close()
	out := m.Forward(s, s.FromFloat32(pixels, int64(n), 3, r, r), false)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("score: %w", err)
	}
	return out.Float32s()
}
