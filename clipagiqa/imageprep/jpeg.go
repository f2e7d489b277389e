package imageprep

/*
#cgo LDFLAGS: -lturbojpeg
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static void ip_errstr(tjhandle h, char *err, int n) {
	const char *s = tjGetErrorStr2(h);
	if (s == NULL) {
		s = "unknown TurboJPEG error";
	}
	strncpy(err, s, n - 1);
	err[n - 1] = 0;
}

// ip_jpeg_header reads the frame header. Returns 0 on success, 1 on success with a
// libjpeg warning (the header fields are set), -1 on error.
static int ip_jpeg_header(const unsigned char *buf, unsigned long len, int *w, int *h,
                          int *cs, char *err, int errlen) {
	int subsamp = 0;
	tjhandle hd = tjInitDecompress();
	if (hd == NULL) {
		ip_errstr(NULL, err, errlen);
		return -1;
	}
	int ret = 0;
	if (tjDecompressHeader3(hd, buf, len, w, h, &subsamp, cs) != 0) {
		ip_errstr(hd, err, errlen);
		ret = tjGetErrorCode(hd) == TJERR_WARNING ? 1 : -1;
	}
	tjDestroy(hd);
	return ret;
}

// ip_jpeg_decode decodes the whole image into out. Returns 0 on success, 1 on success
// with a libjpeg warning (corrupt or truncated data was patched over), -1 on error.
static int ip_jpeg_decode(const unsigned char *buf, unsigned long len, unsigned char *out,
                          int w, int h, int pf, int flags, char *err, int errlen) {
	tjhandle hd = tjInitDecompress();
	if (hd == NULL) {
		ip_errstr(NULL, err, errlen);
		return -1;
	}
	int ret = 0;
	if (tjDecompress2(hd, buf, len, out, w, 0, h, pf, flags) != 0) {
		ip_errstr(hd, err, errlen);
		ret = tjGetErrorCode(hd) == TJERR_WARNING ? 1 : -1;
	}
	tjDestroy(hd);
	return ret;
}
*/
import "C"

import (
	"bytes"
	"fmt"
	"unsafe"
)

const tjErrLen = 200

// jpegHeader returns the JPEG's size and TurboJPEG colourspace (TJCS_*).
func jpegHeader(data []byte) (w, h, cs int, err error) {
	var cw, ch, ccs C.int
	var msg [tjErrLen]C.char
	// Warnings (e.g. garbage before a marker) are not errors for Pillow either.
	if C.ip_jpeg_header((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)), &cw, &ch, &ccs, &msg[0], tjErrLen) < 0 {
		return 0, 0, 0, fmt.Errorf("jpeg header: %s", C.GoString(&msg[0]))
	}
	return int(cw), int(ch), int(ccs), nil
}

