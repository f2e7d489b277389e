package clip

import (
	"fmt"
	"strings"
	"sync"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// bnEps is PyTorch's BatchNorm2d default, which OpenAI's ModifiedResNet keeps.
const bnEps = 1e-5

// BatchNorm2d holds a BatchNorm layer's affine parameters and running
// statistics (kept in float32 whatever the compute precision).
type BatchNorm2d struct {
	Weight            *torch.Tensor `torch:"weight"`              // [C]
	Bias              *torch.Tensor `torch:"bias"`                // [C]
	RunningMean       *torch.Tensor `torch:"running_mean,buffer"` // [C]
	RunningVar        *torch.Tensor `torch:"running_var,buffer"`  // [C]
	NumBatchesTracked *torch.Tensor `torch:"num_batches_tracked,buffer,optional"`
}

// bnMomentum is PyTorch's BatchNorm2d default running-average factor.
const bnMomentum = 0.1

// rnMode is how a ModifiedResNet forward computes.
type rnMode struct {
	dt    torch.DType // compute precision
	train bool        // BatchNorm on batch statistics, updating the running ones
	sync  nn.BatchNormSync
}

// forward normalises x [N, C, H, W]: in eval mode with the running
// statistics; in train mode with the batch's (biased variance), updating
// running = 0.9·running + 0.1·batch (unbiased variance) and
// num_batches_tracked, as nn.BatchNorm2d.train() does. Half-precision inputs
// are normalised in float32, like CLIP's LayerNorm.
func (b *BatchNorm2d) forward(s *torch.Scope, x *torch.Tensor, m rnMode) *torch.Tensor {
	if m.train && s.Err() == nil && b.NumBatchesTracked != nil {
		if err := increment(b.NumBatchesTracked); err != nil {
			s.Fail(fmt.Errorf("batch norm: num_batches_tracked: %w", err))
			return nil
		}
	}
	norm := func(x *torch.Tensor) *torch.Tensor {
		if m.train && m.sync != nil { // statistics over a process group (SyncBatchNorm)
			return m.sync.BatchNormTrain(s, x, b.Weight, b.Bias, b.RunningMean, b.RunningVar, bnMomentum, bnEps)
		}
		return s.BatchNorm(x, b.Weight, b.Bias, b.RunningMean, b.RunningVar, m.train, bnMomentum, bnEps)
	}
	if m.dt == torch.Float32 {
		return norm(x)
	}
	return s.Cast(norm(s.Cast(x, torch.Float32)), m.dt)
}

// increment adds 1 to a counter tensor in place.
func increment(t *torch.Tensor) error {
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	next := s.AddScalar(t, 1)
	if err := s.Err(); err != nil {
		return err
	}
	return t.CopyFrom(next)
}

// avgPool2d is nn.AvgPool2d(k): stride k, no padding, floor mode.
func avgPool2d(s *torch.Scope, x *torch.Tensor, k int64) *torch.Tensor {
	return s.AvgPool2D(x, torch.AvgPool2DOpts(torch.Sq(k)))
}

// Downsample is a Bottleneck's shortcut projection: avgpool(stride), 1×1
// conv, BatchNorm (PyTorch names "0" and "1" of an nn.Sequential).
type Downsample struct {
	Conv *torch.Tensor `torch:"0.weight"` // [4P, in, 1, 1]
	BN   BatchNorm2d   `torch:"1"`
}

// Bottleneck is the ModifiedResNet block: 1×1, 3×3, avgpool(stride) when
// stride > 1, 1×1 to 4× the planes, each conv with BatchNorm; ReLU after the
// first two and after adding the shortcut.
type Bottleneck struct {
	Conv1      *torch.Tensor `torch:"conv1.weight"` // [P, in, 1, 1]
	BN1        BatchNorm2d   `torch:"bn1"`
	Conv2      *torch.Tensor `torch:"conv2.weight"` // [P, P, 3, 3]
	BN2        BatchNorm2d   `torch:"bn2"`
	Conv3      *torch.Tensor `torch:"conv3.weight"` // [4P, P, 1, 1]
	BN3        BatchNorm2d   `torch:"bn3"`
	Downsample *Downsample   `torch:"downsample,optional"` // nil: identity shortcut (stride 1, same channels)

	Stride int64
}

func (b *Bottleneck) forward(s *torch.Scope, x *torch.Tensor, mode rnMode) *torch.Tensor {
	out := newChain(x)
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Conv2D(h, b.Conv1, nil, 1, 0) })
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Relu(b.BN1.forward(s, h, mode)) })
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Conv2D(h, b.Conv2, nil, 1, 1) })
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Relu(b.BN2.forward(s, h, mode)) })
	if b.Stride > 1 {
		out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return avgPool2d(s, h, b.Stride) })
	}
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Conv2D(h, b.Conv3, nil, 1, 0) })
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return b.BN3.forward(s, h, mode) })
	identity := newChain(x)
	if d := b.Downsample; d != nil {
		if b.Stride > 1 {
			identity.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return avgPool2d(s, h, b.Stride) })
		}
		identity.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Conv2D(h, d.Conv, nil, 1, 0) })
		identity.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return d.BN.forward(s, h, mode) })
	}
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Add(h, identity.cur) })
	identity.release()
	out.then(s, func(s *torch.Scope, h *torch.Tensor) *torch.Tensor { return s.Relu(h) })
	return out.result(s)
}

