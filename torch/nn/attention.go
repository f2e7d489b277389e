package nn

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
)

// MHAWeights are the projection tensors of F.multi_head_attention_forward.
// Give either the packed InProjWeight [3E, E] or the three separate
// QProjWeight [E, E], KProjWeight [E, kdim], VProjWeight [E, vdim]; biases
// either packed (InProjBias [3E]) or separate (QBias, KBias, VBias [E]), or
// none. OutProjWeight is [Eout, E].
type MHAWeights struct {
	InProjWeight                          *torch.Tensor
	QProjWeight, KProjWeight, VProjWeight *torch.Tensor
	InProjBias                            *torch.Tensor
	QBias, KBias, VBias                   *torch.Tensor
	OutProjWeight, OutProjBias            *torch.Tensor
}

// MHAOptions are the remaining arguments of F.multi_head_attention_forward.
type MHAOptions struct {
	Heads int64
	// AttnMask is [L, S] or [N·Heads, L, S]: bool (true = not attended) or
	// float (added to the scores). May be nil.
	AttnMask *torch.Tensor
	// KeyPaddingMask is bool [N, S], true for keys to ignore. May be nil.
	KeyPaddingMask *torch.Tensor
	// Dropout on the attention weights, applied only when Training.
	Dropout  float64
	Training bool
	// BatchFirst takes and returns [N, L, E] instead of [L, N, E].
	BatchFirst bool
	// ScaleAfterProduct divides q·kᵀ by √d (IP-IQA's cross attention)
	// instead of scaling q first (PyTorch); equal up to rounding.
	ScaleAfterProduct bool
}

// MultiHeadAttention is F.multi_head_attention_forward(query, key, value,
// ..., need_weights=False) of PyTorch 1.13: project, split into heads, scaled
// dot-product attention, merge heads, output projection. query is [L, N, E]
// and key, value [S, N, kdim|vdim] (batch first when o.BatchFirst); the result
// is [L, N, Eout].
func MultiHeadAttention(s *torch.Scope, query, key, value *torch.Tensor, w MHAWeights, o MHAOptions) *torch.Tensor {
	if s.Err() != nil {
		return nil
	}
	if query == nil || key == nil || value == nil {
		s.Fail(fmt.Errorf("multi-head attention: query, key and value are required"))
		return nil
	}
	if o.BatchFirst {
		query, key, value = s.Transpose(query, 0, 1), s.Transpose(key, 0, 1), s.Transpose(value, 0, 1)
	}
	if query.Dim() != 3 || key.Dim() != 3 || value.Dim() != 3 {
		s.Fail(fmt.Errorf("multi-head attention: want 3-D query, key, value; got %v, %v, %v", query.Shape(), key.Shape(), value.Shape()))
		return nil
	}
	wq, wk, wv, err := w.projections(s)
	if err != nil {
		s.Fail(fmt.Errorf("multi-head attention: %w", err))
		return nil
	}
	bq, bk, bv := w.biases(s)
	L, N := query.Shape()[0], query.Shape()[1]
	S := key.Shape()[0]
	E := s.ErrSafeDim(wq, 0)
	H := o.Heads
	if H <= 0 || E%H != 0 {
		s.Fail(fmt.Errorf("multi-head attention: embedding size %d is not divisible by %d heads", E, H))
		return nil
	}
	hd := E / H
	heads := func(x *torch.Tensor, n int64) *torch.Tensor { // [n, N, E] → [N·H, n, hd]
		return s.Transpose(s.Reshape(x, n, N*H, hd), 0, 1)
	}
	q := heads(s.Linear(query, wq, bq), L)
	k := heads(s.Linear(key, wk, bk), S)
	v := heads(s.Linear(value, wv, bv), S)
	mask := attentionMask(s, o, N, H, S)
	var out *torch.Tensor
	if (o.Dropout > 0 && o.Training) || o.ScaleAfterProduct {
		var scores *torch.Tensor
		if o.ScaleAfterProduct {
			scores = s.DivScalar(s.MatMul(q, s.Transpose(k, 1, 2)), math.Sqrt(float64(hd)))
		} else {
			scores = s.MatMul(s.DivScalar(q, math.Sqrt(float64(hd))), s.Transpose(k, 1, 2))
		}
		if mask != nil {
			scores = s.Add(scores, mask)
		}
		out = s.BMM(s.Dropout(s.Softmax(scores, -1), o.Dropout, o.Training), v)
	} else {
		out = s.Attention(q, k, v, mask)
	}
	out = s.Reshape(s.Transpose(out, 0, 1), L*N, E)
	out = s.Linear(out, w.OutProjWeight, w.OutProjBias)
	out = s.Reshape(out, L, N, s.ErrSafeDim(w.OutProjWeight, 0))
	if o.BatchFirst {
		out = s.Transpose(out, 0, 1)
	}
	return out
}

