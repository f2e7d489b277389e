package clip

import (
	"fmt"
	"math"

	"github.com/clipagiqa/clipagiqa/torch"
)

// bicubicA is PyTorch's cubic convolution coefficient (Keys' kernel).
const bicubicA = -0.75

// bicubicMatrix is the [out, in] matrix of PyTorch's 1-D bicubic resampling
// (F.interpolate mode "bicubic", align_corners False): source coordinate
// (o+0.5)·in/out − 0.5 (not clamped), four taps clamped to the border.
func bicubicMatrix(in, out int) []float64 {
	m := make([]float64, out*in)
	scale := float64(in) / float64(out)
	cubic1 := func(x float64) float64 { return ((bicubicA+2)*x-(bicubicA+3))*x*x + 1 }                 // |x| ≤ 1
	cubic2 := func(x float64) float64 { return ((bicubicA*x-5*bicubicA)*x+8*bicubicA)*x - 4*bicubicA } // 1 < |x| < 2
	for o := range out {
		src := (float64(o)+0.5)*scale - 0.5
		i0 := math.Floor(src)
		t := src - i0
		w := [4]float64{cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)}
		for k, wk := range w {
			idx := min(max(int(i0)+k-1, 0), in-1)
			m[o*in+idx] += wk
		}
	}
	return m
}

// InterpolatePositionalEmbedding resizes an attention pool's positional
// embedding [G²+1, D] to [grid²+1, D], as IP-IQA's interpolate_pos_embed
// does for a larger input: row 0 (the mean token) is kept and the G×G grid
// (row-major) is resampled by PyTorch's bicubic interpolation. It is one
// matrix product, so gradients flow back to pos.
func InterpolatePositionalEmbedding(s *torch.Scope, pos *torch.Tensor, grid int) *torch.Tensor {
	shape := pos.Shape()
	if len(shape) != 2 || grid < 1 {
		s.Fail(fmt.Errorf("interpolate positional embedding: shape %v to grid %d, want [G²+1 D] and grid ≥ 1", shape, grid))
		return nil
	}
	g, err := squareGrid("positional embedding", shape[0])
	if err != nil {
		s.Fail(fmt.Errorf("interpolate positional embedding: %w", err))
		return nil
	}
	if g == grid {
		return s.Ref(pos)
	}
	m := bicubicMatrix(g, grid)
	// Kronecker product: out[i·grid+j] = Σ_ab m[i,a]·m[j,b]·in[a·g+b].
	k := make([]float32, grid*grid*g*g)
	for i := range grid {
		for j := range grid {
			row := k[(i*grid+j)*g*g:]
			for a := range g {
				for b := range g {
					row[a*g+b] = float32(m[i*g+a] * m[j*g+b])
				}
			}
		}
	}
	kt := s.Cast(s.FromFloat32On(pos.Device(), k, int64(grid*grid), int64(g*g)), pos.DType())
	body := s.MatMul(kt, s.Narrow(pos, 0, 1, int64(g*g)))
	return s.Cat(0, s.Narrow(pos, 0, 0, 1), body)
}