// chain runs a sequence of ops, each in its own sub-scope, freeing each
// intermediate as soon as the next one exists (autograd keeps what a
// backward pass needs): a block then holds a few activations at a time
// instead of all of its own, which at 512×512 and batch 32 is gigabytes.
// The first input stays the caller's.
type chain struct {
	in, cur *torch.Tensor
}

func newChain(in *torch.Tensor) *chain { return &chain{in: in, cur: in} }

// then replaces the current value with f's result.
func (c *chain) then(s *torch.Scope, f func(*torch.Scope, *torch.Tensor) *torch.Tensor) {
	sub := s.Sub()
	y := sub.Keep(f(sub, c.cur))
	sub.Close()
	c.release()
	c.cur = y
}

// release frees the current value unless it is the caller's input.
func (c *chain) release() {
	if c.cur != c.in {
		c.cur.Close()
	}
	c.cur = c.in
}

// result hands the current value to s.
func (c *chain) result(s *torch.Scope) *torch.Tensor {
	y := c.cur
	c.cur = c.in
	if y == c.in {
		return y
	}
	return s.Adopt(y)
}

// AttentionPool2d is CLIP's attention pooling: the spatial tokens of a
// feature map, with their mean prepended and a learned positional embedding
// added, attended to by the mean token (multi-head, separate projections).
type AttentionPool2d struct {
	PositionalEmbedding *torch.Tensor `torch:"positional_embedding"` // [G²+1, D]
	QProj               Linear        `torch:"q_proj"`               // D → D
	KProj               Linear        `torch:"k_proj"`               // D → D
	VProj               Linear        `torch:"v_proj"`               // D → D
	CProj               Linear        `torch:"c_proj"`               // D → E

	Heads int
}

// Forward pools a feature map [N, D, G, G] to [N, E] with the layer's own
// positional embedding.
func (a *AttentionPool2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return a.ForwardWith(s, x, a.PositionalEmbedding)
}