func (w MHAWeights) projections(s *torch.Scope) (q, k, v *torch.Tensor, err error) {
	switch {
	case w.InProjWeight != nil:
		e3 := s.ErrSafeDim(w.InProjWeight, 0)
		if e3%3 != 0 {
			return nil, nil, nil, fmt.Errorf("in_proj_weight has %d rows, not 3·E", e3)
		}
		e := e3 / 3
		return s.Narrow(w.InProjWeight, 0, 0, e), s.Narrow(w.InProjWeight, 0, e, e), s.Narrow(w.InProjWeight, 0, 2*e, e), nil
	case w.QProjWeight != nil && w.KProjWeight != nil && w.VProjWeight != nil:
		return w.QProjWeight, w.KProjWeight, w.VProjWeight, nil
	}
	return nil, nil, nil, fmt.Errorf("need in_proj_weight or all of q_proj, k_proj and v_proj weights")
}

func (w MHAWeights) biases(s *torch.Scope) (q, k, v *torch.Tensor) {
	if w.InProjBias != nil {
		e := s.ErrSafeDim(w.InProjBias, 0) / 3
		return s.Narrow(w.InProjBias, 0, 0, e), s.Narrow(w.InProjBias, 0, e, e), s.Narrow(w.InProjBias, 0, 2*e, e)
	}
	return w.QBias, w.KBias, w.VBias
}

// attentionMask merges the attention and key-padding masks into one additive
// float mask broadcasting to [N·H, L, S], or nil when there is neither.
func attentionMask(s *torch.Scope, o MHAOptions, n, h, srcLen int64) *torch.Tensor {
	var mask *torch.Tensor
	if o.AttnMask != nil {
		mask = additive(s, o.AttnMask)
		if mask != nil && mask.Dim() == 2 {
			mask = s.Unsqueeze(mask, 0)
		}
	}
	if o.KeyPaddingMask != nil {
		kp := additive(s, o.KeyPaddingMask)                                                       // [N, S]
		kp = s.Reshape(s.Expand(s.Reshape(kp, n, 1, 1, srcLen), n, h, 1, srcLen), n*h, 1, srcLen) // [N·H, 1, S]
		if mask == nil {
			mask = kp
		} else {
			mask = s.Add(mask, kp)
		}
	}
	return mask
}

// additive turns a bool mask (true = masked) into 0/-inf floats.
func additive(s *torch.Scope, m *torch.Tensor) *torch.Tensor {
	if m.DType() != torch.Bool {
		return m
	}
	return s.MaskedFill(s.Zeros(torch.Float32, m.Shape()...), m, math.Inf(-1))
}

// MHALayout says how a MultiheadAttention names its projection tensors.
type MHALayout int

// Layouts of the projection tensors.
const (
	// PackedProjection is torch.nn.MultiheadAttention's default:
	// in_proj_weight [3E, E], in_proj_bias [3E], out_proj.{weight,bias}.
	PackedProjection MHALayout = iota
	// SeparateProjWeights is torch.nn.MultiheadAttention with kdim or vdim ≠
	// E: q_proj_weight, k_proj_weight, v_proj_weight, in_proj_bias,
	// out_proj.{weight,bias}.
	SeparateProjWeights
	// SeparateLinears is four Linear modules, named and ordered by
	// MultiheadAttentionConfig.Linears (CLIP's AttentionPool2d by default:
	// k_proj, q_proj, v_proj, c_proj; IP-IQA's cross attention: q_proj,
	// k_proj, v_proj, out_proj). Query and output sizes may differ from E.
	SeparateLinears
)

// ProjRole is what one Linear of the SeparateLinears layout projects.
type ProjRole int

// Roles of the four projections.
const (
	QueryProj ProjRole = iota
	KeyProj
	ValueProj
	OutProj
)

// LinearProj names one Linear of the SeparateLinears layout.
type LinearProj struct {
	Role ProjRole
	Name string
}

// Names and registration orders of the SeparateLinears layout.
var (
	CLIPAttnPoolLinears   = []LinearProj{{KeyProj, "k_proj"}, {QueryProj, "q_proj"}, {ValueProj, "v_proj"}, {OutProj, "c_proj"}}
	IPIQACrossAttnLinears = []LinearProj{{QueryProj, "q_proj"}, {KeyProj, "k_proj"}, {ValueProj, "v_proj"}, {OutProj, "out_proj"}}
)

// MultiheadAttentionConfig describes a MultiheadAttention.
type MultiheadAttentionConfig struct {
	Heads      int64
	Layout     MHALayout
	KDim, VDim int64 // key and value input sizes; 0 means E
	QDim       int64 // query input size; 0 means E (SeparateLinears only may differ)
	OutDim     int64 // output size; 0 means E (SeparateLinears only may differ)
	// Linears names and orders the SeparateLinears projections; nil means
	// CLIPAttnPoolLinears.
	Linears []LinearProj
	// ScaleAfterProduct: see MHAOptions.
	ScaleAfterProduct bool
	Bias              bool // projection biases (PyTorch's default is bias=True)
	Dropout           float64
	BatchFirst        bool
}

// MultiheadAttention is torch.nn.MultiheadAttention (or CLIP's separate
// q/k/v/c projections, see MHALayout); Dropout follows its path's mode.
type MultiheadAttention struct {
	Weights MHAWeights
	Config  MultiheadAttentionConfig
	path    Path
}

