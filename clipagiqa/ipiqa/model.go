// Package ipiqa is IP-IQA ("Bringing Textual Prompt to AI-Generated Image
// Quality Assessment", ICME 2024) as its official code (Coobiw/IP-IQA)
// defines it: a CLIP ResNet image tower without its attention pool, CLIP's
// attnpool with a bicubically resized positional embedding, a text-guided
// cross-attention pool, and an MLP head over both pooled features. Every
// tensor sits in a torch/nn Store under the official state-dict name, frozen
// or trainable as the official code leaves it, so a trainer drives it
// through Store().Trainable() and ParamGroups.
package ipiqa

import (
	"fmt"
	"math"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// Freezing says which text-side tensors train.
type Freezing int

const (
	// FreezeOfficial copies the official code: txt_model and ln_final are
	// frozen (and stay in eval mode), but freeze_module on a Parameter sets
	// requires_grad=True, so txt_pos and text_projection train.
	FreezeOfficial Freezing = iota
	// FreezePaper freezes what the paper describes as the frozen text
	// encoder: txt_model, ln_final, txt_pos and text_projection.
	FreezePaper
	// FreezeNone trains the whole text side.
	FreezeNone
)

// Options are IP-IQA's model settings (official yaml keys in parentheses).
type Options struct {
	// InputResolution is the square input side (input_resolution); 0 means
	// 512. The attnpool grid is InputResolution/32.
	InputResolution int
	// Outputs is the number of scores (output_dim): 2 (quality, alignment)
	// or 1; 0 means 2.
	Outputs int
	// Dropout is the head's dropout probability (dropout_rate).
	Dropout float64
	// Freezing chooses the text-side freezing (freeze_text true).
	Freezing Freezing
	// FreezeTokenEmbedding freezes wte (qa_token false); the official
	// setting (qa_token true) trains the whole token embedding.
	FreezeTokenEmbedding bool
}

func (o Options) withDefaults() (Options, error) {
	if o.InputResolution == 0 {
		o.InputResolution = 512
	}
	if o.Outputs == 0 {
		o.Outputs = 2
	}
	switch {
	case o.InputResolution < 32 || o.InputResolution%32 != 0:
		return o, fmt.Errorf("ipiqa: input resolution %d, want a positive multiple of 32", o.InputResolution)
	case o.Outputs != 1 && o.Outputs != 2:
		return o, fmt.Errorf("ipiqa: %d outputs, want 1 or 2", o.Outputs)
	case o.Dropout < 0 || o.Dropout >= 1:
		return o, fmt.Errorf("ipiqa: dropout %v, want [0, 1)", o.Dropout)
	case o.Freezing < FreezeOfficial || o.Freezing > FreezeNone:
		return o, fmt.Errorf("ipiqa: unknown freezing %d", o.Freezing)
	}
	return o, nil
}

// linear is a Linear layer's tensors (owned by the store).
type linear struct{ weight, bias *torch.Tensor }

func (l linear) forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Linear(x, l.weight, l.bias)
}

// textAttentionPool is IP-IQA's TextAttentionPool2d: the feature map's
// tokens (mean first) plus its own positional embedding are attended to by
// a query projected from the text feature (MultiHeadCrossAttention).
type textAttentionPool struct {
	pos          *torch.Tensor // [G²+1, D]
	q, k, v, out linear        // E→D, D→D, D→D, D→E
	heads        int64
}

// mlpHead is IP-IQA's MLPHead: dropout, dense, tanh, dropout, out_proj.
type mlpHead struct{ dense, outProj linear }

// Model is IP-IQA over a CLIP ResNet. It owns the CLIP model given to New.
type Model struct {
	clip     *clip.Model
	rn       *clip.ModifiedResNet
	store    *nn.Store
	opts     Options
	attnpool clip.AttentionPool2d // the CLIP attnpool's projections, the resized positional embedding
	txtPool  textAttentionPool
	head     mlpHead
	tok      *tokenizer.Tokenizer
}

