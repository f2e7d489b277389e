package benchkit

import (
	"image/jpeg"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSyntheticImageDeterministic(t *testing.T) {
	a, b := SyntheticImage(5, 3, 64), SyntheticImage(5, 3, 64)
	assert.Equal(t, a.Pix, b.Pix)
	assert.NotEqual(t, a.Pix, SyntheticImage(5, 4, 64).Pix)
	assert.NotEqual(t, a.Pix, SyntheticImage(6, 3, 64).Pix)
	assert.Equal(t, 64, a.Bounds().Dx())
	for i := 3; i < len(a.Pix); i += 4 {
		require.Equal(t, uint8(255), a.Pix[i], "opaque")
	}
}

func TestGenerateJPEGs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "set")
	set, err := GenerateJPEGs(dir, 3, 48, 9)
	require.NoError(t, err)
	require.Len(t, set.Paths, 3)
	require.Len(t, set.MOS, 3)
	var total int64
	for i, p := range set.Paths {
		f, err := os.Open(p)
		require.NoError(t, err)
		img, err := jpeg.Decode(f)
		f.Close()
		require.NoError(t, err, p)
		assert.Equal(t, 48, img.Bounds().Dx())
		assert.Equal(t, 48, img.Bounds().Dy())
		assert.GreaterOrEqual(t, set.MOS[i], 1.0)
		assert.Less(t, set.MOS[i], 5.0)
		st, err := os.Stat(p)
		require.NoError(t, err)
		total += st.Size()
	}
	assert.Equal(t, total, set.Bytes)

	// The same parameters reuse the files; others regenerate.
	st0, err := os.Stat(set.Paths[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(set.Paths[1]+".marker", nil, 0o644))
	again, err := GenerateJPEGs(dir, 3, 48, 9)
	require.NoError(t, err)
	st1, err := os.Stat(again.Paths[0])
	require.NoError(t, err)
	assert.Equal(t, st0.ModTime(), st1.ModTime())
	assert.Equal(t, set.MOS, again.MOS)

	require.NoError(t, os.Remove(set.Paths[2]))
	fixed, err := GenerateJPEGs(dir, 3, 48, 9)
	require.NoError(t, err)
	_, err = os.Stat(fixed.Paths[2])
	assert.NoError(t, err, "a missing file is regenerated")

	other, err := GenerateJPEGs(dir, 2, 32, 9)
	require.NoError(t, err)
	f, err := os.Open(other.Paths[0])
	require.NoError(t, err)
	cfg, err := jpeg.DecodeConfig(f)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, 32, cfg.Width)
}
