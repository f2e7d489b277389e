//go:build ignore

// Writes the committed seed corpus of FuzzScoreBytes: small images in the
// decoder modes the in-code seeds miss (16-bit gray, straight alpha,
// transparent palette, gray JPEG, 1×1). Run from serve/: go run testdata/gen/seeds.go
package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log"
	"os"
	"path/filepath"
)

func main() {
	dir := filepath.Join("testdata", "fuzz", "FuzzScoreBytes")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	g16 := image.NewGray16(image.Rect(0, 0, 4, 3))
	for i := range g16.Pix {
		g16.Pix[i] = byte(i * 53)
	}
	nrgba := image.NewNRGBA(image.Rect(0, 0, 5, 4))
	for i := range nrgba.Pix {
		nrgba.Pix[i] = byte(i * 29)
	}
	pal := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Transparent, color.RGBA{0, 128, 255, 255}})
	for i := range pal.Pix {
		pal.Pix[i] = byte(i % 2)
	}
	gray := image.NewGray(image.Rect(0, 0, 17, 9))
	for i := range gray.Pix {
		gray.Pix[i] = byte(i * 7)
	}
	one := image.NewRGBA(image.Rect(0, 0, 1, 1))
	one.Pix = []byte{200, 10, 90, 255}
	seeds := map[string]func(*bytes.Buffer) error{
		"png-gray16":      func(b *bytes.Buffer) error { return png.Encode(b, g16) },
		"png-nrgba-alpha": func(b *bytes.Buffer) error { return png.Encode(b, nrgba) },
		"png-palette-trn": func(b *bytes.Buffer) error { return png.Encode(b, pal) },
		"jpeg-gray":       func(b *bytes.Buffer) error { return jpeg.Encode(b, gray, &jpeg.Options{Quality: 75}) },
		"png-1x1":         func(b *bytes.Buffer) error { return png.Encode(b, one) },
	}
	for name, enc := range seeds {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			log.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b.Bytes())
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
