package clip

import (
	"archive/zip"
	"fmt"
	"math"
	"regexp"
	"strings"

	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch"
)

// Options choose where and in which precision the model computes.
type Options struct {
	Device    torch.Device
	Precision torch.DType // Float32 (default), or Float16/BFloat16 on CUDA
}

// Model is CLIP: an image encoder (VisionTransformer or ModifiedResNet, as
// the weights say) and the text transformer.
type Model struct {
	Config Config

	Visual ImageEncoder

	TokenEmbedding      *torch.Tensor `torch:"token_embedding.weight"` // [V, D]
	PositionalEmbedding *torch.Tensor `torch:"positional_embedding"`   // [C, D]
	Transformer         Transformer   `torch:"transformer"`
	LNFinal             LayerNorm     `torch:"ln_final"`
	TextProjection      *torch.Tensor `torch:"text_projection"` // [D, E]
	LogitScale          *torch.Tensor `torch:"logit_scale,optional"`

	mask   *torch.Tensor      // [C, C] causal, -inf above the diagonal
	text   *torch.FusedBlocks // EnableFused's text blocks (fast.go), or nil
	device torch.Device
	dtype  torch.DType
	path   string
}

// rootScalars are bookkeeping entries of OpenAI's archives, not weights.
var rootScalars = map[string]bool{"input_resolution": true, "context_length": true, "vocab_size": true}

// Load reads a CLIP checkpoint: an OpenAI TorchScript archive (.pt) or a
// torch.save state dict, detected from the file's contents.
func Load(path string, opts Options) (*Model, error) {
	sd, err := readWeights(path)
	if err != nil {
		return nil, fmt.Errorf("load CLIP %s: %w", path, err)
	}
	defer sd.Close()
	m, err := FromStateDict(sd, opts)
	if err != nil {
		return nil, fmt.Errorf("load CLIP %s: %w", path, err)
	}
	m.path = path
	return m, nil
}

// IsTorchScript reports whether path is a TorchScript archive (it has code/ or
// constants.pkl records) rather than a plain torch.save file.
func IsTorchScript(path string) (bool, error) {
	if err := regularfile.Check(path); err != nil { // a FIFO would block in open()
		return false, err
	}
	zr, err := zip.OpenReader(path)
	if err != nil {
		return false, fmt.Errorf("not a PyTorch zip archive: %w", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/constants.pkl") || strings.Contains(f.Name, "/code/") {
			return true, nil
		}
	}
	return false, nil
}

func readWeights(path string) (*torch.StateDict, error) {
	ts, err := IsTorchScript(path)
	if err != nil {
		return nil, err
	}
	if ts {
		return torch.LoadTorchScript(path)
	}
	return torch.LoadStateDict(path)
}