// NewMultiheadAttention registers the projections of an attention over
// embedding size embed under p, initialised as PyTorch does (Xavier-uniform
// input projections, zero biases; Linear defaults for SeparateLinears).
func NewMultiheadAttention(p Path, embed int64, c MultiheadAttentionConfig) (*MultiheadAttention, error) {
	if c.Heads <= 0 || embed%c.Heads != 0 {
		return nil, fmt.Errorf("multihead attention %q: embedding size %d is not divisible by %d heads", p.prefix, embed, c.Heads)
	}
	kdim, vdim, odim := orDefault(c.KDim, embed), orDefault(c.VDim, embed), orDefault(c.OutDim, embed)
	qdim := orDefault(c.QDim, embed)
	if (odim != embed || qdim != embed) && c.Layout != SeparateLinears {
		return nil, fmt.Errorf("multihead attention %q: query/output sizes %d/%d ≠ %d need the SeparateLinears layout", p.prefix, qdim, odim, embed)
	}
	if (kdim != embed || vdim != embed) && c.Layout == PackedProjection {
		return nil, fmt.Errorf("multihead attention %q: key/value sizes %d/%d ≠ %d need separate projections", p.prefix, kdim, vdim, embed)
	}
	m := &MultiheadAttention{Config: c, path: p}
	w := &m.Weights
	switch c.Layout {
	case PackedProjection, SeparateProjWeights:
		if c.Layout == PackedProjection {
			w.InProjWeight = p.NewParam("in_proj_weight", XavierUniform(embed, 3*embed), 3*embed, embed)
		} else {
			w.QProjWeight = p.NewParam("q_proj_weight", XavierUniform(embed, embed), embed, embed)
			w.KProjWeight = p.NewParam("k_proj_weight", XavierUniform(kdim, embed), embed, kdim)
			w.VProjWeight = p.NewParam("v_proj_weight", XavierUniform(vdim, embed), embed, vdim)
		}
		if c.Bias {
			w.InProjBias = p.NewParam("in_proj_bias", Zeros, 3*embed)
		}
		out := p.Sub("out_proj") // a Linear whose bias PyTorch zeroes
		w.OutProjWeight = out.NewParam("weight", KaimingUniform(embed), embed, embed)
		if c.Bias {
			w.OutProjBias = out.NewParam("bias", Zeros, embed)
		}
	case SeparateLinears:
		linears := c.Linears
		if linears == nil {
			linears = CLIPAttnPoolLinears
		}
		sizes := map[ProjRole][2]int64{QueryProj: {qdim, embed}, KeyProj: {kdim, embed}, ValueProj: {vdim, embed}, OutProj: {embed, odim}}
		seen := map[ProjRole]bool{}
		for _, lp := range linears {
			sz, ok := sizes[lp.Role]
			if !ok || seen[lp.Role] {
				return nil, fmt.Errorf("multihead attention %q: projection %q has an unknown or repeated role", p.prefix, lp.Name)
			}
			seen[lp.Role] = true
			l, err := NewLinear(p.Sub(lp.Name), sz[0], sz[1], c.Bias)
			if err != nil {
				return nil, err
			}
			switch lp.Role {
			case QueryProj:
				w.QProjWeight, w.QBias = l.Weight, l.Bias
			case KeyProj:
				w.KProjWeight, w.KBias = l.Weight, l.Bias
			case ValueProj:
				w.VProjWeight, w.VBias = l.Weight, l.Bias
			case OutProj:
				w.OutProjWeight, w.OutProjBias = l.Weight, l.Bias
			}
		}
		if len(seen) != 4 {
			return nil, fmt.Errorf("multihead attention %q: SeparateLinears needs query, key, value and output projections", p.prefix)
		}
	default:
		return nil, fmt.Errorf("multihead attention %q: unknown layout %d", p.prefix, c.Layout)
	}
	return built(p, "multihead attention", m)
}

// Forward attends query [L, N, E] to key/value [S, N, ·] (batch first if
// configured); attnMask and keyPaddingMask may be nil (see MHAOptions).
func (m *MultiheadAttention) Forward(s *torch.Scope, query, key, value, attnMask, keyPaddingMask *torch.Tensor) *torch.Tensor {
	return MultiHeadAttention(s, query, key, value, m.Weights, MHAOptions{
		Heads: m.Config.Heads, AttnMask: attnMask, KeyPaddingMask: keyPaddingMask,
		Dropout: m.Config.Dropout, Training: m.path.Training(), BatchFirst: m.Config.BatchFirst,
		ScaleAfterProduct: m.Config.ScaleAfterProduct,
	})
}

func orDefault(v, d int64) int64 {
	if v > 0 {
		return v
	}
	return d
}

// XavierUniform is xavier_uniform_: U(-a, a), a = √(6/(fanIn+fanOut)).
func XavierUniform(fanIn, fanOut int64) Init {
	a := math.Sqrt(6 / float64(max(fanIn+fanOut, 1)))
	return Uniform(-a, a)
}
