package nn

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// built returns m, or the store's first error with the module's path.
func built[M any](p Path, what string, m M) (M, error) {
	var zero M
	if !p.ok() {
		return zero, errStore
	}
	if err := p.store.Err(); err != nil {
		return zero, fmt.Errorf("%s %q: %w", what, p.prefix, err)
	}
	return m, nil
}

// Linear is torch.nn.Linear: y = x·Wᵀ + b. Tensors: weight [out, in], bias [out].
type Linear struct {
	Weight, Bias *torch.Tensor // Bias is nil without bias
}

// NewLinear registers weight (and bias) under p with PyTorch's default init.
func NewLinear(p Path, in, out int64, bias bool) (*Linear, error) {
	m := &Linear{Weight: p.NewParam("weight", KaimingUniform(in), out, in)}
	if bias {
		m.Bias = p.NewParam("bias", KaimingUniform(in), out)
	}
	return built(p, "linear", m)
}

// Forward applies the layer to [..., in].
func (m *Linear) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Linear(x, m.Weight, m.Bias)
}

// LayerNorm is CLIP's LayerNorm: torch.nn.LayerNorm over the last dimension,
// computed in float32 whatever the input dtype, and cast back (so fp16 models
// normalise in full precision). Tensors: weight, bias [dim].
type LayerNorm struct {
	Weight, Bias *torch.Tensor
	Eps          float64
}

// NewLayerNorm registers weight (ones) and bias (zeros) under p.
func NewLayerNorm(p Path, dim int64, eps float64) (*LayerNorm, error) {
	m := &LayerNorm{Weight: p.NewParam("weight", Ones, dim), Bias: p.NewParam("bias", Zeros, dim), Eps: eps}
	return built(p, "layer norm", m)
}

// Forward normalises x over its last dimension.
func (m *LayerNorm) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	if x == nil || s.Err() != nil {
		return s.LayerNorm(x, nil, nil, m.Eps) // records the error
	}
	dt := x.DType()
	if dt == torch.Float32 {
		return s.LayerNorm(x, m.float32(s, m.Weight), m.float32(s, m.Bias), m.Eps)
	}
	y := s.LayerNorm(s.Cast(x, torch.Float32), m.float32(s, m.Weight), m.float32(s, m.Bias), m.Eps)
	return s.Cast(y, dt)
}

func (m *LayerNorm) float32(s *torch.Scope, t *torch.Tensor) *torch.Tensor {
	if t == nil || t.DType() == torch.Float32 {
		return t
	}
	return s.Cast(t, torch.Float32)
}

// Conv2dConfig describes a torch.nn.Conv2d besides its channel counts. Zero
// Stride, Dilation and Groups take PyTorch's defaults (1); Padding defaults
// to none. Bias must be asked for (CLIP's convolutions have none; PyTorch's
// default is bias=True).
type Conv2dConfig struct {
	Kernel, Stride, Padding, Dilation torch.Pair
	Groups                            int64
	Bias                              bool
}

// Conv2d is torch.nn.Conv2d. Tensors: weight [out, in/groups, kh, kw], bias [out].
type Conv2d struct {
	Weight, Bias *torch.Tensor
	Options      torch.Conv2DOptions
}

// NewConv2d registers weight (and bias) under p with PyTorch's default init.
func NewConv2d(p Path, in, out int64, c Conv2dConfig) (*Conv2d, error) {
	groups := max(c.Groups, 1)
	if in%groups != 0 || out%groups != 0 {
		return nil, fmt.Errorf("conv2d %q: %d in and %d out channels are not divisible by %d groups", p.prefix, in, out, groups)
	}
	fanIn := in / groups * c.Kernel[0] * c.Kernel[1]
	opts := torch.Conv2DOptions{Stride: c.Stride, Padding: c.Padding, Dilation: c.Dilation, Groups: c.Groups}
	m := &Conv2d{Weight: p.NewParam("weight", KaimingUniform(fanIn), out, in/groups, c.Kernel[0], c.Kernel[1]), Options: opts}
	if c.Bias {
		m.Bias = p.NewParam("bias", KaimingUniform(fanIn), out)
	}
	return built(p, "conv2d", m)
}

// Forward convolves [N, in, H, W].
func (m *Conv2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Conv2DEx(x, m.Weight, m.Bias, m.Options)
}

// BatchNormConfig are torch.nn.BatchNorm2d's hyper-parameters.
type BatchNormConfig struct {
	Eps      float64
	Momentum float64
	// CumulativeAverage is momentum=None: running stats are the plain
	// average over all batches seen (factor 1/num_batches_tracked).
	CumulativeAverage bool
}

// BatchNormDefaults are PyTorch's: eps 1e-5, momentum 0.1.
var BatchNormDefaults = BatchNormConfig{Eps: 1e-5, Momentum: 0.1}

// BatchNorm2d is torch.nn.BatchNorm2d (affine, tracking running stats).
// Parameters weight, bias [C]; buffers running_mean, running_var [C],
// num_batches_tracked (int64 scalar). In training mode (Path.Training) it
// normalises by batch statistics and updates the buffers; in eval mode it
// uses the running statistics. After ConvertSyncBatchNorm the training-mode
// statistics are those of the global batch over a process group.
type BatchNorm2d struct {
	Weight, Bias            *torch.Tensor
	RunningMean, RunningVar *torch.Tensor
	NumBatchesTracked       *torch.Tensor
	Config                  BatchNormConfig
	path                    Path
}

