package imageprep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/png"
	"io"
	"strings"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"

	"github.com/clipagiqa/clipagiqa/internal/regularfile"
)

// Decoding errors; the returned errors wrap them (test with errors.Is).
var (
	// ErrUnknownFormat: the data is not a JPEG, PNG, GIF, BMP or WebP file.
	ErrUnknownFormat = errors.New("imageprep: not a supported image (JPEG, PNG, GIF, BMP, WebP)")
	// ErrTruncated: the file ends before the image data does.
	ErrTruncated = errors.New("imageprep: image file is truncated")
	// ErrTooManyPixels: the header declares more pixels than allowed (decompression bomb).
	ErrTooManyPixels = errors.New("imageprep: image exceeds the pixel limit")
	// ErrEmptyImage: the image has a zero width or height.
	ErrEmptyImage = errors.New("imageprep: image has no pixels")
	// ErrCorrupt: the decoder rejected the data.
	ErrCorrupt = errors.New("imageprep: corrupt image data")
)

// checkSize refuses empty images and images above the pixel limit; it runs on the
// header's size before any pixel memory is allocated.
func checkSize(w, h int, maxPixels int64) error {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if w <= 0 || h <= 0 {
		return fmt.Errorf("%w: %dx%d", ErrEmptyImage, w, h)
	}
	if n := int64(w) * int64(h); n > maxPixels {
		return fmt.Errorf("%w: %dx%d = %d pixels, limit %d", ErrTooManyPixels, w, h, n, maxPixels)
	}
	return nil
}

// Format names the container a file was recognised as.
type Format string

// Recognised formats.
const (
	FormatJPEG Format = "jpeg"
	FormatPNG  Format = "png"
	FormatGIF  Format = "gif"
	FormatBMP  Format = "bmp"
	FormatWebP Format = "webp"
)

// Sniff identifies the format from the first bytes, as Pillow's plugins do, or returns "".
func Sniff(data []byte) Format {
	switch {
	case len(data) >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF:
		return FormatJPEG
	case len(data) >= 8 && string(data[:8]) == "\x89PNG\r\n\x1a\n":
		return FormatPNG
	case len(data) >= 6 && (string(data[:6]) == "GIF87a" || string(data[:6]) == "GIF89a"):
		return FormatGIF
	case len(data) >= 2 && string(data[:2]) == "BM":
		return FormatBMP
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return FormatWebP
	}
	return ""
}

// Decode decodes a JPEG, PNG, GIF (first frame), BMP or WebP file into the mode Pillow
// would open it in. Files declaring more than maxPixels pixels (<= 0: DefaultMaxPixels)
// are refused from their header, before decoding.
func Decode(data []byte, maxPixels int64) (img *Image, err error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty data", ErrUnknownFormat)
	}
	// The decoders are meant not to panic on any input; this keeps a bug in one of them
	// from taking the caller down.
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrCorrupt, r)
		}
	}()
	switch Sniff(data) {
	case FormatJPEG:
		return decodeJPEG(data, maxPixels)
	case FormatPNG:
		return decodePNG(data, maxPixels)
	case FormatGIF:
		return decodeGIF(data, maxPixels)
	case FormatBMP:
		return decodeBMP(data, maxPixels)
	case FormatWebP:
		return decodeWebP(data, maxPixels)
	}
	return nil, ErrUnknownFormat
}

// DecodeReader reads r to the end and decodes it (see Decode).
func DecodeReader(r io.Reader, maxPixels int64) (*Image, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("imageprep: read: %w", err)
	}
	return Decode(data, maxPixels)
}

// DecodeFile reads and decodes the file at path; errors name the file.
func DecodeFile(path string, maxPixels int64) (*Image, error) {
	data, err := regularfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("imageprep: %w", err)
	}
	img, err := Decode(data, maxPixels)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return img, nil
}

