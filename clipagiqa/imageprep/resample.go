package imageprep

import (
	"math"
	"sync"
)

// Pillow's Resample.c works in 22-bit fixed point for 8-bit images: 8 bits of result,
// 2 bits of head-room for negative lobes and overshoot (PRECISION_BITS = 32 - 8 - 2).
const precisionBits = 22

// bicubicFilter is Pillow's bicubic kernel (a = -0.5), support 2. The float64
// conversions stop Go from fusing multiply-adds: Pillow's C code rounds every step and
// a fused step can change a coefficient's last bit and then a pixel.
func bicubicFilter(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		// ((a + 2) x - (a + 3)) x x + 1
		t := float64(1.5*x) - 2.5
		t = float64(t * x)
		t = float64(t * x)
		return t + 1
	}
	if x < 2 {
		// (((x - 5) x + 8) x - 4) a
		t := float64((x-5)*x) + 8
		t = float64(t*x) - 4
		return t * -0.5
	}
	return 0
}

// kernel holds Pillow's resampling coefficients for output positions [lo, lo+len(start)).
type kernel struct {
	ksize int
	start []int32   // first input index of each output (Pillow's xmin)
	count []int32   // number of taps (Pillow's xmax - xmin)
	fixed []int32   // ksize per output, fixed point (8-bit images)
	real  []float64 // ksize per output, normalised (mode I)
}

// compute fills the kernel for resizing inSize samples to outSize, outputs [lo, hi),
// as Pillow's precompute_coeffs does for a box covering the whole input. With fixed
// set it also converts to fixed point like normalize_coeffs_8bpc.
func (k *kernel) compute(inSize, outSize, lo, hi int, fixed bool) {
	// (double)(in1 - in0) / outSize, in0 = 0 and in1 = float(inSize).
	scale := float64(float32(inSize)) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := 2 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	n := hi - lo
	k.ksize = ksize
	k.start = growI32(&k.start, n)
	k.count = growI32(&k.count, n)
	k.real = growF64(&k.real, n*ksize)
	if fixed {
		k.fixed = growI32(&k.fixed, n*ksize)
	}
	ss := 1 / filterscale
	for i := 0; i < n; i++ {
		center := float64(float64(lo+i)+0.5) * scale
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		w := k.real[i*ksize : (i+1)*ksize]
		ww := 0.0
		for x := 0; x < xmax; x++ {
			v := bicubicFilter((float64(x+xmin) - center + 0.5) * ss)
			w[x] = v
			ww += v
		}
		for x := 0; x < xmax; x++ {
			if ww != 0 {
				w[x] /= ww
			}
		}
		for x := xmax; x < ksize; x++ {
			w[x] = 0
		}
		k.start[i] = int32(xmin)
		k.count[i] = int32(xmax)
		if fixed {
			f := k.fixed[i*ksize : (i+1)*ksize]
			for x, v := range w {
				if v < 0 {
					f[x] = int32(-0.5 + float64(v*(1<<precisionBits)))
				} else {
					f[x] = int32(0.5 + float64(v*(1<<precisionBits)))
				}
			}
		}
	}
}

