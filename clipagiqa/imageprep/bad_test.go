package imageprep

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBadInputs: every hostile or broken input gives an error of the right kind and no
// panic; the file name appears in DecodeFile's error.
func TestBadInputs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.IntN(256))
	}
	pngData, err := os.ReadFile(filepath.Join("testdata", "modes", "png_rgb.png"))
	require.NoError(t, err)
	jpegData, err := os.ReadFile(filepath.Join("testdata", "jpeg", "rgb_64x48_444.jpg"))
	require.NoError(t, err)

	// A valid PNG header claiming 30000×30000 and no data at all.
	bomb := append(pngHeader(30000, 30000, 8, 2), pngChunk("IEND", nil)...)
	zeroPNG := append(pngHeader(0, 0, 8, 2), pngChunk("IEND", nil)...)
	// JPEG with its frame header patched to 65000×65000 (SOF0 of the fixture file).
	jpegBomb := append([]byte(nil), jpegData...)
	sof := bytes.Index(jpegBomb, []byte{0xFF, 0xC0})
	require.Positive(t, sof)
	jpegBomb[sof+5], jpegBomb[sof+6], jpegBomb[sof+7], jpegBomb[sof+8] = 0xFD, 0xE8, 0xFD, 0xE8

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"random bytes", random, ErrUnknownFormat},
		{"text", []byte("this is not an image"), ErrUnknownFormat},
		{"JPEG magic then noise", append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, random...), nil},
		{"truncated JPEG", jpegData[:len(jpegData)/2], ErrTruncated},
		{"truncated PNG", pngData[:len(pngData)/2], ErrTruncated},
		{"PNG signature only", pngData[:8], ErrTruncated},
		{"PNG 0x0", zeroPNG, ErrEmptyImage},
		{"PNG 5x0", append(pngHeader(5, 0, 8, 2), pngChunk("IEND", nil)...), ErrEmptyImage},
		{"GIF 0x0", []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00;"), ErrEmptyImage},
		{"PNG bomb header", bomb, ErrTooManyPixels},
		{"JPEG bomb header", jpegBomb, ErrTooManyPixels},
		{"GIF header only", []byte("GIF89a\x10\x00\x10\x00\x00\x00\x00"), ErrTruncated},
		{"BMP magic then noise", append([]byte("BM"), random[:100]...), ErrCorrupt},
		{"RIFF WEBP then noise", append([]byte("RIFF\x10\x00\x00\x00WEBPVP8 "), random[:50]...), ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Decode(tc.data, 0)
			require.Nil(t, img)
			if tc.want == nil {
				// Noise can look like a segment that runs past the end.
				require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTruncated), "got %v", err)
				return
			}
			require.ErrorIs(t, err, tc.want, "got %v", err)
		})
	}

	// The bomb is refused from the header, mentioning the size and the limit.
	_, err = Decode(bomb, 0)
	require.ErrorContains(t, err, "30000x30000")
	require.ErrorContains(t, err, "89478485")
	_, err = Decode(bomb, 1000)
	require.ErrorContains(t, err, "limit 1000")
	// A limit just above the image size admits it; just below refuses it.
	_, err = Decode(pngData, 37*29)
	require.NoError(t, err)
	_, err = Decode(pngData, 37*29-1)
	require.ErrorIs(t, err, ErrTooManyPixels)
	_, err = Decode(jpegData, 64*48-1)
	require.ErrorIs(t, err, ErrTooManyPixels)

	// File names appear in errors.
	dir := t.TempDir()
	p := filepath.Join(dir, "broken.jpg")
	require.NoError(t, os.WriteFile(p, jpegData[:100], 0o600))
	_, err = DecodeFile(p, 0)
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorContains(t, err, "broken.jpg")
	_, err = LoadFile(p, DefaultOptions(8))
	require.ErrorContains(t, err, "broken.jpg")
	_, err = DecodeFile(filepath.Join(dir, "missing.png"), 0)
	require.ErrorContains(t, err, "missing.png")
}

