package imageprep

import (
	"bytes"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"testing"
)

// jpeg512 encodes a 512×512 photo-like test image (gradients, a grating and noise) with
// Go's encoder (4:2:0, quality 90); decoding still goes through libjpeg-turbo.
func jpeg512(b *testing.B) []byte {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	im := image.NewRGBA(image.Rect(0, 0, 512, 512))
	for y := 0; y < 512; y++ {
		for x := 0; x < 512; x++ {
			i := im.PixOffset(x, y)
			g := 127.5 + 120*math.Sin(float64(x)/7+float64(y)/11)
			im.Pix[i] = uint8(x / 2)
			im.Pix[i+1] = uint8(min(255, max(0, g+rng.NormFloat64()*8)))
			im.Pix[i+2] = uint8(y / 2)
			im.Pix[i+3] = 255
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, im, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecodeTransformJPEG512 is the hot path: decode a 512×512 JPEG and produce the
// 3×224×224 CLIP tensor into a reused buffer.
func BenchmarkDecodeTransformJPEG512(b *testing.B) {
	data := jpeg512(b)
	opts := DefaultOptions(224)
	dst := make([]float32, opts.TensorLen())
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		img, err := Decode(data, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := CenterTransformInto(dst, img, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeJPEG512 is the decode alone.
func BenchmarkDecodeJPEG512(b *testing.B) {
	data := jpeg512(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCenterTransform512 is resize + crop + normalise of a decoded 512×512 image.
func BenchmarkCenterTransform512(b *testing.B) {
	img, err := Decode(jpeg512(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions(224)
	dst := make([]float32, opts.TensorLen())
	b.ReportAllocs()
	for b.Loop() {
		if err := CenterTransformInto(dst, img, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRandomTransform512 is the training augmentation on a decoded 512×512 image.
func BenchmarkRandomTransform512(b *testing.B) {
	img, err := Decode(jpeg512(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions(224)
	dst := make([]float32, opts.TensorLen())
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		if err := RandomTransformInto(dst, img, opts, rng); err != nil {
			b.Fatal(err)
		}
	}
}