// ForwardWith pools a feature map [N, D, H, W] to [N, E] with the positional
// embedding pos [H·W+1, D] (e.g. one resized by InterpolatePositionalEmbedding
// for another input resolution). As PyTorch's multi-head attention, the
// query is scaled by 1/sqrt(head dim) before q·kᵀ.
func (a *AttentionPool2d) ForwardWith(s *torch.Scope, x, pos *torch.Tensor) *torch.Tensor {
	shape, ps := x.Shape(), pos.Shape()
	if len(shape) != 4 || len(ps) != 2 || ps[0] != shape[2]*shape[3]+1 || ps[1] != shape[1] {
		s.Fail(fmt.Errorf("attention pool: feature map %v does not fit positional embedding %v (want [N D H W] with H·W+1 rows of width D)", shape, ps))
		return nil
	}
	n, d, l := shape[0], shape[1], shape[2]*shape[3]+1
	heads := int64(a.Heads)
	hd := d / heads
	x = s.Permute(s.Reshape(x, n, d, l-1), 0, 2, 1)                    // [N, HW, D]
	x = s.Add(s.Cat(1, s.Mean(x, true, 1), x), s.Cast(pos, x.DType())) // [N, L, D]
	q := s.Linear(s.Narrow(x, 1, 0, 1), a.QProj.Weight, a.QProj.Bias)  // [N, 1, D]
	k := s.Linear(x, a.KProj.Weight, a.KProj.Bias)                     // [N, L, D]
	v := s.Linear(x, a.VProj.Weight, a.VProj.Bias)
	split := func(t *torch.Tensor, rows int64) *torch.Tensor {
		return s.Permute(s.Reshape(t, n, rows, heads, hd), 0, 2, 1, 3) // [N, H, rows, hd]
	}
	o := s.Attention(split(q, 1), split(k, l), split(v, l), nil) // [N, H, 1, hd]
	o = s.Reshape(s.Permute(o, 0, 2, 1, 3), n, d)                // [N, D]
	return s.Linear(o, a.CProj.Weight, a.CProj.Bias)             // [N, E]
}

// ModifiedResNet is CLIP's ResNet image encoder (RN50, RN101, RN50x4, …): a
// three-conv stem with an average pool, four stages of Bottlenecks whose
// stride is an average pool, and attention pooling. BatchNorm uses its
// running statistics (eval mode) unless SetTraining(true).
type ModifiedResNet struct {
	Conv1    *torch.Tensor   `torch:"conv1.weight"` // [W/2, 3, 3, 3], stride 2
	BN1      BatchNorm2d     `torch:"bn1"`
	Conv2    *torch.Tensor   `torch:"conv2.weight"` // [W/2, W/2, 3, 3]
	BN2      BatchNorm2d     `torch:"bn2"`
	Conv3    *torch.Tensor   `torch:"conv3.weight"` // [W, W/2, 3, 3]
	BN3      BatchNorm2d     `torch:"bn3"`
	Layer1   []*Bottleneck   `torch:"layer1"`
	Layer2   []*Bottleneck   `torch:"layer2"`
	Layer3   []*Bottleneck   `torch:"layer3"`
	Layer4   []*Bottleneck   `torch:"layer4"`
	AttnPool AttentionPool2d `torch:"attnpool"`

	cfg      Config
	dtype    torch.DType
	training bool
	bnSync   nn.BatchNormSync
	layout   *torch.MemoryFormat // nil: layoutFor's choice

	fusedMu  sync.Mutex
	fused    *torch.FusedResNet // made on the first eval-mode CPU call
	unfused  bool               // SetFusedEval(false)
	fusedErr error              // why the fused trunk could not be made
}

// SetFusedEval chooses how eval-mode forwards on the CPU in float32 compute
// the stem and the stages: true (the default) runs them as one native op with
// each BatchNorm folded into its convolution (torch.FusedResNet; an RN50
// scores a 512×512 image about 1.2× faster, to float32 rounding of the
// op-by-op result; the folded weights take as much memory as the
// convolutions'), false op by op as the official code does. Training mode,
// other devices and precisions, inputs that need gradients and a row-major
// SetMemoryFormat always go op by op.
func (r *ModifiedResNet) SetFusedEval(enabled bool) {
	r.fusedMu.Lock()
	defer r.fusedMu.Unlock()
	r.unfused = !enabled
	if !enabled {
		r.fused.Close()
		r.fused = nil
	}
}

// FusedEval reports whether eval-mode forwards may take the fused trunk.
func (r *ModifiedResNet) FusedEval() bool {
	r.fusedMu.Lock()
	defer r.fusedMu.Unlock()
	return !r.unfused
}

