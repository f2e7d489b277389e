package imageprep

import (
	"fmt"
	"image"
)

// libwebp's YUV→RGB conversion (src/dsp/yuv.h): 14-bit fixed point with the studio-range
// offsets folded into the constants. Go's color.YCbCrToRGB rounds differently, so lossy
// WebP would be off by one here and there without this.
func webpMultHi(v, coeff int) int { return (v * coeff) >> 8 }

func webpClip8(v int) uint8 {
	if v&^(256<<6-1) == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}

func webpYUVToRGB(dst []uint8, y, u, v int) {
	yy := webpMultHi(y, 19077)
	dst[0] = webpClip8(yy + webpMultHi(v, 26149) - 14234)
	dst[1] = webpClip8(yy - webpMultHi(u, 6419) - webpMultHi(v, 13320) + 8708)
	dst[2] = webpClip8(yy + webpMultHi(u, 33050) - 17685)
}

// webpUpsamplePair is libwebp's fancy upsampler for one pair of output rows (the
// bottom one optional): chroma is interpolated with weights 9-3-3-1 between the chroma
// rows tu/tv (nearer the top row) and cu/cv, with libwebp's exact rounding.
func webpUpsamplePair(topY, botY, tu, tv, cu, cv, topDst, botDst []uint8, n int) {
	last := (n - 1) >> 1
	tlU, tlV := int(tu[0]), int(tv[0])
	lU, lV := int(cu[0]), int(cv[0])
	webpYUVToRGB(topDst, int(topY[0]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2)
	if botY != nil {
		webpYUVToRGB(botDst, int(botY[0]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2)
	}
	for x := 1; x <= last; x++ {
		tU, tV := int(tu[x]), int(tv[x])
		uU, uV := int(cu[x]), int(cv[x])
		avgU := tlU + tU + lU + uU + 8
		avgV := tlV + tV + lV + uV + 8
		d12U, d12V := (avgU+2*(tU+lU))>>3, (avgV+2*(tV+lV))>>3
		d03U, d03V := (avgU+2*(tlU+uU))>>3, (avgV+2*(tlV+uV))>>3
		webpYUVToRGB(topDst[3*(2*x-1):], int(topY[2*x-1]), (d12U+tlU)>>1, (d12V+tlV)>>1)
		webpYUVToRGB(topDst[3*(2*x):], int(topY[2*x]), (d03U+tU)>>1, (d03V+tV)>>1)
		if botY != nil {
			webpYUVToRGB(botDst[3*(2*x-1):], int(botY[2*x-1]), (d03U+lU)>>1, (d03V+lV)>>1)
			webpYUVToRGB(botDst[3*(2*x):], int(botY[2*x]), (d12U+uU)>>1, (d12V+uV)>>1)
		}
		tlU, tlV, lU, lV = tU, tV, uU, uV
	}
	if n&1 == 0 {
		webpYUVToRGB(topDst[3*(n-1):], int(topY[n-1]), (3*tlU+lU+2)>>2, (3*tlV+lV+2)>>2)
		if botY != nil {
			webpYUVToRGB(botDst[3*(n-1):], int(botY[n-1]), (3*lU+tlU+2)>>2, (3*lV+tlV+2)>>2)
		}
	}
}

// webpYCbCrToRGB converts a decoded lossy WebP (4:2:0) the way libwebp's default
// decoder (fancy upsampling, as used by Pillow) does. Row 0 and, for even heights, the
// last row use their own chroma row twice; rows 2k-1 and 2k interpolate chroma rows k-1
// and k. With an alpha plane whose values are not all 255 the result is RGBA.
func webpYCbCrToRGB(m *image.YCbCr, alpha []uint8, aStride int) (*Image, error) {
	if m.SubsampleRatio != image.YCbCrSubsampleRatio420 {
		return nil, fmt.Errorf("%w: webp: unexpected chroma subsampling %v", ErrCorrupt, m.SubsampleRatio)
	}
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	rgb := newImage(ModeRGB, w, h)
	yRow := func(y int) []uint8 { return m.Y[y*m.YStride : y*m.YStride+w] }
	cRow := func(p []uint8, k int) []uint8 { return p[k*m.CStride : k*m.CStride+(w+1)/2] }
	dRow := func(y int) []uint8 { return rgb.Pix[3*y*w : 3*(y+1)*w] }
	webpUpsamplePair(yRow(0), nil, cRow(m.Cb, 0), cRow(m.Cr, 0), cRow(m.Cb, 0), cRow(m.Cr, 0), dRow(0), nil, w)
	for top := 1; top < h; top += 2 {
		k := (top + 1) / 2
		if top+1 < h {
			webpUpsamplePair(yRow(top), yRow(top+1), cRow(m.Cb, k-1), cRow(m.Cr, k-1), cRow(m.Cb, k), cRow(m.Cr, k), dRow(top), dRow(top+1), w)
		} else {
			webpUpsamplePair(yRow(top), nil, cRow(m.Cb, k-1), cRow(m.Cr, k-1), cRow(m.Cb, k-1), cRow(m.Cr, k-1), dRow(top), nil, w)
		}
	}
	if alpha == nil {
		return rgb, nil
	}
	opaque := true
	for y := 0; y < h && opaque; y++ {
		for _, a := range alpha[y*aStride : y*aStride+w] {
			if a != 255 {
				opaque = false
				break
			}
		}
	}
	if opaque {
		return rgb, nil
	}
	out := newImage(ModeRGBA, w, h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			copy(out.Pix[4*i:4*i+3], rgb.Pix[3*i:3*i+3])
			out.Pix[4*i+3] = alpha[y*aStride+x]
		}
	}
	return out, nil
}