// decodeJPEG decodes with libjpeg-turbo the way Pillow's JPEG plugin does: default
// (ISLOW) DCT and fancy upsampling, grayscale files as L, 3-component files as RGB,
// CMYK/YCCK files as Pillow's inverted CMYK ("CMYK;I", Adobe convention). The size is
// checked against maxPixels before any pixel memory is allocated.
func decodeJPEG(data []byte, maxPixels int64) (*Image, error) {
	w, h, cs, err := jpegHeader(data)
	if err != nil {
		if jpegWalk(data) == jpegEndsEarly {
			return nil, fmt.Errorf("%w (%v)", ErrTruncated, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if (w <= 0 || h <= 0) && jpegWalk(data) == jpegEndsEarly {
		// libjpeg-turbo can "succeed" on a stream cut before the frame header.
		return nil, fmt.Errorf("%w (no frame header)", ErrTruncated)
	}
	if err := checkSize(w, h, maxPixels); err != nil {
		return nil, err
	}
	var mode Mode
	var pf C.int
	switch cs {
	case C.TJCS_GRAY:
		mode, pf = ModeL, C.TJPF_GRAY
	case C.TJCS_RGB, C.TJCS_YCbCr:
		mode, pf = ModeRGB, C.TJPF_RGB
	case C.TJCS_CMYK, C.TJCS_YCCK:
		mode, pf = ModeCMYK, C.TJPF_CMYK
	default:
		return nil, fmt.Errorf("%w: jpeg: unsupported colourspace %d", ErrCorrupt, cs)
	}
	img := newImage(mode, w, h)
	var msg [tjErrLen]C.char
	rc := C.ip_jpeg_decode((*C.uchar)(unsafe.Pointer(&data[0])), C.ulong(len(data)),
		(*C.uchar)(unsafe.Pointer(&img.Pix[0])), C.int(w), C.int(h), pf, C.TJFLAG_LIMITSCANS,
		&msg[0], tjErrLen)
	if rc < 0 {
		return nil, fmt.Errorf("%w: jpeg: %s", ErrCorrupt, C.GoString(&msg[0]))
	}
	// Pillow fails when the data ends before the image does (it never sees EOI);
	// libjpeg-turbo pads such files with grey and only warns. Other warnings (corrupt
	// but complete data) Pillow ignores, and so do we.
	if jpegWalk(data) == jpegEndsEarly {
		detail := "no EOI marker"
		if rc == 1 {
			detail = C.GoString(&msg[0])
		}
		return nil, fmt.Errorf("%w (%s)", ErrTruncated, detail)
	}
	if mode == ModeCMYK {
		for i, v := range img.Pix {
			img.Pix[i] = 255 - v
		}
	}
	return img, nil
}

// Outcomes of jpegWalk.
const (
	jpegComplete  = iota // an EOI marker follows the first scan
	jpegEndsEarly        // the data ends inside a segment or scan
	jpegMalformed        // the marker structure is broken
)

// jpegWalk walks the JPEG marker structure (segments, then entropy-coded data in which
// 0xFF is followed only by 0x00, RSTn or fill bytes) and reports whether an EOI marker
// follows the first scan. A thumbnail's EOI inside an APP segment does not count, and
// garbage between segments is skipped as libjpeg does.
func jpegWalk(d []byte) int {
	i := 2 // after SOI
	inScan := false
	for i < len(d) {
		if !inScan {
			if d[i] != 0xFF {
				// Garbage between segments: libjpeg skips it with a warning
				// ("extraneous bytes before marker") and so does Pillow.
				k := bytes.IndexByte(d[i:], 0xFF)
				if k < 0 {
					return jpegEndsEarly
				}
				i += k
			}
			for i < len(d) && d[i] == 0xFF {
				i++
			}
			if i >= len(d) {
				return jpegEndsEarly
			}
			m := d[i]
			i++
			switch {
			case m == 0xD9:
				return jpegComplete
			case m == 0x01 || (m >= 0xD0 && m <= 0xD7):
				continue
			case m < 0xC0:
				return jpegMalformed // reserved; libjpeg: "Unsupported marker type"
			}
			if i+2 > len(d) {
				return jpegEndsEarly
			}
			n := int(d[i])<<8 | int(d[i+1])
			if n < 2 {
				return jpegMalformed
			}
			i += n
			if m == 0xDA {
				inScan = true
			}
			continue
		}
		// Entropy-coded data: find the next marker.
		j := i
		for {
			k := bytes.IndexByte(d[j:], 0xFF)
			if k < 0 {
				return jpegEndsEarly
			}
			j += k + 1
			for j < len(d) && d[j] == 0xFF {
				j++
			}
			if j >= len(d) {
				return jpegEndsEarly
			}
			if m := d[j]; m == 0x00 || (m >= 0xD0 && m <= 0xD7) {
				j++
				continue
			}
			break
		}
		i = j - 1 // the 0xFF before the marker code
		for i > 0 && d[i-1] == 0xFF {
			i--
		}
		inScan = false
	}
	return jpegEndsEarly
}