// FusedEvalFolds counts the convolutions the fused eval trunk has folded
// (0 before its first use): one each when it is made, then one for every
// convolution whose weights changed before a call.
func (r *ModifiedResNet) FusedEvalFolds() int64 {
	r.fusedMu.Lock()
	defer r.fusedMu.Unlock()
	if r.fused == nil {
		return 0
	}
	return r.fused.Folds()
}

// invalidateFused makes the fused trunk refold before its next call; if
// that fails the trunk is dropped and remade on the next eval call.
func (r *ModifiedResNet) invalidateFused() {
	r.fusedMu.Lock()
	defer r.fusedMu.Unlock()
	if err := r.fused.Invalidate(); err != nil {
		r.fused.Close()
		r.fused = nil
	}
}

// blockStrides are the Bottlenecks' strides, stage by stage.
func (r *ModifiedResNet) blockStrides() []int64 {
	var out []int64
	for _, layer := range r.stages() {
		for _, b := range *layer {
			out = append(out, int64(b.Stride))
		}
	}
	return out
}

// trunkWeights are the stem's and stages' tensors by their names relative to
// the ResNet (attnpool and BatchNorm counters left out).
func (r *ModifiedResNet) trunkWeights() (map[string]*torch.Tensor, error) {
	ws := map[string]*torch.Tensor{}
	err := torch.WalkTagged(r, "", func(f torch.TaggedField) error {
		if strings.HasPrefix(f.Name, "attnpool.") || strings.HasSuffix(f.Name, ".num_batches_tracked") {
			return nil
		}
		ws[f.Name] = *f.Ptr
		return nil
	})
	return ws, err
}

// fusedForward runs the trunk on the fused op when it applies; ok = false
// means the caller computes op by op.
func (r *ModifiedResNet) fusedForward(s *torch.Scope, pixels *torch.Tensor) (out *torch.Tensor, ok bool) {
	if r.training || r.dtype != torch.Float32 || r.layoutFor(false) != torch.ChannelsLast || !pixels.Valid() ||
		pixels.Device().Type != torch.CPUDevice || pixels.DType() != torch.Float32 || !r.Conv1.Valid() ||
		r.Conv1.Device().Type != torch.CPUDevice {
		return nil, false
	}
	ws, err := r.trunkWeights()
	if err != nil {
		return nil, false
	}
	r.fusedMu.Lock()
	if r.fused == nil && !r.unfused && r.fusedErr == nil {
		r.fused, r.fusedErr = torch.NewFusedResNet(ws, r.blockStrides(), bnEps)
	}
	f := r.fused
	r.fusedMu.Unlock()
	if f == nil {
		return nil, false
	}
	return f.Forward(s, pixels, ws)
}

// SetMemoryFormat fixes the layout the stem and the stages compute in,
// torch.ChannelsLast or torch.RowMajor (the official code's NCHW), instead
// of the default: channels-last in eval mode, where oneDNN's convolutions
// score an RN50 at 512×512 about 1.3× faster, and row-major in training
// mode, where PyTorch's channels-last BatchNorm sums its batch statistics in
// float32 (the row-major kernel in double) and the running statistics drift
// up to 2.4× past the official code's 1e-5 relative agreement. FeatureMap
// always returns a row-major map.
func (r *ModifiedResNet) SetMemoryFormat(f torch.MemoryFormat) { r.layout = &f }

// layoutFor is the memory format of a forward in train or eval mode.
func (r *ModifiedResNet) layoutFor(train bool) torch.MemoryFormat {
	switch {
	case r.layout != nil:
		return *r.layout
	case train:
		return torch.RowMajor
	}
	return torch.ChannelsLast
}

// SetTraining puts the BatchNorm layers in training mode (true: batch
// statistics, running statistics and num_batches_tracked updated on every
// forward, as module.train() in PyTorch) or back in eval mode (false, the
// default: running statistics). It is for fine-tuning the encoder.
func (r *ModifiedResNet) SetTraining(train bool) { r.training = train }

// Training reports whether the BatchNorm layers use batch statistics.
func (r *ModifiedResNet) Training() bool { return r.training }