// FromStateDict builds CLIP from named tensors, inferring its configuration.
// The tensors it uses move out of sd.
func FromStateDict(sd *torch.StateDict, opts Options) (*Model, error) {
	cfg, err := InferConfig(sd)
	if err != nil {
		return nil, err
	}
	if opts.Precision == 0 {
		opts.Precision = torch.Float32
	}
	if err := torch.CheckDevice(opts.Device); err != nil {
		return nil, err
	}
	if opts.Precision != torch.Float32 && opts.Device.Type != torch.CUDA {
		return nil, fmt.Errorf("precision %v needs a CUDA device; CPU computes in float32", opts.Precision)
	}
	m := &Model{Config: cfg, device: opts.Device, dtype: opts.Precision}
	m.Transformer = newTransformer(cfg.TransformerLayers, cfg.TransformerHeads)
	var vit *VisionTransformer
	var rn *ModifiedResNet
	if cfg.IsResNet() {
		rn = newModifiedResNet(cfg, opts.Precision)
		m.Visual = rn
	} else {
		vit = &VisionTransformer{cfg: cfg, dtype: opts.Precision}
		vit.Transformer = newTransformer(cfg.VisionLayers, cfg.VisionHeads)
		m.Visual = vit
	}
	conv := func(name string, t *torch.Tensor) (*torch.Tensor, error) {
		dt := opts.Precision
		if isNormParam(name) || !t.DType().IsFloat() {
			dt = torch.Float32
		}
		if !t.DType().IsFloat() {
			dt = t.DType()
		}
		if t.DType() == dt && t.Device() == opts.Device {
			return t, nil
		}
		s := torch.NewScope()
		defer s.Close()
		out := s.Keep(s.To(t, dt, opts.Device))
		return out, s.Err()
	}
	for name := range rootScalars {
		if t := sd.Get(name); t != nil {
			t.Close()
			delete(sd.Tensors, name)
		}
	}
	rep, err := torch.Bind(m.Visual, sd, "visual", conv)
	if err == nil {
		var rep2 torch.BindReport
		rep2, err = torch.Bind(m, sd, "", conv)
		rep.Missing = append(rep.Missing, rep2.Missing...)
		rep.Unexpected = rep2.Unexpected // covers the whole dict, visual.* included
	}
	if err == nil {
		err = rep.Err()
	}
	if err == nil {
		err = m.checkShapes(vit)
	}
	if err == nil && rn != nil {
		err = rn.checkShapes()
	}
	if err == nil {
		err = m.buildMask()
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// bnParamRe matches ModifiedResNet BatchNorm tensors: the stem's and blocks'
// bnN.* and the shortcut's downsample.1.*.
var bnParamRe = regexp.MustCompile(`(^|\.)(bn\d|downsample\.1)\.`)

// isNormParam reports whether name is a LayerNorm or BatchNorm tensor; these
// stay float32 whatever the compute precision, as in OpenAI's fp16 models.
func isNormParam(name string) bool {
	return strings.Contains(name, "ln_") || bnParamRe.MatchString(name)
}

func (m *Model) checkShapes(v *VisionTransformer) error {
	c := m.Config
	want := map[string][2][]int64{
		"token_embedding.weight": {m.TokenEmbedding.Shape(), {int64(c.VocabSize), int64(c.TransformerWidth)}},
		"text_projection":        {m.TextProjection.Shape(), {int64(c.TransformerWidth), int64(c.EmbedDim)}},
	}
	if v != nil {
		want["visual.proj"] = [2][]int64{v.Proj.Shape(), {int64(c.VisionWidth), int64(c.EmbedDim)}}
		want["visual.class_embedding"] = [2][]int64{v.ClassEmbedding.Shape(), {int64(c.VisionWidth)}}
	}
	for i, b := range m.Transformer.Blocks {
		w := int64(c.TransformerWidth)
		want[fmt.Sprintf("transformer.resblocks.%d.attn.in_proj_weight", i)] = [2][]int64{b.Attn.InProjWeight.Shape(), {3 * w, w}}
		want[fmt.Sprintf("transformer.resblocks.%d.mlp.c_fc.weight", i)] = [2][]int64{b.MLP.FC.Weight.Shape(), {4 * w, w}}
	}
	for i, b := range v.transformerBlocks() {
		w := int64(c.VisionWidth)
		want[fmt.Sprintf("visual.transformer.resblocks.%d.attn.in_proj_weight", i)] = [2][]int64{b.Attn.InProjWeight.Shape(), {3 * w, w}}
		want[fmt.Sprintf("visual.transformer.resblocks.%d.mlp.c_fc.weight", i)] = [2][]int64{b.MLP.FC.Weight.Shape(), {4 * w, w}}
	}
	for name, p := range want {
		if fmt.Sprint(p[0]) != fmt.Sprint(p[1]) {
			return fmt.Errorf("tensor %s has shape %v, want %v", name, p[0], p[1])
		}
	}
	return nil
}

func (m *Model) buildMask() error {
	s := torch.NewScope().WithDevice(m.device).WithGrad(torch.NoGrad)
	defer s.Close()
	n := int64(m.Config.ContextLength)
	mask := s.Cast(s.Triu(s.Full(math.Inf(-1), torch.Float32, n, n), 1), m.dtype)
	m.mask = s.Keep(mask)
	return s.Err()
}

// Device is where the model computes.
func (m *Model) Device() torch.Device { return m.device }

// DType is the compute precision.
func (m *Model) DType() torch.DType { return m.dtype }

// Path is the checkpoint the model was loaded from ("" if built in memory).
func (m *Model) Path() string { return m.path }

// Close frees all weights; closing twice is harmless.
func (m *Model) Close() {
	if m == nil {
		return
	}
	if m.Visual != nil {
		m.Visual.Close()
	}
	m.text.Close()
	m.mask.Close()
	torch.CloseAll(m)
}

// EncodeImage maps preprocessed pixels [N, 3, R, R] (float32, any device) to
// raw image features [N, E].
func (m *Model) EncodeImage(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	if pixels.Valid() && pixels.Device() != m.device {
		pixels = s.To(pixels, torch.Float32, m.device)
	}
	return m.Visual.Encode(s, pixels)
}

// TokenEmbeddings looks up token ids [N, C] (int64) → [N, C, D].
func (m *Model) TokenEmbeddings(s *torch.Scope, ids *torch.Tensor) *torch.Tensor {
	if ids.Valid() && ids.Device() != m.device {
		ids = s.To(ids, torch.Int64, m.device)
	}
	return s.Embedding(m.TokenEmbedding, ids)
}

// EOTIndices returns, per row, the position of the largest id (the EOT
// token), as CLIP's argmax does.
func EOTIndices(ids [][]int64) []int64 {
	out := make([]int64, len(ids))
	for i, row := range ids {
		best := int64(math.MinInt64)
		for j, v := range row {
			if v > best {
				best, out[i] = v, int64(j)
			}
		}
	}
	return out
}

// EncodeText maps token ids (rows of length ContextLength) to raw text
// features [N, E].
func (m *Model) EncodeText(s *torch.Scope, ids [][]int64) *torch.Tensor {
	if len(ids) == 0 {
		s.Fail(fmt.Errorf("encode text: no token rows"))
		return nil
	}
	c := m.Config.ContextLength
	flat := make([]int64, 0, len(ids)*c)
	for i, row := range ids {
		if len(row) != c {
			s.Fail(fmt.Errorf("encode text: row %d has %d ids, want %d", i, len(row), c))
			return nil
		}
		for j, v := range row {
			if v < 0 || v >= int64(m.Config.VocabSize) {
				s.Fail(fmt.Errorf("encode text: id %d at row %d position %d is outside the vocabulary (%d)", v, i, j, m.Config.VocabSize))
				return nil
			}
		}
		flat = append(flat, row...)
	}
	idt := s.FromInt64On(m.device, flat, int64(len(ids)), int64(c))
	emb := s.Cast(s.Embedding(m.TokenEmbedding, idt), m.dtype)
	return m.EncodeTextEmbeddings(s, emb, EOTIndices(ids))
}

// EncodeTextEmbeddings is the prompt-learning path: token embeddings
// [N, L, D] (L ≤ ContextLength) and each row's EOT position in, raw text
// features [N, E] out; gradients flow back to the embeddings. With the causal
// mask a row's EOT feature depends only on positions up to its EOT, so only
// the first max(eot)+1 positions are computed.
func (m *Model) EncodeTextEmbeddings(s *torch.Scope, emb *torch.Tensor, eot []int64) *torch.Tensor {
	return m.encodeTextEmbeddings(s, emb, eot, true)
}

// EncodeTextEmbeddingsAllPositions is EncodeTextEmbeddings computing every
// position, as the reference does; it exists to check the shortcut.
func (m *Model) EncodeTextEmbeddingsAllPositions(s *torch.Scope, emb *torch.Tensor, eot []int64) *torch.Tensor {
	return m.encodeTextEmbeddings(s, emb, eot, false)
}

func (m *Model) encodeTextEmbeddings(s *torch.Scope, emb *torch.Tensor, eot []int64, truncate bool) *torch.Tensor {
	shape := emb.Shape()
	if len(shape) != 3 || shape[2] != int64(m.Config.TransformerWidth) || shape[1] > int64(m.Config.ContextLength) {
		s.Fail(fmt.Errorf("encode text embeddings: shape %v, want [N ≤%d %d]", shape, m.Config.ContextLength, m.Config.TransformerWidth))
		return nil
	}
	n := shape[0]
	if int64(len(eot)) != n {
		s.Fail(fmt.Errorf("encode text embeddings: %d EOT indices for %d rows", len(eot), n))
		return nil
	}
	l := int64(0)
	for i, e := range eot {
		if e < 0 || e >= shape[1] {
			s.Fail(fmt.Errorf("encode text embeddings: EOT index %d of row %d outside [0, %d)", e, i, shape[1]))
			return nil
		}
		l = max(l, e+1)
	}
	if !truncate {
		l = shape[1]
	}
	x := s.Narrow(emb, 1, 0, l)
	x = s.Add(x, s.Narrow(m.PositionalEmbedding, 0, 0, l))
	mask := s.Narrow(s.Narrow(m.mask, 0, 0, l), 1, 0, l)
	x = m.Transformer.forward(s, x, mask, m.dtype)
	x = layerNorm(s, x, m.LNFinal, m.dtype)
	rows := make([]int64, n)
	for i, e := range eot {
		rows[i] = int64(i)*l + e
	}
	x = s.IndexSelect(s.Reshape(x, n*l, -1), 0, s.FromInt64On(m.device, rows, n)) // [N, D]
	return s.MatMul(x, m.TextProjection)
}