// LoadFile decodes the file at path and applies CenterTransform.
func LoadFile(path string, opts Options) ([]float32, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	img, err := DecodeFile(path, opts.maxPixels())
	if err != nil {
		return nil, err
	}
	out, err := CenterTransform(img, opts)
	if err != nil {
		return nil, fmt.Errorf("transform %s: %w", path, err)
	}
	return out, nil
}

// LoadBatch decodes and center-transforms the files into one N×3×Size×Size tensor,
// using up to GOMAXPROCS goroutines. The error names the first file that failed.
func LoadBatch(paths []string, opts Options) ([]float32, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	per := opts.TensorLen()
	out := make([]float32, len(paths)*per)
	err := parallel(len(paths), func(i int) error {
		img, err := DecodeFile(paths[i], opts.maxPixels())
		if err != nil {
			return err
		}
		if err := CenterTransformInto(out[i*per:(i+1)*per], img, opts); err != nil {
			return fmt.Errorf("transform %s: %w", paths[i], err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// wrapGoErr maps the standard decoders' errors onto ours. image/gif formats the cause
// with %v, so the EOF check also looks at the text.
func wrapGoErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), io.ErrUnexpectedEOF.Error()) {
		return fmt.Errorf("%w: %s: %s", ErrTruncated, what, withoutFormatPrefix(what, err))
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, what, withoutFormatPrefix(what, err))
}

// withoutFormatPrefix drops the "png: " that Go's decoders put before their
// messages when what already names the format, so it is not said twice.
func withoutFormatPrefix(what string, err error) string {
	format, _, _ := strings.Cut(what, " ")
	return strings.TrimPrefix(err.Error(), format+": ")
}

// ---------------------------------------------------------------- PNG

var pngIEND = []byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82}

// decodePNG maps PNG colour types to Pillow's modes (PngImagePlugin._MODES): 1-bit gray
// is "1", 2/4/8-bit gray "L", 16-bit gray "I", 16-bit colour keeps the high byte,
// 16-bit gray+alpha becomes RGBA in Pillow (identical results to LA, which is used
// here), palette "P", tRNS is ignored for gray/RGB (Pillow keeps the mode).
func decodePNG(data []byte, maxPixels int64) (*Image, error) {
	if len(data) >= 24 && string(data[12:16]) == "IHDR" {
		// Go reports a zero size as a format error; say what it is.
		if w, h := binary.BigEndian.Uint32(data[16:]), binary.BigEndian.Uint32(data[20:]); w == 0 || h == 0 {
			return nil, fmt.Errorf("%w: png %dx%d", ErrEmptyImage, w, h)
		}
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("png header", err)
	}
	if err := checkSize(cfg.Width, cfg.Height, maxPixels); err != nil {
		return nil, err
	}
	depth, ctype := data[24], data[25] // IHDR is the first chunk (checked by DecodeConfig)
	im, err := png.Decode(bytes.NewReader(data))
	if err != nil && errors.Is(err, io.ErrUnexpectedEOF) && !bytes.HasSuffix(data, pngIEND) {
		// Pillow accepts a PNG whose image data is complete but whose IEND chunk is
		// missing; Go insists on IEND. Retry with one appended.
		fixed := append(append(make([]byte, 0, len(data)+len(pngIEND)), data...), pngIEND...)
		if im2, err2 := png.Decode(bytes.NewReader(fixed)); err2 == nil {
			im, err = im2, nil
		}
	}
	if err != nil {
		if pngEndsEarly(data) {
			return nil, fmt.Errorf("%w: png: %s", ErrTruncated, withoutFormatPrefix("png", err))
		}
		return nil, wrapGoErr("png", err)
	}
	w, h := cfg.Width, cfg.Height
	switch ctype {
	case 0: // gray
		switch {
		case depth == 16:
			out := newImage(ModeI, w, h)
			switch g := im.(type) {
			case *image.Gray16:
				for i := range out.PixI {
					out.PixI[i] = int32(binary.BigEndian.Uint16(g.Pix[2*i:]))
				}
			case *image.NRGBA64:
				for i := range out.PixI {
					out.PixI[i] = int32(binary.BigEndian.Uint16(g.Pix[8*i:]))
				}
			default:
				return nil, fmt.Errorf("%w: png: unexpected %T for 16-bit gray", ErrCorrupt, im)
			}
			return out, nil
		default:
			mode := ModeL
			if depth == 1 {
				mode = Mode1
			}
			out := newImage(mode, w, h)
			switch g := im.(type) {
			case *image.Gray:
				copy(out.Pix, g.Pix)
			case *image.NRGBA: // with tRNS
				for i := range out.Pix {
					out.Pix[i] = g.Pix[4*i]
				}
			default:
				return nil, fmt.Errorf("%w: png: unexpected %T for gray", ErrCorrupt, im)
			}
			return out, nil
		}
	case 2: // RGB; with tRNS Go returns NRGBA, Pillow keeps RGB
		return pngSamples(im, ModeRGB)
	case 3:
		p, ok := im.(*image.Paletted)
		if !ok {
			return nil, fmt.Errorf("%w: png: unexpected %T for palette", ErrCorrupt, im)
		}
		pal := paletteRGB(p.Palette)
		// Go pads indices past the PLTE entries with black; Pillow's palette starts as
		// the gray ramp, so those indices read (i, i, i).
		for i := pngPaletteLen(data); i < 256; i++ {
			pal[i] = [3]uint8{uint8(i), uint8(i), uint8(i)}
		}
		out := newImage(ModeP, w, h)
		expandPalette(out.Pix, p, pal)
		return out, nil
	case 4: // gray + alpha
		return pngSamples(im, ModeLA)
	case 6:
		return pngSamples(im, ModeRGBA)
	}
	return nil, fmt.Errorf("%w: png: colour type %d", ErrCorrupt, ctype)
}

// pngPaletteLen returns the number of PLTE entries (256 if the chunk is not found).
func pngPaletteLen(d []byte) int {
	for i := 8; i+8 <= len(d); {
		n := int(binary.BigEndian.Uint32(d[i:]))
		if n < 0 || n > len(d)-i-12 {
			break
		}
		switch string(d[i+4 : i+8]) {
		case "PLTE":
			return min(n/3, 256)
		case "IDAT", "IEND":
			return 256
		}
		i += 12 + n
	}
	return 256
}

// pngEndsEarly reports whether the data ends inside a chunk (before IEND). Go's decoder
// reports such files as "not enough pixel data"; Pillow calls them truncated.
func pngEndsEarly(d []byte) bool {
	i := 8
	for {
		if i == len(d) {
			return false // ends on a chunk boundary: at worst IEND is missing
		}
		if i+8 > len(d) {
			return true
		}
		n := int(binary.BigEndian.Uint32(d[i:]))
		if string(d[i+4:i+8]) == "IEND" {
			return false
		}
		if n < 0 || n > len(d)-i-12 {
			return true
		}
		i += 12 + n
	}
}

// pngSamples copies the straight samples of Go's RGBA/NRGBA(64) PNG results into mode
// (RGB, LA or RGBA), keeping the high byte of 16-bit samples. An RGBA or LA image whose
// alpha is 255 everywhere is returned as RGB or L: the results are identical and cheaper.
func pngSamples(im image.Image, mode Mode) (*Image, error) {
	var pix []uint8
	var stride, bps int
	switch g := im.(type) {
	case *image.RGBA: // only for opaque images
		pix, stride, bps = g.Pix, g.Stride, 1
	case *image.NRGBA:
		pix, stride, bps = g.Pix, g.Stride, 1
	case *image.RGBA64:
		pix, stride, bps = g.Pix, g.Stride, 2
	case *image.NRGBA64:
		pix, stride, bps = g.Pix, g.Stride, 2
	default:
		return nil, fmt.Errorf("%w: png: unexpected %T", ErrCorrupt, im)
	}
	b := im.Bounds()
	w, h := b.Dx(), b.Dy()
	if mode.hasAlpha() {
		opaque := true
		for y := 0; y < h && opaque; y++ {
			row := pix[y*stride:]
			for x := 0; x < w; x++ {
				if row[(4*x+3)*bps] != 255 {
					opaque = false
					break
				}
			}
		}
		if opaque {
			if mode == ModeRGBA {
				mode = ModeRGB
			} else {
				mode = ModeL
			}
		}
	}
	out := newImage(mode, w, h)
	c := mode.Channels()
	src := [4]int{0, 1, 2, 3}
	if mode == ModeLA {
		src = [4]int{0, 3}
	}
	for y := 0; y < h; y++ {
		row := pix[y*stride:]
		dst := out.Pix[y*w*c : (y+1)*w*c]
		for x := 0; x < w; x++ {
			for k := 0; k < c; k++ {
				dst[x*c+k] = row[(4*x+src[k])*bps]
			}
		}
	}
	return out, nil
}

// ---------------------------------------------------------------- GIF

// gifFrame0 holds what Pillow uses of a GIF's first frame that Go's decoder hides: the
// real colour of the transparent index and the transparency index itself.
type gifFrame0 struct {
	palette     []byte // RGB triplets (local table, else global)
	transparent int    // -1 if none
}

// parseGIFFrame0 walks the GIF blocks up to the first image descriptor.
func parseGIFFrame0(d []byte) (gifFrame0, bool) {
	f := gifFrame0{transparent: -1}
	if len(d) < 13 {
		return f, false
	}
	i := 13
	var global []byte
	if d[10]&0x80 != 0 {
		n := 3 << (d[10]&7 + 1)
		if i+n > len(d) {
			return f, false
		}
		global = d[i : i+n]
		i += n
	}
	for i < len(d) {
		switch d[i] {
		case 0x21: // extension
			if i+2 > len(d) {
				return f, false
			}
			label := d[i+1]
			i += 2
			if label == 0xF9 && i+5 <= len(d) && d[i] == 4 {
				f.transparent = -1
				if d[i+1]&1 != 0 {
					f.transparent = int(d[i+4])
				}
			}
			for i < len(d) && d[i] != 0 {
				i += int(d[i]) + 1
			}
			i++
		case 0x2C: // image descriptor
			if i+10 > len(d) {
				return f, false
			}
			if p := d[i+9]; p&0x80 != 0 {
				n := 3 << (p&7 + 1)
				if i+10+n > len(d) {
					return f, false
				}
				f.palette = d[i+10 : i+10+n]
			} else {
				f.palette = global
			}
			return f, f.palette != nil
		default:
			return f, false
		}
	}
	return f, false
}

// isGrayRamp reports whether palette entry i is (i, i, i) for every entry: Pillow then
// opens the GIF as L instead of P (GifImageFile._is_palette_needed).
func isGrayRamp(p []byte) bool {
	for i := 0; i+2 < len(p); i += 3 {
		v := byte(i / 3)
		if p[i] != v || p[i+1] != v || p[i+2] != v {
			return false
		}
	}
	return true
}

// decodeGIF decodes the first frame onto the logical screen like Pillow: the area
// outside the frame holds the transparency index (else 0), the mode is P (L for a
// grayscale-ramp palette) and P→RGB uses the palette colours, including the one of the
// transparent index (Pillow ignores transparency in convert("RGB")).
func decodeGIF(data []byte, maxPixels int64) (*Image, error) {
	cfg, err := gif.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("gif header", err)
	}
	if err := checkSize(cfg.Width, cfg.Height, maxPixels); err != nil {
		return nil, err
	}
	im, err := gif.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("gif", err)
	}
	p, ok := im.(*image.Paletted)
	if !ok {
		return nil, fmt.Errorf("%w: gif: unexpected %T", ErrCorrupt, im)
	}
	w, h := cfg.Width, cfg.Height
	frame, ok := parseGIFFrame0(data)
	var pal [256][3]uint8
	fill := 0
	gray := false
	if ok {
		for i := 0; i < 256 && 3*i+2 < len(frame.palette); i++ {
			pal[i] = [3]uint8{frame.palette[3*i], frame.palette[3*i+1], frame.palette[3*i+2]}
		}
		if frame.transparent >= 0 {
			fill = frame.transparent
		}
		gray = isGrayRamp(frame.palette)
	} else {
		pal = *paletteRGB(p.Palette)
	}
	idx := make([]uint8, w*h)
	if fill != 0 {
		for i := range idx {
			idx[i] = uint8(fill)
		}
	}
	r := p.Bounds().Intersect(image.Rect(0, 0, w, h))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		copy(idx[y*w+r.Min.X:y*w+r.Max.X], p.Pix[p.PixOffset(r.Min.X, y):])
	}
	if gray {
		return &Image{W: w, H: h, Mode: ModeL, Pix: idx}, nil
	}
	out := newImage(ModeP, w, h)
	for i, v := range idx {
		q := &pal[v]
		out.Pix[3*i], out.Pix[3*i+1], out.Pix[3*i+2] = q[0], q[1], q[2]
	}
	return out, nil
}