// SetBatchNormSync makes training-mode BatchNorm take its statistics over
// sync's process group (SyncBatchNorm; nil: this process's batch), as
// nn.ConvertSyncBatchNorm does for nn.BatchNorm2d layers.
func (r *ModifiedResNet) SetBatchNormSync(sync nn.BatchNormSync) { r.bnSync = sync }

// newModifiedResNet lays out the blocks cfg describes (weights unbound).
func newModifiedResNet(cfg Config, dt torch.DType) *ModifiedResNet {
	r := &ModifiedResNet{cfg: cfg, dtype: dt, AttnPool: AttentionPool2d{Heads: cfg.VisionHeads}}
	in := cfg.VisionWidth
	for st, layer := range r.stages() {
		*layer = make([]*Bottleneck, cfg.VisionStages[st])
		planes := cfg.VisionWidth << st
		for i := range *layer {
			b := &Bottleneck{Stride: 1}
			if st > 0 && i == 0 {
				b.Stride = 2
			}
			if b.Stride > 1 || in != 4*planes {
				b.Downsample = &Downsample{}
			}
			(*layer)[i] = b
			in = 4 * planes
		}
	}
	return r
}

func (r *ModifiedResNet) stages() [4]*[]*Bottleneck {
	return [4]*[]*Bottleneck{&r.Layer1, &r.Layer2, &r.Layer3, &r.Layer4}
}

// Resolution is the input side length the attnpool's positional embedding
// was made for.
func (r *ModifiedResNet) Resolution() int { return r.cfg.ImageResolution }

// Close frees the weights and the fused trunk's folded copies.
func (r *ModifiedResNet) Close() {
	r.SetFusedEval(false)
	torch.CloseAll(r)
}

// Encode maps pixels [N, 3, R, R] to raw (un-normalised) features [N, E].
func (r *ModifiedResNet) Encode(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	shape := pixels.Shape()
	res := int64(r.cfg.ImageResolution)
	if len(shape) != 4 || shape[1] != 3 || shape[2] != res || shape[3] != res {
		s.Fail(fmt.Errorf("encode image: pixels have shape %v, want [N 3 %d %d]", shape, res, res))
		return nil
	}
	return r.AttnPool.Forward(s, r.FeatureMap(s, pixels))
}

// FeatureMap runs the stem and the four stages on pixels [N, 3, H, W] (any
// size, e.g. IP-IQA's 512×512) and returns the map before the attnpool,
// [N, 32·W, H/32, W/32], row-major.
func (r *ModifiedResNet) FeatureMap(s *torch.Scope, pixels *torch.Tensor) *torch.Tensor {
	if y, ok := r.fusedForward(s, pixels); ok {
		return y
	}
	return s.ToMemoryFormat(r.forward(s, pixels, nil), torch.RowMajor)
}

// forward returns the last stage's output in the ResNet's memory format;
// stage, when set, sees the stem's output (index 0) and each stage's (1..4)
// before they are freed.
func (r *ModifiedResNet) forward(s *torch.Scope, pixels *torch.Tensor, stage func(int, *torch.Tensor)) *torch.Tensor {
	shape := pixels.Shape()
	if len(shape) != 4 || shape[1] != 3 {
		s.Fail(fmt.Errorf("resnet: pixels have shape %v, want [N 3 H W]", shape))
		return nil
	}
	// Each step's intermediates are freed as soon as it is done; autograd
	// keeps what a backward pass needs.
	var x *torch.Tensor
	step := func(f func(sub *torch.Scope, in *torch.Tensor) *torch.Tensor) {
		sub := s.Sub()
		in := x
		if in == nil {
			in = pixels
		}
		y := sub.Keep(f(sub, in))
		sub.Close()
		if x != nil {
			s.Keep(x).Close()
		}
		x = s.Adopt(y)
	}
	mode := rnMode{dt: r.dtype, train: r.training, sync: r.bnSync}
	if mode.train {
		// Training-mode BatchNorm moves the running statistics without
		// bumping their version counters: the folds would go stale unseen.
		defer r.invalidateFused()
	}
	step(func(s *torch.Scope, in *torch.Tensor) *torch.Tensor {
		h := newChain(in)
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
			return s.Conv2D(s.ToMemoryFormat(s.Cast(x, mode.dt), r.layoutFor(mode.train)), r.Conv1, nil, 2, 1)
		})
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Relu(r.BN1.forward(s, x, mode)) })
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Conv2D(x, r.Conv2, nil, 1, 1) })
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Relu(r.BN2.forward(s, x, mode)) })
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Conv2D(x, r.Conv3, nil, 1, 1) })
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Relu(r.BN3.forward(s, x, mode)) })
		h.then(s, func(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return avgPool2d(s, x, 2) })
		return h.result(s)
	})
	if stage != nil && x != nil {
		stage(0, x)
	}
	for st, layer := range r.stages() {
		for _, b := range *layer {
			step(func(s *torch.Scope, in *torch.Tensor) *torch.Tensor { return b.forward(s, in, mode) })
		}
		if stage != nil && x != nil {
			stage(st+1, x)
		}
	}
	return x
}

