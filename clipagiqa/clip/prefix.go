package clip

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// EncodeTextSharedPrefix computes the same features as EncodeTextEmbeddings
// for K prompts that share their first P token embeddings (CLIP-AGIQA's
// SOT + shared context): the prefix [1, P, D] runs once, and each prompt's
// remaining tokens suffix [K, S, D] attend to the prefix's keys and values
// (a key/value cache), forward and backward. eot holds absolute positions
// (P ≤ eot < P+S); only positions up to max(eot) are computed.
func (m *Model) EncodeTextSharedPrefix(s *torch.Scope, prefix, suffix *torch.Tensor, eot []int64) *torch.Tensor {
	ps, ss := prefix.Shape(), suffix.Shape()
	d := int64(m.Config.TransformerWidth)
	if len(ps) != 3 || ps[0] != 1 || ps[2] != d || len(ss) != 3 || ss[2] != d {
		s.Fail(fmt.Errorf("encode shared prefix: prefix %v and suffix %v, want [1 P %d] and [K S %d]", ps, ss, d, d))
		return nil
	}
	p, k := ps[1], ss[0]
	if int64(len(eot)) != k {
		s.Fail(fmt.Errorf("encode shared prefix: %d EOT indices for %d prompts", len(eot), k))
		return nil
	}
	l := int64(0)
	for i, e := range eot {
		if e < p || e >= p+ss[1] {
			s.Fail(fmt.Errorf("encode shared prefix: EOT %d of prompt %d not in the suffix [%d, %d)", e, i, p, p+ss[1]))
			return nil
		}
		l = max(l, e+1-p)
	}
	if p+l > int64(m.Config.ContextLength) {
		s.Fail(fmt.Errorf("encode shared prefix: %d positions exceed the context length %d", p+l, m.Config.ContextLength))
		return nil
	}
	xp := s.Add(prefix, s.Narrow(m.PositionalEmbedding, 0, 0, p))                    // [1, P, D]
	xs := s.Add(s.Narrow(suffix, 1, 0, l), s.Narrow(m.PositionalEmbedding, 0, p, l)) // [K, L, D]
	if m.text != nil && fusedTextInputs(prefix, suffix) {
		xs = m.text.ForwardSharedPrefix(s, xp, xs)
	} else {
		xs = m.sharedPrefixBlocks(s, xp, xs)
	}
	rows := make([]int64, k)
	for i, e := range eot {
		rows[i] = int64(i)*l + (e - p)
	}
	x := s.IndexSelect(s.Reshape(xs, k*l, d), 0, s.FromInt64On(m.device, rows, k)) // [K, D]
	// Row by row, so normalising only the EOT rows gives the same numbers.
	x = layerNorm(s, x, m.LNFinal, m.dtype)
	return s.MatMul(x, m.TextProjection)
}

// sharedPrefixBlocks runs the text blocks op by op on prefix rows xp [1, P, D]
// and suffix rows xs [K, L, D] (positions added) and returns the suffix
// rows' outputs [K, L, D]: the prefix as an ordinary causal sequence, each
// prompt's rows over [prefix keys; own keys] (a key/value cache).
func (m *Model) sharedPrefixBlocks(s *torch.Scope, xp, xs *torch.Tensor) *torch.Tensor {
	ps, ss := xp.Shape(), xs.Shape()
	if len(ps) != 3 || len(ss) != 3 {
		s.Fail(errClosedInput)
		return nil
	}
	p, k, l, d := ps[1], ss[0], ss[1], ss[2]
	prefMask := s.Narrow(s.Narrow(m.mask, 0, 0, p), 1, 0, p)  // [P, P] causal
	sufMask := s.Narrow(s.Narrow(m.mask, 0, p, l), 1, 0, p+l) // [L, P+L]: all prefix, causal suffix
	heads := int64(m.Transformer.Heads)
	hd := d / heads
	for _, b := range m.Transformer.Blocks {
		// Prefix: an ordinary block, keeping its keys and values.
		hp := layerNorm(s, xp, b.LN1, m.dtype)
		qkvP := s.Permute(s.Reshape(s.Linear(hp, b.Attn.InProjWeight, b.Attn.InProjBias), 1, p, 3, heads, hd), 2, 0, 3, 1, 4)
		qP, kP, vP := s.Select(qkvP, 0, 0), s.Select(qkvP, 0, 1), s.Select(qkvP, 0, 2) // [1, H, P, hd]
		oP := s.Reshape(s.Permute(s.Attention(qP, kP, vP, prefMask), 0, 2, 1, 3), 1, p, d)
		// Suffix: queries of each prompt over [prefix keys; own keys].
		hs := layerNorm(s, xs, b.LN1, m.dtype)
		qkvS := s.Permute(s.Reshape(s.Linear(hs, b.Attn.InProjWeight, b.Attn.InProjBias), k, l, 3, heads, hd), 2, 0, 3, 1, 4)
		qS, kS, vS := s.Select(qkvS, 0, 0), s.Select(qkvS, 0, 1), s.Select(qkvS, 0, 2) // [K, H, L, hd]
		keys := s.Cat(2, s.Expand(kP, k, heads, p, hd), kS)
		vals := s.Cat(2, s.Expand(vP, k, heads, p, hd), vS)
		oS := s.Reshape(s.Permute(s.Attention(qS, keys, vals, sufMask), 0, 2, 1, 3), k, l, d)
		xp = s.Add(xp, s.Linear(oP, b.Attn.OutProj.Weight, b.Attn.OutProj.Bias))
		xs = s.Add(xs, s.Linear(oS, b.Attn.OutProj.Weight, b.Attn.OutProj.Bias))
		xp = s.Add(xp, mlp(s, b, layerNorm(s, xp, b.LN2, m.dtype)))
		xs = s.Add(xs, mlp(s, b, layerNorm(s, xs, b.LN2, m.dtype)))
	}
	return xs
}

func mlp(s *torch.Scope, b *ResidualBlock, x *torch.Tensor) *torch.Tensor {
	h := s.QuickGelu(s.Linear(x, b.MLP.FC.Weight, b.MLP.FC.Bias))
	return s.Linear(h, b.MLP.Proj.Weight, b.MLP.Proj.Bias)
}
