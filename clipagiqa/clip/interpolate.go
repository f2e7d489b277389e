package clip

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch"
)

// InterpolatePositionalEmbedding resizes an attention pool's positional
// embedding [G²+1, D] to [grid²+1, D], as IP-IQA's interpolate_pos_embed
// does for a larger input: row 0 (the mean token) is kept and the G×G grid
// (row-major) is resampled by F.interpolate(mode="bicubic",
// align_corners=False). Gradients flow back to pos.
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
	gg, d := int64(g), shape[1]
	body := s.Permute(s.Reshape(s.Narrow(pos, 0, 1, gg*gg), 1, gg, gg, d), 0, 3, 1, 2) // [1, D, G, G]
	body = s.Interpolate(body, torch.Sq(int64(grid)), torch.Bicubic, false)
	body = s.Reshape(s.Permute(body, 0, 2, 3, 1), int64(grid*grid), d) // row-major grid
	return s.Cat(0, s.Narrow(pos, 0, 0, 1), body)
}
