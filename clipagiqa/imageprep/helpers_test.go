package imageprep

import (
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// readJSON loads a fixture written by testdata/gen/*.py.
func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", path))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, v))
}

// clipU8 returns the uint8 RGB (HWC) crop of CLIP's _transform(n) before ToTensor, the
// quantity the Python fixtures record, using the package's own resize path.
func clipU8(t testing.TB, m *Image, n int, convertFirst bool) []uint8 {
	t.Helper()
	if convertFirst && m.Mode != ModeRGB {
		var err error
		m, err = m.ToRGB()
		require.NoError(t, err)
	}
	rw, rh := ResizedSize(m.W, m.H, n)
	s := new(scratch)
	pix, pixI := s.resize(m, window{sw: m.W, sh: m.H, dw: rw, dh: rh, ox: CenterCropOffset(rw, n), oy: CenterCropOffset(rh, n), ow: n, oh: n})
	win := &Image{W: n, H: n, Mode: m.Mode, Pix: pix, PixI: pixI}
	rgb, err := win.ToRGB()
	require.NoError(t, err)
	return rgb.Pix
}

// maxAbsDiffU8 returns the largest |a-b| and how many bytes differ.
func maxAbsDiffU8(a, b []uint8) (int, int) {
	m, n := 0, 0
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d < 0 {
			d = -d
		}
		if d > 0 {
			n++
		}
		m = max(m, d)
	}
	return m, n
}

// pillowMode parses Pillow's mode names.
func pillowMode(t testing.TB, s string) Mode {
	t.Helper()
	for m := ModeL; m <= ModeI; m++ {
		if m.String() == s {
			return m
		}
	}
	t.Fatalf("unknown Pillow mode %q", s)
	return 0
}

// pngChunk builds one PNG chunk with its CRC.
func pngChunk(typ string, payload []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	out = append(out, typ...)
	out = append(out, payload...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(append([]byte(typ), payload...)))
}

// pngHeader returns a PNG signature plus IHDR for a w×h image of the given depth and
// colour type, with no image data.
func pngHeader(w, h uint32, depth, ctype byte) []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, depth, ctype, 0, 0, 0)
	return append([]byte("\x89PNG\r\n\x1a\n"), pngChunk("IHDR", ihdr)...)
}
