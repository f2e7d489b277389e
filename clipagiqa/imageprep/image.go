package imageprep

import (
	"errors"
	"fmt"
	"image"
	"image/color"
)

// Mode is the Pillow image mode a decoded file has. It decides how Resize treats the
// pixels and how they become RGB, exactly as Pillow does.
type Mode uint8

// Modes as Pillow names them. The zero Mode is invalid.
const (
	// ModeL is 8-bit grayscale, 1 byte per pixel.
	ModeL Mode = iota + 1
	// ModeRGB is 8-bit RGB, 3 bytes per pixel.
	ModeRGB
	// ModeRGBA is RGB plus straight (not premultiplied) alpha, 4 bytes per pixel.
	// Pillow premultiplies around a resize; convert("RGB") drops the alpha.
	ModeRGBA
	// ModeLA is grayscale plus straight alpha, 2 bytes per pixel.
	ModeLA
	// ModeCMYK is Pillow's (Adobe-inverted) CMYK, 4 bytes per pixel, from CMYK/YCCK JPEGs.
	// It is resized as CMYK and converted to RGB afterwards.
	ModeCMYK
	// ModeP is a palette image, stored here already expanded to 3 bytes RGB per pixel.
	// Pillow resizes P images with NEAREST whatever filter is asked for.
	ModeP
	// Mode1 is a bilevel image stored as 0 or 255, 1 byte per pixel; resized with NEAREST.
	Mode1
	// ModeI is Pillow's 32-bit integer mode used for 16-bit grayscale PNGs. Pixels are in
	// Image.PixI; convert("RGB") clips them to 0..255.
	ModeI
)

var modeNames = [...]string{"invalid", "L", "RGB", "RGBA", "LA", "CMYK", "P", "1", "I"}

// String returns Pillow's name for the mode.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Channels is the number of bytes per pixel in Image.Pix (1 for ModeI, whose pixels are
// int32 values in Image.PixI), or 0 for an invalid mode.
func (m Mode) Channels() int {
	switch m {
	case ModeL, Mode1, ModeI:
		return 1
	case ModeLA:
		return 2
	case ModeRGB, ModeP:
		return 3
	case ModeRGBA, ModeCMYK:
		return 4
	}
	return 0
}

// nearestOnly reports whether Pillow resizes this mode with NEAREST regardless of the filter.
func (m Mode) nearestOnly() bool { return m == ModeP || m == Mode1 }

// hasAlpha reports whether Pillow resizes this mode premultiplied.
func (m Mode) hasAlpha() bool { return m == ModeRGBA || m == ModeLA }

// Image is a decoded image: W×H pixels, row-major and interleaved.
type Image struct {
	W, H int
	Mode Mode
	// Pix holds W*H*Mode.Channels() bytes (nil for ModeI).
	Pix []uint8
	// PixI holds W*H values for ModeI (nil otherwise).
	PixI []int32
}

// ErrBadImage reports an Image whose fields are inconsistent.
var ErrBadImage = errors.New("imageprep: inconsistent Image")

// Validate checks that the mode is known, the size is positive and the pixel slice has
// the right length.
func (m *Image) Validate() error {
	if m == nil {
		return fmt.Errorf("%w: nil", ErrBadImage)
	}
	c := m.Mode.Channels()
	if c == 0 {
		return fmt.Errorf("%w: unknown mode %d", ErrBadImage, uint8(m.Mode))
	}
	if m.W <= 0 || m.H <= 0 {
		return fmt.Errorf("%w: size %dx%d", ErrBadImage, m.W, m.H)
	}
	n := m.W * m.H
	if n/m.W != m.H || n*c/c != n {
		return fmt.Errorf("%w: size %dx%d overflows", ErrBadImage, m.W, m.H)
	}
	if m.Mode == ModeI {
		if len(m.PixI) != n {
			return fmt.Errorf("%w: mode I %dx%d needs %d values, has %d", ErrBadImage, m.W, m.H, n, len(m.PixI))
		}
		return nil
	}
	if len(m.Pix) != n*c {
		return fmt.Errorf("%w: mode %s %dx%d needs %d bytes, has %d", ErrBadImage, m.Mode, m.W, m.H, n*c, len(m.Pix))
	}
	return nil
}

// newImage allocates a zeroed image.
func newImage(mode Mode, w, h int) *Image {
	m := &Image{W: w, H: h, Mode: mode}
	if mode == ModeI {
		m.PixI = make([]int32, w*h)
	} else {
		m.Pix = make([]uint8, w*h*mode.Channels())
	}
	return m
}