// scratch holds the buffers one resize needs; pooled so the hot path does not allocate.
type scratch struct {
	kh, kv kernel
	tmp    []uint8
	acc    []int32
	pre    []uint8
	win    []uint8
	idx    []int
	tmpI   []int32
	accF   []float64
	winI   []int32
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func growU8(b *[]uint8, n int) []uint8 {
	if cap(*b) < n {
		*b = make([]uint8, n)
	}
	return (*b)[:n]
}

func growI32(b *[]int32, n int) []int32 {
	if cap(*b) < n {
		*b = make([]int32, n)
	}
	return (*b)[:n]
}

func growF64(b *[]float64, n int) []float64 {
	if cap(*b) < n {
		*b = make([]float64, n)
	}
	return (*b)[:n]
}

func growInt(b *[]int, n int) []int {
	if cap(*b) < n {
		*b = make([]int, n)
	}
	return (*b)[:n]
}

// window describes one resize: the sw×sh region at (sx, sy) of the source is resized to
// dw×dh and only the output pixels [ox, ox+ow)×[oy, oy+oh) are produced. Computing a
// window of the full-size result gives the same bytes as resizing and then cropping,
// because each output pixel depends only on its own coefficients.
type window struct {
	sx, sy, sw, sh int
	dw, dh         int
	ox, oy, ow, oh int
}

// resize runs Pillow's Image.resize(…, BICUBIC) semantics for m's mode over w and
// returns the window's pixels in m's mode (u8 for all modes but I, int32 for I). The
// slices belong to s.
func (s *scratch) resize(m *Image, w window) ([]uint8, []int32) {
	c := m.Mode.Channels()
	if m.Mode == ModeI {
		if w.sw == w.dw && w.sh == w.dh {
			out := growI32(&s.winI, w.ow*w.oh)
			for r := 0; r < w.oh; r++ {
				copy(out[r*w.ow:(r+1)*w.ow], m.PixI[(w.sy+w.oy+r)*m.W+w.sx+w.ox:])
			}
			return nil, out
		}
		return nil, s.resample32(m.PixI[w.sy*m.W+w.sx:], m.W, w)
	}
	stride := m.W * c
	src := m.Pix[w.sy*stride+w.sx*c:]
	switch {
	case w.sw == w.dw && w.sh == w.dh:
		// Pillow returns a copy when the size does not change (no premultiply round trip).
		out := growU8(&s.win, w.ow*w.oh*c)
		for r := 0; r < w.oh; r++ {
			copy(out[r*w.ow*c:(r+1)*w.ow*c], src[(w.oy+r)*stride+w.ox*c:])
		}
		return out, nil
	case m.Mode.nearestOnly():
		return s.nearest8(src, stride, c, w), nil
	case m.Mode.hasAlpha():
		// Pillow converts RGBA to RGBa (LA to La), resizes and converts back.
		r0, r1 := s.rowsNeeded(w)
		pre := growU8(&s.pre, (r1-r0)*w.sw*c)
		for r := r0; r < r1; r++ {
			premultiply(pre[(r-r0)*w.sw*c:(r-r0+1)*w.sw*c], src[r*stride:r*stride+w.sw*c], c)
		}
		out := s.resample8(pre, w.sw*c, r0, c, w)
		unpremultiply(out, c)
		return out, nil
	default:
		return s.resample8(src, stride, 0, c, w), nil
	}
}

// rowsNeeded returns the source rows [r0, r1) the output window reads.
func (s *scratch) rowsNeeded(w window) (int, int) {
	if w.sh == w.dh {
		return w.oy, w.oy + w.oh
	}
	s.kv.compute(w.sh, w.dh, w.oy, w.oy+w.oh, true)
	last := w.oh - 1
	return int(s.kv.start[0]), int(s.kv.start[last] + s.kv.count[last])
}

// premultiply is Pillow's RGBA→RGBa (LA→La) conversion: colour × alpha / 255, rounded.
func premultiply(dst, src []uint8, c int) {
	for i := 0; i+c <= len(src); i += c {
		a := uint32(src[i+c-1])
		for j := 0; j < c-1; j++ {
			dst[i+j] = uint8(muldiv255(uint32(src[i+j]), a))
		}
		dst[i+c-1] = uint8(a)
	}
}

// unpremultiply is Pillow's RGBa→RGBA (La→LA) conversion, in place: colour × 255 / alpha,
// truncated and clipped, left alone where alpha is 0 or 255.
func unpremultiply(p []uint8, c int) {
	for i := 0; i+c <= len(p); i += c {
		a := uint32(p[i+c-1])
		if a == 0 || a == 255 {
			continue
		}
		for j := 0; j < c-1; j++ {
			v := 255 * uint32(p[i+j]) / a
			if v > 255 {
				v = 255
			}
			p[i+j] = uint8(v)
		}
	}
}

// resample8 is Pillow's two-pass fixed-point resampler for 8-bit images: horizontal pass
// first (into a uint8 buffer, so values are clipped between passes), then vertical.
// src holds the region's rows starting at row rowBase (row r is at (r-rowBase)*stride).
func (s *scratch) resample8(src []uint8, stride, rowBase, c int, w window) []uint8 {
	needH := w.dw != w.sw
	needV := w.dh != w.sh
	out := growU8(&s.win, w.ow*w.oh*c)
	r0, r1 := s.rowsNeeded(w) // also fills s.kv when needV
	rowLen := w.ow * c
	var vsrc []uint8
	vstride := stride
	if needH {
		s.kh.compute(w.sw, w.dw, w.ox, w.ox+w.ow, true)
		tmp := growU8(&s.tmp, (r1-r0)*rowLen)
		hpass8(tmp, rowLen, src[(r0-rowBase)*stride:], stride, c, r1-r0, &s.kh, w.ow)
		vsrc, vstride = tmp, rowLen
	} else {
		vsrc = src[(r0-rowBase)*stride+w.ox*c:]
	}
	if !needV {
		for r := 0; r < w.oh; r++ {
			copy(out[r*rowLen:(r+1)*rowLen], vsrc[r*vstride:r*vstride+rowLen])
		}
		return out
	}
	acc := growI32(&s.acc, rowLen)
	ks := s.kv.ksize
	for i := 0; i < w.oh; i++ {
		ymin := int(s.kv.start[i]) - r0
		cnt := int(s.kv.count[i])
		kk := s.kv.fixed[i*ks : i*ks+cnt]
		for j := range acc {
			acc[j] = half
		}
		// Two taps per sweep halves the traffic on acc; integer sums are exact in any order.
		y := 0
		for ; y+1 < len(kk); y += 2 {
			k0, k1 := kk[y], kk[y+1]
			r0 := vsrc[(ymin+y)*vstride : (ymin+y)*vstride+rowLen]
			r1 := vsrc[(ymin+y+1)*vstride : (ymin+y+1)*vstride+rowLen]
			a := acc[:len(r0)]
			r1 = r1[:len(r0)]
			for j, v := range r0 {
				a[j] += int32(v)*k0 + int32(r1[j])*k1
			}
		}
		if y < len(kk) {
			kv := kk[y]
			row := vsrc[(ymin+y)*vstride : (ymin+y)*vstride+rowLen]
			a := acc[:len(row)]
			for j, v := range row {
				a[j] += int32(v) * kv
			}
		}
		dst := out[i*rowLen : (i+1)*rowLen]
		for j, v := range acc[:len(dst)] {
			dst[j] = clip8(v >> precisionBits)
		}
	}
	return out
}

// hpass8 runs Pillow's horizontal pass over rows rows of src, producing n outputs per row.
func hpass8(dst []uint8, dstStride int, src []uint8, srcStride, c, rows int, k *kernel, n int) {
	for r := 0; r < rows; r++ {
		in := src[r*srcStride:]
		out := dst[r*dstStride : r*dstStride+n*c]
		switch c {
		case 1:
			hrow1(out, in, k, n)
		case 3:
			hrow3(out, in, k, n)
		case 4:
			hrow4(out, in, k, n)
		default:
			hrowN(out, in, k, n, c)
		}
	}
}

const half = 1 << (precisionBits - 1)

func hrow1(out, in []uint8, k *kernel, n int) {
	ks := k.ksize
	for i := 0; i < n; i++ {
		kk := k.fixed[i*ks : i*ks+int(k.count[i])]
		p := in[k.start[i]:]
		p = p[:len(kk)]
		s0 := int32(half)
		for x, kv := range kk {
			s0 += int32(p[x]) * kv
		}
		out[i] = clip8(s0 >> precisionBits)
	}
}

func hrow3(out, in []uint8, k *kernel, n int) {
	ks := k.ksize
	out = out[:3*n]
	for i := 0; i < n; i++ {
		kk := k.fixed[i*ks : i*ks+int(k.count[i])]
		s0, s1, s2 := dot3(in[3*int(k.start[i]):], kk)
		o := out[3*i : 3*i+3 : 3*i+3]
		o[0] = clip8(s0 >> precisionBits)
		o[1] = clip8(s1 >> precisionBits)
		o[2] = clip8(s2 >> precisionBits)
	}
}

// dot3 is one output pixel of the RGB horizontal pass; a separate function so that the
// compiler keeps the three sums in registers.
func dot3(p []uint8, kk []int32) (int32, int32, int32) {
	p = p[:3*len(kk)]
	s0, s1, s2 := int32(half), int32(half), int32(half)
	for len(kk) > 0 && len(p) >= 3 {
		kv := kk[0]
		s0 += int32(p[0]) * kv
		s1 += int32(p[1]) * kv
		s2 += int32(p[2]) * kv
		p, kk = p[3:], kk[1:]
	}
	return s0, s1, s2
}

func hrow4(out, in []uint8, k *kernel, n int) {
	ks := k.ksize
	for i := 0; i < n; i++ {
		kk := k.fixed[i*ks : i*ks+int(k.count[i])]
		p := in[4*int(k.start[i]):]
		p = p[:4*len(kk)]
		s0, s1, s2, s3 := int32(half), int32(half), int32(half), int32(half)
		for _, kv := range kk {
			q := p[:4:4]
			s0 += int32(q[0]) * kv
			s1 += int32(q[1]) * kv
			s2 += int32(q[2]) * kv
			s3 += int32(q[3]) * kv
			p = p[4:]
		}
		o := out[4*i : 4*i+4 : 4*i+4]
		o[0] = clip8(s0 >> precisionBits)
		o[1] = clip8(s1 >> precisionBits)
		o[2] = clip8(s2 >> precisionBits)
		o[3] = clip8(s3 >> precisionBits)
	}
}

func hrowN(out, in []uint8, k *kernel, n, c int) {
	ks := k.ksize
	for i := 0; i < n; i++ {
		kk := k.fixed[i*ks : i*ks+int(k.count[i])]
		p := in[c*int(k.start[i]):]
		for ch := 0; ch < c; ch++ {
			s0 := int32(half)
			for x, kv := range kk {
				s0 += int32(p[c*x+ch]) * kv
			}
			out[c*i+ch] = clip8(s0 >> precisionBits)
		}
	}
}

// nearestIndex returns Pillow's NEAREST source index for outputs [lo, hi) of a resize
// from inSize to outSize (ImagingScaleAffine: the position starts at scale/2 and is
// advanced by repeated addition), or -1 where it falls outside the source.
func nearestIndex(dst []int, inSize, outSize, lo, hi int) {
	a := float64(float32(inSize)) / float64(outSize)
	xo := a * 0.5
	for x := 0; x < hi; x++ {
		if x >= lo {
			xin := -1
			if xo >= 0 {
				xin = int(xo)
			}
			if xin >= inSize {
				xin = -1
			}
			dst[x-lo] = xin
		}
		xo += a
	}
}

// nearest8 is Pillow's NEAREST resize (used for P and 1 images); pixels that map outside
// the source stay 0 as in Pillow.
func (s *scratch) nearest8(src []uint8, stride, c int, w window) []uint8 {
	out := growU8(&s.win, w.ow*w.oh*c)
	idx := growInt(&s.idx, w.ow+w.oh)
	xi, yi := idx[:w.ow], idx[w.ow:]
	nearestIndex(xi, w.sw, w.dw, w.ox, w.ox+w.ow)
	nearestIndex(yi, w.sh, w.dh, w.oy, w.oy+w.oh)
	for r, y := range yi {
		dst := out[r*w.ow*c : (r+1)*w.ow*c]
		if y < 0 {
			clear(dst)
			continue
		}
		row := src[y*stride:]
		for i, x := range xi {
			if x < 0 {
				clear(dst[i*c : (i+1)*c])
				continue
			}
			copy(dst[i*c:(i+1)*c], row[x*c:x*c+c])
		}
	}
	return out
}

// roundUp is Pillow's ROUND_UP for the 32-bit resampler: half away from zero.
func roundUp(f float64) int32 {
	if f >= 0 {
		return int32(f + 0.5)
	}
	return int32(f - 0.5)
}

// resample32 is Pillow's resampler for mode I: double coefficients, sums in double,
// rounded to int32 after each pass (no clipping).
func (s *scratch) resample32(src []int32, stride int, w window) []int32 {
	needH := w.dw != w.sw
	needV := w.dh != w.sh
	out := growI32(&s.winI, w.ow*w.oh)
	r0, r1 := w.oy, w.oy+w.oh
	if needV {
		s.kv.compute(w.sh, w.dh, w.oy, w.oy+w.oh, false)
		last := w.oh - 1
		r0, r1 = int(s.kv.start[0]), int(s.kv.start[last]+s.kv.count[last])
	}
	var vsrc []int32
	vstride := stride
	if needH {
		s.kh.compute(w.sw, w.dw, w.ox, w.ox+w.ow, false)
		tmp := growI32(&s.tmpI, (r1-r0)*w.ow)
		ks := s.kh.ksize
		for r := r0; r < r1; r++ {
			in := src[r*stride:]
			o := tmp[(r-r0)*w.ow : (r-r0+1)*w.ow]
			for i := range o {
				xmin := int(s.kh.start[i])
				kk := s.kh.real[i*ks : i*ks+int(s.kh.count[i])]
				ss := 0.0
				for x, kv := range kk {
					ss += float64(float64(in[xmin+x]) * kv)
				}
				o[i] = roundUp(ss)
			}
		}
		vsrc, vstride = tmp, w.ow
	} else {
		vsrc = src[r0*stride+w.ox:]
	}
	if !needV {
		for r := 0; r < w.oh; r++ {
			copy(out[r*w.ow:(r+1)*w.ow], vsrc[r*vstride:r*vstride+w.ow])
		}
		return out
	}
	acc := growF64(&s.accF, w.ow)
	ks := s.kv.ksize
	for i := 0; i < w.oh; i++ {
		ymin := int(s.kv.start[i]) - r0
		kk := s.kv.real[i*ks : i*ks+int(s.kv.count[i])]
		clear(acc)
		for y, kv := range kk {
			row := vsrc[(ymin+y)*vstride : (ymin+y)*vstride+w.ow]
			for j, v := range row {
				acc[j] += float64(float64(v) * kv)
			}
		}
		dst := out[i*w.ow : (i+1)*w.ow]
		for j, v := range acc {
			dst[j] = roundUp(v)
		}
	}
	return out
}
