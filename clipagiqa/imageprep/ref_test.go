package imageprep

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type refFixture struct {
	Size   int `json:"size"`
	Images []struct {
		File   string    `json:"file"`
		Crop   string    `json:"crop"`
		Mode   string    `json:"mode"`
		Width  int       `json:"width"`
		Height int       `json:"height"`
		SHA256 string    `json:"sha256_f32le"`
		Sum    float64   `json:"sum"`
		First8 []float64 `json:"first8"`
	} `json:"images"`
}

// TestReferencePreprocessing checks CLIP's _transform(224) on the 8 reference images of
// the clip-agiqa-ref fixture against preprocessed.npy (computed by openai/CLIP's code with
// Pillow 9.4). The npy is stored as its uint8 crops plus the SHA-256 of each image's
// float32 bytes (see testdata/gen/make_ref.py). Target: bit-exact (equal SHA-256 and a
// max abs difference of 0). The acceptance bound is also asserted: at most
// 2/255 in uint8 terms where a resize happens, 1e-6 where none does (img_3).
func TestReferencePreprocessing(t *testing.T) {
	var fx refFixture
	readJSON(t, "ref/ref.json", &fx)
	require.Len(t, fx.Images, 8)
	opts := DefaultOptions(fx.Size)
	n := fx.Size
	for _, im := range fx.Images {
		t.Run(im.File, func(t *testing.T) {
			img, err := DecodeFile(filepath.Join("testdata", "ref", im.File), 0)
			require.NoError(t, err)
			require.Equal(t, im.Mode, img.Mode.String())
			require.Equal(t, [2]int{im.Width, im.Height}, [2]int{img.W, img.H})

			got, err := LoadFile(filepath.Join("testdata", "ref", im.File), opts)
			require.NoError(t, err)
			require.Len(t, got, 3*n*n)

			// Expected floats, re-derived here from the stored uint8 crop.
			crop, err := DecodeFile(filepath.Join("testdata", "ref", im.Crop), 0)
			require.NoError(t, err)
			require.Equal(t, ModeRGB, crop.Mode)
			want := make([]float32, 3*n*n)
			for c := 0; c < 3; c++ {
				for i := 0; i < n*n; i++ {
					x := float32(crop.Pix[3*i+c]) / float32(255)
					want[c*n*n+i] = (x - CLIPMean[c]) / CLIPStd[c]
				}
			}
			maxDiff := 0.0
			for i := range got {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-float64(want[i])))
			}
			u8 := clipU8(t, img, n, false)
			maxU8, nDiff := maxAbsDiffU8(u8, crop.Pix)
			t.Logf("%s: max |Δ| float %.3g, uint8 %d (%d of %d bytes differ)", im.File, maxDiff, maxU8, nDiff, len(u8))

			if im.Width == n && im.Height == n {
				assert.LessOrEqual(t, maxDiff, 1e-6, "no-resize image")
			} else {
				assert.LessOrEqual(t, maxU8, 2, "resized image, uint8 bound")
			}
			// Bit-exactness against the npy itself.
			buf := make([]byte, 4*len(got))
			for i, v := range got {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			sum := sha256.Sum256(buf)
			assert.Equal(t, im.SHA256, hex.EncodeToString(sum[:]), "float32 bytes differ from preprocessed.npy")
			assert.Equal(t, 0.0, maxDiff)
			for i, v := range im.First8 {
				assert.Equal(t, float32(v), got[i], "value %d", i)
			}
		})
	}
}

// TestBatchMatchesSingle checks that Batch and LoadBatch lay images out as NCHW and give
// the same values as one-by-one transforms.
func TestBatchMatchesSingle(t *testing.T) {
	var fx refFixture
	readJSON(t, "ref/ref.json", &fx)
	opts := DefaultOptions(fx.Size)
	var imgs []*Image
	var paths []string
	for _, im := range fx.Images {
		p := filepath.Join("testdata", "ref", im.File)
		img, err := DecodeFile(p, 0)
		require.NoError(t, err)
		imgs = append(imgs, img)
		paths = append(paths, p)
	}
	batch, err := Batch(imgs, opts)
	require.NoError(t, err)
	files, err := LoadBatch(paths, opts)
	require.NoError(t, err)
	require.Equal(t, batch, files)
	per := opts.TensorLen()
	require.Len(t, batch, len(imgs)*per)
	for i, img := range imgs {
		one, err := CenterTransform(img, opts)
		require.NoError(t, err)
		require.Equal(t, one, batch[i*per:(i+1)*per], "image %d", i)
	}

	_, err = LoadBatch([]string{paths[0], "testdata/does-not-exist.png"}, opts)
	require.ErrorContains(t, err, "does-not-exist.png")
}