// muldiv255 is Pillow's rounded a*b/255 for bytes (MULDIV255).
func muldiv255(a, b uint32) uint32 {
	t := a*b + 128
	return ((t >> 8) + t) >> 8
}

// clip8 clamps to a byte.
func clip8(v int32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v)
}

// cmykToRGB is Pillow's cmyk2rgb for one pixel of (inverted) CMYK.
func cmykToRGB(c, m, y, k uint8) (uint8, uint8, uint8) {
	nk := uint32(255 - k)
	r := int32(nk) - int32(muldiv255(uint32(c), nk))
	g := int32(nk) - int32(muldiv255(uint32(m), nk))
	b := int32(nk) - int32(muldiv255(uint32(y), nk))
	return clip8(r), clip8(g), clip8(b)
}

// ToRGB returns the image as Pillow's convert("RGB") would: gray replicated, alpha
// dropped (no compositing), CMYK through Pillow's formula, mode I clipped to 0..255.
// An RGB image is copied.
func (m *Image) ToRGB() (*Image, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	out := newImage(ModeRGB, m.W, m.H)
	toRGBRow(out.Pix, m, 0, m.W*m.H)
	return out, nil
}

// toRGBRow converts pixels [from, from+n) of m into dst (3 bytes per pixel).
func toRGBRow(dst []uint8, m *Image, from, n int) {
	c := m.Mode.Channels()
	switch m.Mode {
	case ModeRGB, ModeP:
		copy(dst[:3*n], m.Pix[3*from:3*(from+n)])
	case ModeL, Mode1, ModeLA:
		src := m.Pix[c*from : c*(from+n)]
		for i := 0; i < n; i++ {
			v := src[i*c]
			dst[3*i], dst[3*i+1], dst[3*i+2] = v, v, v
		}
	case ModeRGBA:
		src := m.Pix[4*from : 4*(from+n)]
		for i := 0; i < n; i++ {
			dst[3*i], dst[3*i+1], dst[3*i+2] = src[4*i], src[4*i+1], src[4*i+2]
		}
	case ModeCMYK:
		src := m.Pix[4*from : 4*(from+n)]
		for i := 0; i < n; i++ {
			dst[3*i], dst[3*i+1], dst[3*i+2] = cmykToRGB(src[4*i], src[4*i+1], src[4*i+2], src[4*i+3])
		}
	case ModeI:
		src := m.PixI[from : from+n]
		for i, v := range src {
			b := clip8(v)
			dst[3*i], dst[3*i+1], dst[3*i+2] = b, b, b
		}
	}
}

// Crop returns the w×h sub-image at (x, y), as Pillow's crop does for boxes inside the
// image. Boxes reaching outside the image are an error (torchvision pads instead, which
// the CLIP transforms never need).
func Crop(m *Image, x, y, w, h int) (*Image, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if x < 0 || y < 0 || w <= 0 || h <= 0 || x+w > m.W || y+h > m.H {
		return nil, fmt.Errorf("imageprep: crop box (%d,%d,%d,%d) outside %dx%d image", x, y, x+w, y+h, m.W, m.H)
	}
	out := newImage(m.Mode, w, h)
	if m.Mode == ModeI {
		for r := 0; r < h; r++ {
			copy(out.PixI[r*w:(r+1)*w], m.PixI[(y+r)*m.W+x:])
		}
		return out, nil
	}
	c := m.Mode.Channels()
	for r := 0; r < h; r++ {
		copy(out.Pix[r*w*c:(r+1)*w*c], m.Pix[((y+r)*m.W+x)*c:])
	}
	return out, nil
}

