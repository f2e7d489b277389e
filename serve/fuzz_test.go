package serve

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/image/bmp"
)

// tinyImages are small valid files of every decoded format, as fuzz seeds.
func tinyImages(t testing.TB) [][]byte {
	t.Helper()
	rgba := image.NewRGBA(image.Rect(0, 0, 9, 7))
	gray := image.NewGray(image.Rect(0, 0, 5, 11))
	pal := image.NewPaletted(image.Rect(0, 0, 6, 6), color.Palette{color.Black, color.White, color.RGBA{255, 0, 0, 255}})
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i * 37)
	}
	for i := range gray.Pix {
		gray.Pix[i] = byte(i * 91)
	}
	for i := range pal.Pix {
		pal.Pix[i] = byte(i % 3)
	}
	var out [][]byte
	enc := []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return png.Encode(b, rgba) },
		func(b *bytes.Buffer) error { return png.Encode(b, gray) },
		func(b *bytes.Buffer) error { return jpeg.Encode(b, rgba, &jpeg.Options{Quality: 50}) },
		func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) },
		func(b *bytes.Buffer) error { return bmp.Encode(b, rgba) },
	}
	for _, e := range enc {
		var b bytes.Buffer
		if err := e(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

// FuzzScoreBytes drives arbitrary bytes through the server's raw-image path:
// decode, pixel limit, preprocess, batching and the model. Whatever the input,
// the answer is 200 with a finite score, 400 or 422, with a JSON body.
// `go test` runs the seeds (testdata/fuzz/FuzzScoreBytes and those below);
// `go test -fuzz FuzzScoreBytes ./serve` explores.
func FuzzScoreBytes(f *testing.F) {
	for _, b := range tinyImages(f) {
		f.Add(b)
		f.Add(b[:len(b)/2]) // truncated
	}
	f.Add([]byte{})
	f.Add(pngChunks(30000, 30000, 2, nil))
	f.Add(zipBombPNG(5000, 5000, 1<<20))
	f.Add([]byte("RIFF\x10\x00\x00\x00WEBPVP8 "))
	s := New(Config{Logger: quietLogger()})
	s.SetBackend(scorer(f))
	h := s.Handler()
	f.Fuzz(func(t *testing.T, data []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/score", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/octet-stream")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var body struct {
			Error   string   `json:"error"`
			Results []Result `json:"results"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("status %d, body not JSON: %q", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case http.StatusOK:
			if len(body.Results) != 1 || body.Results[0].Score == nil {
				t.Fatalf("200 without a score: %s", rec.Body.String())
			}
			if v := *body.Results[0].Score; math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("score %v", v)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
			if body.Error == "" {
				t.Fatalf("%d without an error message", rec.Code)
			}
		default:
			t.Fatalf("status %d for %d input bytes: %s", rec.Code, len(data), rec.Body.String())
		}
	})
}
