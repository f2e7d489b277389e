package scorer

import (
	"github.com/clipagiqa/clipagiqa/clipagiqa/agiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
)

// The built-in methods register themselves when imported; the tests score
// with them by name, as the root package's LoadScorer does.
const (
	MethodAGIQA   = agiqa.MethodName
	MethodCLIPIQA = clipiqa.MethodName
	MethodIPIQA   = ipiqa.MethodName
)

// loadDefault is Load with CLIP-AGIQA unless opts pick another method (the
// root package's LoadScorer).
func loadDefault(clipPath, checkpoint string, opts ...Option) (*Scorer, error) {
	return Load(clipPath, checkpoint, append([]Option{WithMethod(MethodAGIQA)}, opts...)...)
}
