package ipiqa

import (
	"fmt"
	"math"
	"testing"

	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The official Resize((S,S)) output is stored as resized/img_k_S.png; the
// float input is exactly (u8/255 − mean)/std of it (ipiqaref.Pixels), so our
// preprocessing of the original PNG must equal it bit for bit.
func TestPreprocessMatchesOfficialResize(t *testing.T) {
	for _, size := range []int{512, 224} {
		want, err := ipiqaref.Pixels(size)
		require.NoError(t, err)
		per := 3 * size * size
		for k := range ipiqaref.Images {
			got, err := PreprocessFile(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k)), PreprocessOptions(size))
			require.NoError(t, err)
			ref := want[k*per : (k+1)*per]
			diff, worst := 0, 0.0
			for i := range ref {
				if got[i] != ref[i] {
					diff++
					worst = math.Max(worst, math.Abs(float64(got[i]-ref[i])))
				}
			}
			assert.Zero(t, diff, "img_%d at %d: %d values differ (max %.3g)", k, size, diff, worst)
		}
	}
	_, err := Preprocess(nil, PreprocessOptions(512))
	assert.Error(t, err)
}

// clip.tokenize(prompt, truncate=True) as the official code calls it:
// truncation, whitespace-only and html-escaped prompts, id 0 as a token.
func TestTokenizeMatchesOfficial(t *testing.T) {
	f := loadFixture(t)
	m := newRandomModel(t, Options{})
	texts := make([]string, len(f.Prompts))
	for i, p := range f.Prompts {
		texts[i] = p.Text
	}
	ids, err := m.Tokenize(texts)
	require.NoError(t, err)
	for i, p := range f.Prompts {
		assert.Equal(t, p.Tokens77, ids[i], "prompt %d %q", i, p.Text)
	}
}