// FromImage converts a Go image to an Image the way Pillow would have opened the
// equivalent file: gray stays L, 16-bit gray becomes I, paletted becomes P, images with
// a non-opaque pixel become RGBA (straight alpha), everything else RGB. 16-bit samples
// keep their high byte, as Pillow's PNG reader does.
func FromImage(src image.Image) (*Image, error) {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("%w: %dx%d", ErrEmptyImage, w, h)
	}
	switch im := src.(type) {
	case *image.Gray:
		out := newImage(ModeL, w, h)
		for y := 0; y < h; y++ {
			copy(out.Pix[y*w:(y+1)*w], im.Pix[im.PixOffset(b.Min.X, b.Min.Y+y):])
		}
		return out, nil
	case *image.Gray16:
		out := newImage(ModeI, w, h)
		for y := 0; y < h; y++ {
			row := im.Pix[im.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := 0; x < w; x++ {
				out.PixI[y*w+x] = int32(row[2*x])<<8 | int32(row[2*x+1])
			}
		}
		return out, nil
	case *image.Paletted:
		pal := paletteRGB(im.Palette)
		out := newImage(ModeP, w, h)
		expandPalette(out.Pix, im, pal)
		return out, nil
	case *image.RGBA:
		// Premultiplied equals straight only where alpha is 255.
		if im.Opaque() {
			return fromRGBALike(im.Pix, im.Stride, im.PixOffset(b.Min.X, b.Min.Y), 1, w, h, false), nil
		}
	case *image.NRGBA:
		return fromRGBALike(im.Pix, im.Stride, im.PixOffset(b.Min.X, b.Min.Y), 1, w, h, true), nil
	case *image.RGBA64:
		if im.Opaque() {
			return fromRGBALike(im.Pix, im.Stride, im.PixOffset(b.Min.X, b.Min.Y), 2, w, h, false), nil
		}
	case *image.NRGBA64:
		return fromRGBALike(im.Pix, im.Stride, im.PixOffset(b.Min.X, b.Min.Y), 2, w, h, true), nil
	}
	// Anything else: straight RGBA through the colour model, opaque images as RGB.
	out := newImage(ModeRGBA, w, h)
	opaque := true
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBAModel.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
			i := 4 * (y*w + x)
			out.Pix[i], out.Pix[i+1], out.Pix[i+2], out.Pix[i+3] = c.R, c.G, c.B, c.A
			opaque = opaque && c.A == 255
		}
	}
	if opaque {
		return dropAlpha(out), nil
	}
	return out, nil
}

// fromRGBALike reads 4-sample pixels of 1 or 2 bytes per sample (big-endian, high byte
// kept). With straight alpha and some pixel not opaque, the result is RGBA, else RGB.
func fromRGBALike(pix []uint8, stride, off, bps, w, h int, straight bool) *Image {
	opaque := true
	if straight {
		for y := 0; y < h && opaque; y++ {
			row := pix[off+y*stride:]
			for x := 0; x < w; x++ {
				if row[(4*x+3)*bps] != 255 || (bps == 2 && row[(4*x+3)*bps+1] != 255) {
					opaque = false
					break
				}
			}
		}
	}
	mode := ModeRGB
	if !opaque {
		mode = ModeRGBA
	}
	out := newImage(mode, w, h)
	c := mode.Channels()
	for y := 0; y < h; y++ {
		row := pix[off+y*stride:]
		dst := out.Pix[y*w*c : (y+1)*w*c]
		for x := 0; x < w; x++ {
			for k := 0; k < c; k++ {
				dst[x*c+k] = row[(4*x+k)*bps]
			}
		}
	}
	return out
}

// dropAlpha turns an RGBA image whose alpha is all 255 into RGB. Resizing it either way
// gives the same bytes (premultiplying by 255 is exact), so this only saves work.
func dropAlpha(m *Image) *Image {
	out := newImage(ModeRGB, m.W, m.H)
	toRGBRow(out.Pix, m, 0, m.W*m.H)
	return out
}

// paletteRGB returns the palette's straight RGB triplets, padded to 256 entries with
// black so that any index is safe.
func paletteRGB(p color.Palette) *[256][3]uint8 {
	var pal [256][3]uint8
	for i, c := range p {
		if i >= 256 {
			break
		}
		switch v := c.(type) {
		case color.RGBA:
			if v.A == 255 {
				pal[i] = [3]uint8{v.R, v.G, v.B}
				continue
			}
		case color.NRGBA:
			pal[i] = [3]uint8{v.R, v.G, v.B}
			continue
		}
		n := color.NRGBAModel.Convert(c).(color.NRGBA)
		pal[i] = [3]uint8{n.R, n.G, n.B}
	}
	return &pal
}

// expandPalette writes the RGB of every pixel of im into dst.
func expandPalette(dst []uint8, im *image.Paletted, pal *[256][3]uint8) {
	b := im.Bounds()
	w := b.Dx()
	for y := 0; y < b.Dy(); y++ {
		row := im.Pix[im.PixOffset(b.Min.X, b.Min.Y+y):][:w]
		out := dst[3*y*w : 3*(y+1)*w]
		for x, idx := range row {
			p := &pal[idx]
			out[3*x], out[3*x+1], out[3*x+2] = p[0], p[1], p[2]
		}
	}
}
