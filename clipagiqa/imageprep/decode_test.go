package imageprep

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type jpegFixture struct {
	NPx   int `json:"n_px"`
	Cases []struct {
		File      string `json:"file"`
		Note      string `json:"note"`
		Mode      string `json:"mode"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
		Native    []byte `json:"native"`
		RGB       []byte `json:"rgb"`
		Clip      []byte `json:"clip"`
		ClipFirst []byte `json:"clip_first"`
	} `json:"cases"`
}

// TestJPEGParity compares libjpeg-turbo decoding through TurboJPEG with Pillow 9.4's
// JPEG plugin (testdata/gen/make_jpegs.py): baseline 4:4:4/4:2:2/4:2:0, progressive,
// optimised Huffman, low quality, grayscale and Adobe CMYK, odd sizes. Pillow's mode,
// its native pixels, convert("RGB") and the uint8 crop of CLIP's _transform(16) (mode-aware
// and convert-first) must all be equal byte for byte (tolerance 0).
func TestJPEGParity(t *testing.T) {
	var fx jpegFixture
	readJSON(t, "jpeg/jpeg.json", &fx)
	require.NotEmpty(t, fx.Cases)
	for _, c := range fx.Cases {
		t.Run(c.File, func(t *testing.T) {
			img, err := DecodeFile(filepath.Join("testdata", "jpeg", c.File), 0)
			require.NoError(t, err, c.Note)
			require.Equal(t, c.Mode, img.Mode.String())
			require.Equal(t, [2]int{c.Width, c.Height}, [2]int{img.W, img.H})
			require.Equal(t, c.Native, img.Pix, "decoded pixels")
			rgb, err := img.ToRGB()
			require.NoError(t, err)
			require.Equal(t, c.RGB, rgb.Pix, "convert(RGB)")
			require.Equal(t, c.Clip, clipU8(t, img, fx.NPx, false), "CLIP crop")
			require.Equal(t, c.ClipFirst, clipU8(t, img, fx.NPx, true), "CLIP crop, RGB first")
		})
	}
}

type modesFixture struct {
	Cases []struct {
		File      string            `json:"file"`
		Mode      string            `json:"mode"`
		Width     int               `json:"width"`
		Height    int               `json:"height"`
		RGB       []byte            `json:"rgb"`
		Clip      map[string][]byte `json:"clip"`
		ClipFirst map[string][]byte `json:"clip_first"`
	} `json:"cases"`
}

// TestModesParity decodes PNG (every colour type and bit depth, tRNS, short palettes),
// GIF, BMP and WebP (lossless and lossy, with and without alpha) files and compares with
// Pillow 9.4 (testdata/gen/make_modes.py): the mode, convert("RGB") of the whole image,
// and the uint8 crops of CLIP's _transform(16) and (45), which resize in the image's own
// mode (NEAREST for P/1, premultiplied for RGBA/LA, 32-bit for I). Tolerance 0.
func TestModesParity(t *testing.T) {
	var fx modesFixture
	readJSON(t, "modes/modes.json", &fx)
	require.NotEmpty(t, fx.Cases)
	// Where the package reports a different but equivalent mode.
	equivalent := map[string]Mode{
		"png_la16.png": ModeLA, // Pillow: RGBA with R=G=B (LA;16B unpacked to RGBA)
	}
	for _, c := range fx.Cases {
		t.Run(c.File, func(t *testing.T) {
			img, err := DecodeFile(filepath.Join("testdata", "modes", c.File), 0)
			require.NoError(t, err)
			wantMode := pillowMode(t, c.Mode)
			if m, ok := equivalent[c.File]; ok {
				wantMode = m
			}
			require.Equal(t, wantMode, img.Mode)
			require.Equal(t, [2]int{c.Width, c.Height}, [2]int{img.W, img.H})
			rgb, err := img.ToRGB()
			require.NoError(t, err)
			require.Equal(t, c.RGB, rgb.Pix, "convert(RGB)")
			for ns, want := range c.Clip {
				n, err := strconv.Atoi(ns)
				require.NoError(t, err)
				got := clipU8(t, img, n, false)
				d, cnt := maxAbsDiffU8(got, want)
				require.Equal(t, want, got, "CLIP crop n=%d: max diff %d in %d bytes", n, d, cnt)
			}
			for ns, want := range c.ClipFirst {
				n, err := strconv.Atoi(ns)
				require.NoError(t, err)
				require.Equal(t, want, clipU8(t, img, n, true), "CLIP crop n=%d, RGB first", n)
			}
		})
	}
}

// TestTruncatedJPEG: Pillow raises "image file is truncated" for any JPEG cut short,
// even one missing only its EOI marker (checked with Pillow 9.4 when writing the
// generator); libjpeg-turbo would pad the image with grey, so Decode must refuse.
func TestTruncatedJPEG(t *testing.T) {
	for _, f := range []string{"rgb_64x48_420.jpg", "rgb_64x48_420_progressive.jpg", "gray_37x29.jpg"} {
		data, err := os.ReadFile(filepath.Join("testdata", "jpeg", f))
		require.NoError(t, err)
		for _, cut := range []int{len(data) - 2, len(data) - 50, len(data) / 2, 200} {
			_, err := Decode(data[:cut], 0)
			require.ErrorIs(t, err, ErrTruncated, "%s cut at %d", f, cut)
		}
		// Trailing garbage after EOI is fine (Pillow ignores it too).
		img, err := Decode(append(append([]byte(nil), data...), "trailing junk"...), 0)
		require.NoError(t, err)
		ref, err := Decode(data, 0)
		require.NoError(t, err)
		require.Equal(t, ref.Pix, img.Pix)
	}
	// Cut inside the header segments: still "truncated".
	data, err := os.ReadFile(filepath.Join("testdata", "jpeg", "rgb_37x29_444.jpg"))
	require.NoError(t, err)
	for _, cut := range []int{3, 10, 30} {
		_, err := Decode(data[:cut], 0)
		require.ErrorIs(t, err, ErrTruncated, "cut at %d", cut)
	}
}

// TestJPEGEOIWalker checks jpegWalk on hand-made streams: an EOI inside an APP
// segment (an EXIF thumbnail) does not count, stuffed 0xFF00 and RSTn in scan data are
// skipped, fill bytes before a marker are allowed.
func TestJPEGEOIWalker(t *testing.T) {
	app := []byte{0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00} // APP1 holding FF D9
	sos := []byte{0xFF, 0xDA, 0x00, 0x03, 0x01}
	scan := []byte{0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56}
	soi := []byte{0xFF, 0xD8}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name string
		data []byte
		want int
	}{
		{"complete", cat(soi, app, sos, scan, []byte{0xFF, 0xD9}), jpegComplete},
		{"fill bytes before EOI", cat(soi, sos, scan, []byte{0xFF, 0xFF, 0xFF, 0xD9}), jpegComplete},
		{"second scan", cat(soi, sos, scan, []byte{0xFF, 0xC4, 0x00, 0x04, 0xFF, 0xD9}, sos, scan, []byte{0xFF, 0xD9}), jpegComplete},
		{"thumbnail EOI only", cat(soi, app, sos, scan), jpegEndsEarly},
		{"cut in scan", cat(soi, sos, scan[:3]), jpegEndsEarly},
		{"cut in segment", cat(soi, app[:5]), jpegEndsEarly},
		{"no EOI after DHT", cat(soi, sos, scan, []byte{0xFF, 0xC4, 0x00, 0x04, 0xFF, 0xD9}), jpegEndsEarly},
		{"garbage, no marker", cat(soi, []byte{0x12, 0x34}), jpegEndsEarly},
		{"garbage before EOI", cat(soi, sos, scan, []byte{0xFF, 0xD9}[:0], []byte{0xFF, 0xC4, 0x00, 0x02, 0x55, 0x66, 0xFF, 0xD9}), jpegComplete},
		{"bad segment length", cat(soi, []byte{0xFF, 0xE0, 0x00, 0x01}), jpegMalformed},
		{"reserved marker", cat(soi, []byte{0xFF, 0x45, 0x00, 0x04, 0x00, 0x00}), jpegMalformed},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, jpegWalk(tc.data), tc.name)
	}
}