// ---------------------------------------------------------------- BMP

// decodeBMP follows Pillow's BmpImagePlugin: palette files whose palette is the gray
// ramp are L (1 for black/white two-colour palettes), other palette files P, true-colour
// files RGB (the 4th byte of 32-bit pixels is ignored, as Pillow's "BGRX" does).
func decodeBMP(data []byte, maxPixels int64) (*Image, error) {
	cfg, err := bmp.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("bmp header", err)
	}
	if err := checkSize(cfg.Width, cfg.Height, maxPixels); err != nil {
		return nil, err
	}
	im, err := bmp.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("bmp", err)
	}
	b := im.Bounds()
	w, h := b.Dx(), b.Dy()
	switch g := im.(type) {
	case *image.Paletted:
		pal := paletteRGB(g.Palette)
		n := len(g.Palette)
		gray := n > 0
		for i := 0; i < n && gray; i++ {
			v := uint8(i)
			if n == 2 {
				v = uint8(255 * i)
			}
			gray = pal[i] == [3]uint8{v, v, v}
		}
		if gray {
			mode := ModeL
			if n == 2 {
				mode = Mode1
			}
			out := newImage(mode, w, h)
			for y := 0; y < h; y++ {
				row := g.Pix[g.PixOffset(b.Min.X, b.Min.Y+y):][:w]
				for x, v := range row {
					out.Pix[y*w+x] = pal[v][0]
				}
			}
			return out, nil
		}
		out := newImage(ModeP, w, h)
		expandPalette(out.Pix, g, pal)
		return out, nil
	case *image.RGBA:
		return fromRGBALike(g.Pix, g.Stride, g.PixOffset(b.Min.X, b.Min.Y), 1, w, h, false), nil
	case *image.NRGBA:
		return fromRGBALike(g.Pix, g.Stride, g.PixOffset(b.Min.X, b.Min.Y), 1, w, h, false), nil
	}
	return FromImage(im)
}

// ---------------------------------------------------------------- WebP

// decodeWebP: lossless files come out of Go's decoder exact; lossy files are converted
// from YCbCr with libwebp's own fancy upsampler (see webp.go). Pillow's mode is RGBA
// when the file has alpha, RGB otherwise.
func decodeWebP(data []byte, maxPixels int64) (*Image, error) {
	cfg, err := webp.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("webp header", err)
	}
	if err := checkSize(cfg.Width, cfg.Height, maxPixels); err != nil {
		return nil, err
	}
	im, err := webp.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, wrapGoErr("webp", err)
	}
	switch g := im.(type) {
	case *image.NRGBA:
		b := g.Bounds()
		return fromRGBALike(g.Pix, g.Stride, g.PixOffset(b.Min.X, b.Min.Y), 1, b.Dx(), b.Dy(), true), nil
	case *image.YCbCr:
		return webpYCbCrToRGB(g, nil, 0)
	case *image.NYCbCrA:
		return webpYCbCrToRGB(&g.YCbCr, g.A, g.AStride)
	}
	return FromImage(im)
}