// TestPNGWithoutIEND: Pillow decodes a PNG whose IEND chunk is missing (checked with
// Pillow 9.4); Go's decoder needs it, so Decode retries with one appended.
func TestPNGWithoutIEND(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "modes", "png_rgb.png"))
	require.NoError(t, err)
	require.True(t, bytes.HasSuffix(data, pngIEND))
	full, err := Decode(data, 0)
	require.NoError(t, err)
	cut, err := Decode(data[:len(data)-len(pngIEND)], 0)
	require.NoError(t, err)
	require.Equal(t, full.Pix, cut.Pix)
}

// TestFromImage checks the conversion of Go images against values worked out by hand.
func TestFromImage(t *testing.T) {
	g := image.NewGray16(image.Rect(0, 0, 2, 1))
	g.Pix = []byte{0x01, 0x02, 0xFF, 0xFF}
	m, err := FromImage(g)
	require.NoError(t, err)
	require.Equal(t, ModeI, m.Mode)
	require.Equal(t, []int32{0x0102, 0xFFFF}, m.PixI)

	rgba := image.NewRGBA(image.Rect(0, 0, 1, 1))
	rgba.Pix = []byte{10, 20, 30, 255}
	m, err = FromImage(rgba)
	require.NoError(t, err)
	require.Equal(t, ModeRGB, m.Mode)
	require.Equal(t, []uint8{10, 20, 30}, m.Pix)

	// Premultiplied half-transparent red becomes straight RGBA.
	rgba.Pix = []byte{128, 0, 0, 128}
	m, err = FromImage(rgba)
	require.NoError(t, err)
	require.Equal(t, ModeRGBA, m.Mode)
	require.Equal(t, []uint8{255, 0, 0, 128}, m.Pix)

	_, err = FromImage(image.NewRGBA(image.Rect(0, 0, 0, 5)))
	require.ErrorIs(t, err, ErrEmptyImage)

	// Round trip through Go's PNG encoder.
	var buf bytes.Buffer
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range src.Pix {
		src.Pix[i] = uint8(40 * i)
	}
	require.NoError(t, png.Encode(&buf, src))
	dec, err := Decode(buf.Bytes(), 0)
	require.NoError(t, err)
	viaGo, err := FromImage(src)
	require.NoError(t, err)
	require.Equal(t, viaGo, dec)
}

// TestToRGBConversions checks Pillow's convert("RGB") formulas on hand-computed values:
// cmyk2rgb uses nk - nk*c/255 (rounded) with nk = 255 - k, mode I clips to 0..255.
func TestToRGBConversions(t *testing.T) {
	cmyk := &Image{W: 3, H: 1, Mode: ModeCMYK, Pix: []uint8{0, 0, 0, 0, 255, 255, 255, 0, 100, 0, 50, 55}}
	rgb, err := cmyk.ToRGB()
	require.NoError(t, err)
	// Pixel 3: nk = 200; 200 - round(100*200/255) = 200 - 78 = 122; 200 - 0; 200 - round(50*200/255) = 200 - 39 = 161.
	require.Equal(t, []uint8{255, 255, 255, 0, 0, 0, 122, 200, 161}, rgb.Pix)

	i := &Image{W: 4, H: 1, Mode: ModeI, PixI: []int32{-5, 0, 200, 70000}}
	rgb, err = i.ToRGB()
	require.NoError(t, err)
	require.Equal(t, []uint8{0, 0, 0, 0, 0, 0, 200, 200, 200, 255, 255, 255}, rgb.Pix)

	la := &Image{W: 1, H: 1, Mode: ModeLA, Pix: []uint8{77, 3}}
	rgb, err = la.ToRGB()
	require.NoError(t, err)
	require.Equal(t, []uint8{77, 77, 77}, rgb.Pix)
}