// checkShapes verifies the tensors against the inferred configuration.
func (r *ModifiedResNet) checkShapes() error {
	c := r.cfg
	w, d, e := int64(c.VisionWidth), int64(c.VisionWidth*32), int64(c.EmbedDim)
	g := int64(c.ImageResolution / 32)
	want := map[string][2][]int64{
		"visual.conv1.weight":                  {r.Conv1.Shape(), {w / 2, 3, 3, 3}},
		"visual.conv2.weight":                  {r.Conv2.Shape(), {w / 2, w / 2, 3, 3}},
		"visual.conv3.weight":                  {r.Conv3.Shape(), {w, w / 2, 3, 3}},
		"visual.attnpool.positional_embedding": {r.AttnPool.PositionalEmbedding.Shape(), {g*g + 1, d}},
		"visual.attnpool.q_proj.weight":        {r.AttnPool.QProj.Weight.Shape(), {d, d}},
		"visual.attnpool.k_proj.weight":        {r.AttnPool.KProj.Weight.Shape(), {d, d}},
		"visual.attnpool.v_proj.weight":        {r.AttnPool.VProj.Weight.Shape(), {d, d}},
		"visual.attnpool.c_proj.weight":        {r.AttnPool.CProj.Weight.Shape(), {e, d}},
		"visual.bn3.running_var":               {r.BN3.RunningVar.Shape(), {w}},
		"visual.attnpool.c_proj.bias":          {r.AttnPool.CProj.Bias.Shape(), {e}},
	}
	in := w
	for st, layer := range r.stages() {
		p := w << st
		for i, b := range *layer {
			pre := fmt.Sprintf("visual.layer%d.%d.", st+1, i)
			want[pre+"conv1.weight"] = [2][]int64{b.Conv1.Shape(), {p, in, 1, 1}}
			want[pre+"conv2.weight"] = [2][]int64{b.Conv2.Shape(), {p, p, 3, 3}}
			want[pre+"conv3.weight"] = [2][]int64{b.Conv3.Shape(), {4 * p, p, 1, 1}}
			want[pre+"bn3.weight"] = [2][]int64{b.BN3.Weight.Shape(), {4 * p}}
			needs := b.Stride > 1 || in != 4*p
			switch {
			case needs && b.Downsample == nil:
				return fmt.Errorf("ResNet block %s has stride %d and %d→%d channels but no downsample tensors", pre[:len(pre)-1], b.Stride, in, 4*p)
			case !needs && b.Downsample != nil:
				return fmt.Errorf("ResNet block %s has downsample tensors but keeps stride 1 and %d channels", pre[:len(pre)-1], in)
			case needs:
				want[pre+"downsample.0.weight"] = [2][]int64{b.Downsample.Conv.Shape(), {4 * p, in, 1, 1}}
			}
			in = 4 * p
		}
	}
	for name, p := range want {
		if fmt.Sprint(p[0]) != fmt.Sprint(p[1]) {
			return fmt.Errorf("tensor %s has shape %v, want %v", name, p[0], p[1])
		}
	}
	return nil
}