// NewBatchNorm2d registers the parameters and buffers under p.
func NewBatchNorm2d(p Path, features int64, c BatchNormConfig) (*BatchNorm2d, error) {
	m := &BatchNorm2d{
		Weight:            p.NewParam("weight", Ones, features),
		Bias:              p.NewParam("bias", Zeros, features),
		RunningMean:       p.NewBuffer("running_mean", torch.Float32, Zeros, features),
		RunningVar:        p.NewBuffer("running_var", torch.Float32, Ones, features),
		NumBatchesTracked: p.NewBuffer("num_batches_tracked", torch.Int64, Zeros),
		Config:            c,
		path:              p,
	}
	p.SetOptional("num_batches_tracked")
	return built(p, "batch norm", m)
}

// Forward normalises [N, C, H, W] per channel.
func (m *BatchNorm2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	if x != nil && s.Err() == nil && x.Dim() != 4 {
		s.Fail(fmt.Errorf("batch norm %q: expected a 4-D input, got %v", m.path.prefix, x.Shape()))
		return nil
	}
	if !m.path.Training() {
		return s.BatchNorm(x, m.Weight, m.Bias, m.RunningMean, m.RunningVar, false, 0, m.Config.Eps)
	}
	if s.Err() != nil {
		return nil
	}
	tracked, err := m.countBatch()
	if err != nil {
		s.Fail(fmt.Errorf("batch norm %q: %w", m.path.prefix, err))
		return nil
	}
	factor := m.Config.Momentum
	if m.Config.CumulativeAverage {
		factor = 1 / float64(tracked)
	}
	if sync := m.path.store.batchNormSync; sync != nil {
		return sync.BatchNormTrain(s, x, m.Weight, m.Bias, m.RunningMean, m.RunningVar, factor, m.Config.Eps)
	}
	return s.BatchNorm(x, m.Weight, m.Bias, m.RunningMean, m.RunningVar, true, factor, m.Config.Eps)
}

// countBatch increments num_batches_tracked and returns its new value.
func (m *BatchNorm2d) countBatch() (int64, error) {
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	next := s.AddScalar(m.NumBatchesTracked, 1)
	if err := s.Err(); err != nil {
		return 0, err
	}
	if err := m.NumBatchesTracked.CopyFrom(next); err != nil {
		return 0, err
	}
	v, err := next.Item()
	return int64(v), err
}

// ReLU is torch.nn.ReLU.
type ReLU struct{}

// Forward returns max(x, 0).
func (ReLU) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor { return s.Relu(x) }

// AvgPool2d is torch.nn.AvgPool2d; see torch.AvgPool2DOpts for PyTorch's defaults.
type AvgPool2d struct{ Options torch.AvgPool2DOptions }

// Forward pools [N, C, H, W].
func (m AvgPool2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.AvgPool2D(x, m.Options)
}

// MaxPool2d is torch.nn.MaxPool2d.
type MaxPool2d struct{ Options torch.MaxPool2DOptions }

// Forward pools [N, C, H, W].
func (m MaxPool2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.MaxPool2D(x, m.Options)
}

// AdaptiveAvgPool2d is torch.nn.AdaptiveAvgPool2d to a fixed output size.
type AdaptiveAvgPool2d struct{ Size torch.Pair }

// Forward pools [N, C, H, W] to [N, C, Size...].
func (m AdaptiveAvgPool2d) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.AdaptiveAvgPool2D(x, m.Size)
}

// Dropout is torch.nn.Dropout: active only when its path is in training mode.
type Dropout struct {
	P    float64
	path Path
}

// NewDropout returns a dropout layer whose mode is that of p.
func NewDropout(p Path, prob float64) (*Dropout, error) {
	if prob < 0 || prob > 1 {
		return nil, fmt.Errorf("dropout %q: probability %v is outside [0, 1]", p.prefix, prob)
	}
	return built(p, "dropout", &Dropout{P: prob, path: p})
}

// Forward zeroes elements with probability P in training mode (scaling the
// rest by 1/(1-P)); identity in eval mode.
func (m *Dropout) Forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	return s.Dropout(x, m.P, m.path.Training())
}

// Embedding is torch.nn.Embedding. Tensor: weight [num, dim].
type Embedding struct {
	Weight     *torch.Tensor
	PaddingIdx int64 // < 0: none; else that row is zero-initialised and gets no gradient
}

// NewEmbedding registers weight ~ N(0, 1) under p (row paddingIdx zeroed
// when paddingIdx >= 0, as PyTorch does).
func NewEmbedding(p Path, num, dim, paddingIdx int64) (*Embedding, error) {
	if paddingIdx >= num {
		return nil, fmt.Errorf("embedding %q: padding index %d is not below %d", p.prefix, paddingIdx, num)
	}
	init := Normal(0, 1)
	if paddingIdx >= 0 {
		init = func(s *torch.Scope, dt torch.DType, shape []int64) *torch.Tensor {
			w := Normal(0, 1)(s, dt, shape)
			row := s.Select(w, 0, paddingIdx) // a view: zeroing it zeroes w's row
			if s.Err() == nil {
				s.Fail(row.CopyFrom(s.Zeros(dt, shape[1])))
			}
			return w
		}
	}
	m := &Embedding{Weight: p.NewParam("weight", init, num, dim), PaddingIdx: paddingIdx}
	return built(p, "embedding", m)
}

// Forward looks up ids (int64, any shape) → [..., dim].
func (m *Embedding) Forward(s *torch.Scope, ids *torch.Tensor) *torch.Tensor {
	return s.EmbeddingPadded(m.Weight, ids, m.PaddingIdx)
}