// New builds IP-IQA on c, which must have a ResNet image tower (the model
// takes c over and frees it on Close). The attnpool positional embedding is
// resized to the input grid; txt_attnpool and head get PyTorch's default
// random initialisation (load trained or reference values with LoadState).
// On error c stays the caller's.
func New(c *clip.Model, opts Options) (*Model, error) {
	if c == nil {
		return nil, fmt.Errorf("ipiqa: no CLIP model")
	}
	rn, ok := c.Visual.(*clip.ModifiedResNet)
	if !ok {
		return nil, fmt.Errorf("ipiqa: CLIP %s has a %T image tower; IP-IQA needs a ResNet CLIP (RN50, …), whose feature map feeds both pools", c.Path(), c.Visual)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Default()
	if err != nil {
		return nil, fmt.Errorf("ipiqa: %w", err)
	}
	m := &Model{clip: c, rn: rn, store: nn.NewStoreOn(c.Device()), opts: opts, tok: tok}
	if err := m.register(); err != nil {
		m.store.Close()
		return nil, err
	}
	if err := m.freeze(); err != nil {
		m.store.Close()
		return nil, err
	}
	return m, nil
}

// Grid is the feature map side, InputResolution/32.
func (m *Model) Grid() int { return m.opts.InputResolution / 32 }

// Options are the settings the model was built with (defaults filled in).
func (m *Model) Options() Options { return m.opts }

// Store holds every parameter and buffer under its official name.
// nn.ConvertSyncBatchNorm(m.Store(), sync) makes the ResNet's BatchNorm
// layers take training-mode statistics over sync's process group.
func (m *Model) Store() *nn.Store { return m.store }

// CLIP is the underlying CLIP model (its tensors are the model's).
func (m *Model) CLIP() *clip.Model { return m.clip }

// Close frees the model and its CLIP; closing twice is harmless.
func (m *Model) Close() {
	if m == nil {
		return
	}
	m.store.Close()
	m.clip.Close()
	m.clip = nil
}

// register puts every tensor in the store, in the official state_dict
// order (that order is the optimizer's parameter order).
func (m *Model) register() error {
	st := m.store
	root := st.Root()
	var shareErr error
	share := func(p nn.Path, name string, t *torch.Tensor, buffer bool) {
		if st.Err() != nil || shareErr != nil {
			return
		}
		ref, err := t.Clone() // a second handle on the same storage
		if err != nil {
			shareErr = fmt.Errorf("%s: %w", p.Name(name), err)
			return
		}
		if buffer {
			p.AddBuffer(name, ref)
		} else {
			p.AddParam(name, ref)
		}
	}
	c := m.clip
	share(root, "txt_pos", c.PositionalEmbedding, false)
	share(root, "text_projection", c.TextProjection, false)

	// resnet50: CLIP's visual with attnpool = Identity (no tensors).
	err := torch.WalkTagged(m.rn, "", func(f torch.TaggedField) error {
		if strings.HasPrefix(f.Name, "attnpool.") || *f.Ptr == nil {
			return nil
		}
		share(st.Sub("resnet50"), f.Name, *f.Ptr, f.Buffer)
		if f.Optional {
			st.Sub("resnet50").SetOptional(f.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ipiqa: register resnet50: %w", err)
	}
	err = torch.WalkTagged(&c.Transformer, "", func(f torch.TaggedField) error {
		share(st.Sub("txt_model"), f.Name, *f.Ptr, f.Buffer)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ipiqa: register txt_model: %w", err)
	}
	share(root, "wte.weight", c.TokenEmbedding, false)
	share(root, "ln_final.weight", c.LNFinal.Weight, false)
	share(root, "ln_final.bias", c.LNFinal.Bias, false)

	// attnpool: CLIP's, with the positional embedding resized to the grid
	// (interpolate_pos_embed); registered in IP-IQA's order k, q, v, c.
	src := m.rn.AttnPool
	s := torch.NewScope().WithGrad(torch.NoGrad)
	pos := s.Keep(clip.InterpolatePositionalEmbedding(s, src.PositionalEmbedding, m.Grid()))
	err = s.Err()
	s.Close()
	if err != nil {
		return fmt.Errorf("ipiqa: resize attnpool positional embedding: %w", err)
	}
	ap := st.Sub("attnpool")
	m.attnpool = clip.AttentionPool2d{Heads: src.Heads}
	m.attnpool.PositionalEmbedding = ap.AddParam("positional_embedding", pos)
	share(ap, "k_proj.weight", src.KProj.Weight, false)
	share(ap, "k_proj.bias", src.KProj.Bias, false)
	share(ap, "q_proj.weight", src.QProj.Weight, false)
	share(ap, "q_proj.bias", src.QProj.Bias, false)
	share(ap, "v_proj.weight", src.VProj.Weight, false)
	share(ap, "v_proj.bias", src.VProj.Bias, false)
	share(ap, "c_proj.weight", src.CProj.Weight, false)
	share(ap, "c_proj.bias", src.CProj.Bias, false)
	m.attnpool.KProj = clip.Linear{Weight: st.Get("attnpool.k_proj.weight"), Bias: st.Get("attnpool.k_proj.bias")}
	m.attnpool.QProj = clip.Linear{Weight: st.Get("attnpool.q_proj.weight"), Bias: st.Get("attnpool.q_proj.bias")}
	m.attnpool.VProj = clip.Linear{Weight: st.Get("attnpool.v_proj.weight"), Bias: st.Get("attnpool.v_proj.bias")}
	m.attnpool.CProj = clip.Linear{Weight: st.Get("attnpool.c_proj.weight"), Bias: st.Get("attnpool.c_proj.bias")}

	// Sizes from the weights: D = attnpool width, E = CLIP embedding.
	d := src.QProj.Weight.Shape()[0]
	e := int64(c.Config.EmbedDim)
	g := int64(m.Grid())
	newLinear := func(p nn.Path, in, out int64) linear {
		return linear{
			weight: p.NewParam("weight", nn.KaimingUniform(in), out, in),
			bias:   p.NewParam("bias", nn.KaimingUniform(in), out),
		}
	}
	tp := st.Sub("txt_attnpool")
	m.txtPool.pos = tp.NewParam("positional_embedding", nn.Normal(0, 1/math.Sqrt(float64(d))), g*g+1, d)
	ca := tp.Sub("cross_attn")
	m.txtPool.q = newLinear(ca.Sub("q_proj"), e, d)
	m.txtPool.k = newLinear(ca.Sub("k_proj"), d, d)
	m.txtPool.v = newLinear(ca.Sub("v_proj"), d, d)
	m.txtPool.out = newLinear(ca.Sub("out_proj"), d, e)
	m.txtPool.heads = int64(src.Heads)

	hp := st.Sub("head")
	m.head.dense = newLinear(hp.Sub("dense"), 2*e, 2*e)
	m.head.outProj = newLinear(hp.Sub("out_proj"), 2*e, int64(m.opts.Outputs))
	if shareErr != nil {
		return fmt.Errorf("ipiqa: register: %w", shareErr)
	}
	if err := st.Err(); err != nil {
		return fmt.Errorf("ipiqa: register: %w", err)
	}
	return nil
}

// freeze applies the text-side freezing the options ask for.
func (m *Model) freeze() error {
	st := m.store
	for _, p := range []string{"txt_model", "ln_final"} {
		if m.opts.Freezing == FreezeNone {
			break
		}
		if err := st.Sub(p).Freeze(); err != nil {
			return fmt.Errorf("ipiqa: freeze %s: %w", p, err)
		}
	}
	if m.opts.Freezing == FreezePaper {
		for _, p := range []string{"txt_pos", "text_projection"} {
			if err := st.Sub(p).SetTrainable(false); err != nil {
				return fmt.Errorf("ipiqa: freeze %s: %w", p, err)
			}
		}
	}
	if m.opts.FreezeTokenEmbedding {
		if err := st.Sub("wte").SetTrainable(false); err != nil {
			return fmt.Errorf("ipiqa: freeze wte: %w", err)
		}
	}
	return nil
}

// Tokenize is IP-IQA's clip.tokenize(prompts, truncate=True).
func (m *Model) Tokenize(prompts []string) ([][]int64, error) {
	return m.tok.Tokenize(prompts, m.clip.Config.ContextLength, true)
}

// Parts are a forward pass's intermediates (official module outputs).
type Parts struct {
	TextFeatures *torch.Tensor // [B, E] encode_text (not normalised)
	FeatureMap   *torch.Tensor // [B, D, G, G] resnet50
	GlobalVisual *torch.Tensor // [B, E] attnpool
	GlobalText   *torch.Tensor // [B, E] txt_attnpool
	Concat       *torch.Tensor // [B, 2E]
	Scores       *torch.Tensor // [B, Outputs]
}

// Forward scores images [B, 3, S, S] (normalised pixels, S =
// InputResolution) against one prompt each: [B, Outputs] (column 0 quality,
// 1 alignment). train puts the model in training mode first (BatchNorm on
// batch statistics updating the running ones, head dropout on; the frozen
// text modules stay in eval), false in eval mode, as model.train()/eval().
func (m *Model) Forward(s *torch.Scope, images *torch.Tensor, prompts []string, train bool) *torch.Tensor {
	ids, err := m.Tokenize(prompts)
	if err != nil {
		s.Fail(fmt.Errorf("ipiqa: %w", err))
		return nil
	}
	return m.ForwardIDs(s, images, ids, train).Scores
}

// ForwardIDs is Forward on token ids (rows of the context length) that
// returns every intermediate. Repeated prompts are encoded once.
func (m *Model) ForwardIDs(s *torch.Scope, images *torch.Tensor, ids [][]int64, train bool) Parts {
	var p Parts
	shape := images.Shape()
	r := int64(m.opts.InputResolution)
	if len(shape) != 4 || shape[1] != 3 || shape[2] != r || shape[3] != r {
		s.Fail(fmt.Errorf("ipiqa: images have shape %v, want [B 3 %d %d]", shape, r, r))
		return p
	}
	if int64(len(ids)) != shape[0] {
		s.Fail(fmt.Errorf("ipiqa: %d prompts for %d images", len(ids), shape[0]))
		return p
	}
	m.store.Train(train)
	m.rn.SetTraining(m.store.Sub("resnet50").Training())
	defer m.rn.SetTraining(false)                      // CLIP's own encode_image stays in eval mode
	m.rn.SetBatchNormSync(nn.BatchNormSyncOf(m.store)) // nn.ConvertSyncBatchNorm(m.Store(), …)
	if images.Device() != m.clip.Device() {
		images = s.To(images, torch.Float32, m.clip.Device())
	}
	p.TextFeatures = m.encodeText(s, ids)
	p.FeatureMap = m.rn.FeatureMap(s, images)
	p.GlobalVisual = m.attnpool.Forward(s, p.FeatureMap)
	p.GlobalText = m.txtPool.forward(s, p.FeatureMap, p.TextFeatures)
	p.Concat = s.Cat(1, p.GlobalVisual, p.GlobalText)
	drop := m.store.Sub("head").Training()
	h := s.Dropout(p.Concat, m.opts.Dropout, drop)
	h = s.Tanh(m.head.dense.forward(s, h))
	h = s.Dropout(h, m.opts.Dropout, drop)
	p.Scores = m.head.outProj.forward(s, h)
	return p
}

// encodeText is IPIQA.encode_text on the distinct rows of ids, expanded
// back to one row per image.
func (m *Model) encodeText(s *torch.Scope, ids [][]int64) *torch.Tensor {
	index := make([]int64, len(ids))
	seen := map[string]int64{}
	var unique [][]int64
	for i, row := range ids {
		key := fmt.Sprint(row)
		j, ok := seen[key]
		if !ok {
			j = int64(len(unique))
			seen[key] = j
			unique = append(unique, row)
		}
		index[i] = j
	}
	feats := m.clip.EncodeText(s, unique)
	if len(unique) == len(ids) {
		return feats
	}
	return s.IndexSelect(feats, 0, s.FromInt64On(m.clip.Device(), index, int64(len(index))))
}

// forward pools x [B, D, G, G] guided by text features [B, E] to [B, E]:
// scores (q·kᵀ)/sqrt(head dim), scaled after the product as the official
// MultiHeadCrossAttention does.
func (t *textAttentionPool) forward(s *torch.Scope, x, txt *torch.Tensor) *torch.Tensor {
	shape := x.Shape()
	if len(shape) != 4 || t.pos.Shape()[0] != shape[2]*shape[3]+1 {
		s.Fail(fmt.Errorf("txt_attnpool: feature map %v does not fit positional embedding %v", shape, t.pos.Shape()))
		return nil
	}
	n, d, l := shape[0], shape[1], shape[2]*shape[3]+1
	tokens := poolTokens(s, x, t.pos)
	w := attentionWeights(s, t.q.forward(s, s.Unsqueeze(txt, 1)), t.k.forward(s, tokens), t.heads) // [N, H, L]
	v := s.Permute(s.Reshape(t.v.forward(s, tokens), n, l, t.heads, d/t.heads), 0, 2, 1, 3)        // [N, H, L, hd]
	o := s.MatMul(s.Unsqueeze(w, 2), v)                                                            // [N, H, 1, hd]
	return t.out.forward(s, s.Reshape(s.Permute(o, 0, 2, 1, 3), n, d))
}

// LoadStateDict copies the tensors of sd into the model by official name.
// Tensors sd lacks keep their values (the official checkpoints leave out the
// frozen ones); a name the model does not have, or a shape that does not
// fit, is an error naming the tensor, and then nothing is loaded.
func (m *Model) LoadStateDict(sd *torch.StateDict) error {
	rep, err := m.store.LoadStateDict(sd, false)
	if err != nil {
		return fmt.Errorf("ipiqa: %w", err)
	}
	if len(rep.Unexpected) > 0 {
		return fmt.Errorf("ipiqa: load state dict: unexpected tensors %s", strings.Join(rep.Unexpected, ", "))
	}
	return nil
}

// LoadState reads a torch.save state dict (e.g. init_new_params.pth) and
// loads it with LoadStateDict.
func (m *Model) LoadState(path string) error {
	sd, err := torch.LoadStateDict(path)
	if err != nil {
		return fmt.Errorf("ipiqa: %s: %w", path, err)
	}
	defer sd.Close()
	if err := m.LoadStateDict(sd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// AttentionMaps returns, for images [B, 3, S, S] and their prompts' token
// ids, the attention weights of the two pools' single query over the G²+1
// tokens (the mean token first, then the grid row-major), per head:
// visual [B, H, G²+1] (CLIP's attnpool, mean-token query) and text
// [B, H, G²+1] (txt_attnpool, text-feature query), in eval mode. They are
// what the paper's attention figures show.
func (m *Model) AttentionMaps(s *torch.Scope, images *torch.Tensor, ids [][]int64) (visual, text *torch.Tensor) {
	p := m.ForwardIDs(s, images, ids, false)
	if s.Err() != nil {
		return nil, nil
	}
	ap := m.attnpool
	x := poolTokens(s, p.FeatureMap, ap.PositionalEmbedding)
	visual = attentionWeights(s, s.Linear(s.Narrow(x, 1, 0, 1), ap.QProj.Weight, ap.QProj.Bias),
		s.Linear(x, ap.KProj.Weight, ap.KProj.Bias), int64(ap.Heads))
	tp := &m.txtPool
	x = poolTokens(s, p.FeatureMap, tp.pos)
	text = attentionWeights(s, tp.q.forward(s, s.Unsqueeze(p.TextFeatures, 1)), tp.k.forward(s, x), tp.heads)
	return visual, text
}

// poolTokens is [mean; grid tokens] + pos for a map [N, D, H, W]: [N, L, D].
func poolTokens(s *torch.Scope, x, pos *torch.Tensor) *torch.Tensor {
	shape := x.Shape()
	if len(shape) != 4 {
		s.Fail(fmt.Errorf("ipiqa: feature map shape %v, want [N D H W]", shape))
		return nil
	}
	n, d, hw := shape[0], shape[1], shape[2]*shape[3]
	x = s.Permute(s.Reshape(x, n, d, hw), 0, 2, 1)
	return s.Add(s.Cat(1, s.Mean(x, true, 1), x), pos)
}

// attentionWeights is softmax(q·kᵀ/sqrt(head dim)) per head for one query
// q [N, 1, D] over keys k [N, L, D]: [N, H, L].
func attentionWeights(s *torch.Scope, q, k *torch.Tensor, heads int64) *torch.Tensor {
	shape := k.Shape()
	if len(shape) != 3 {
		s.Fail(fmt.Errorf("ipiqa: attention keys shape %v", shape))
		return nil
	}
	n, l, d := shape[0], shape[1], shape[2]
	hd := d / heads
	qh := s.Permute(s.Reshape(q, n, 1, heads, hd), 0, 2, 1, 3)
	kh := s.Permute(s.Reshape(k, n, l, heads, hd), 0, 2, 1, 3)
	w := s.Softmax(s.DivScalar(s.MatMul(qh, s.Transpose(kh, 2, 3)), math.Sqrt(float64(hd))), -1) // [N, H, 1, L]
	return s.Reshape(w, n, heads, l)
}
