// Package demo generates a small, deterministic image-quality data set for
// trying CLIP-AGIQA without downloading anything: procedural base images
// (a warm two-colour gradient, up to two shapes, two fine sine gratings)
// each degraded by four distortions at graded severities, with a MOS that
// is a known function of the distortion and its severity.
//
// The MOS of an image with distortion d at severity s (0..L-1, L levels) is
//
//	MOS(d, s) = 1 + 4·(1 − s/(L−1))^γ_d
//
// with γ = 1 for blur, 1.25 for noise, 0.8 for JPEG and 0.6 for colour
// shift: 5 for the undistorted reference, 1 at the strongest severity, and
// strictly decreasing in s for every distortion. Severity fraction
// f = s/(L−1) sets the strength: Gaussian blur σ = 3f px, additive Gaussian
// noise σ = 70f grey levels, JPEG quality round(24(1−f))+1 (an image/jpeg
// round trip), colour cast R += 40f, G −= 8f, B −= 40f.
//
// The base images deliberately vary little in colour and texture statistics,
// so that content varies less than the distortions' effect: the demo's tiny
// CLIP has only seen such synthetic images (Caption and GeneratePairs make
// its Image2Prompt pre-training set, from another seed).
//
// The same seed and options give byte-identical files on every platform: the
// generator uses its own random number generator and Go's deterministic
// encoders.
package demo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Distortion is one kind of degradation.
type Distortion string

// The distortions; None is the undistorted reference (severity 0).
const (
	None   Distortion = "ref"
	Blur   Distortion = "blur"
	Noise  Distortion = "noise"
	JPEG   Distortion = "jpeg"
	Colour Distortion = "colour"
)

// Distortions lists the degradations applied at severities 1..L-1.
var Distortions = []Distortion{Blur, Noise, JPEG, Colour}

// gamma shapes each distortion's MOS curve (see the package comment).
var gamma = map[Distortion]float64{None: 1, Blur: 1, Noise: 1.25, JPEG: 0.8, Colour: 0.6}

// Options configure Generate. Zero values take the defaults.
type Options struct {
	Seed         uint64  // random seed (0 is a valid seed)
	Bases        int     // base images (default 64)
	Size         int     // image side in pixels (default 224, CLIP's input size)
	Levels       int     // severities 0..Levels-1 (default 5)
	TestFraction float64 // share of base images in the test set (default 0.25)
	Format       string  // "png" (default, lossless) or "jpeg"
	JPEGQuality  int     // quality of written JPEG files (default 95)
}

// DefaultOptions are the demo's defaults.
func DefaultOptions() Options {
	return Options{Bases: 64, Size: 224, Levels: 5, TestFraction: 0.25, Format: "png", JPEGQuality: 95}
}

func (o *Options) normalise() error {
	d := DefaultOptions()
	if o.Bases == 0 {
		o.Bases = d.Bases
	}
	if o.Size == 0 {
		o.Size = d.Size
	}
	if o.Levels == 0 {
		o.Levels = d.Levels
	}
	if o.TestFraction == 0 {
		o.TestFraction = d.TestFraction
	}
	if o.Format == "" {
		o.Format = d.Format
	}
	if o.JPEGQuality == 0 {
		o.JPEGQuality = d.JPEGQuality
	}
	switch {
	case o.Bases < 2:
		return fmt.Errorf("demo: need at least 2 base images, got %d", o.Bases)
	case o.Size < 16 || o.Size > 4096:
		return fmt.Errorf("demo: image size %d outside 16..4096", o.Size)
	case o.Levels < 2:
		return fmt.Errorf("demo: need at least 2 severity levels, got %d", o.Levels)
	case !(o.TestFraction > 0 && o.TestFraction < 1):
		return fmt.Errorf("demo: test fraction %v not in (0, 1)", o.TestFraction)
	case o.Format != "png" && o.Format != "jpeg":
		return fmt.Errorf("demo: format %q: want png or jpeg", o.Format)
	case o.JPEGQuality < 1 || o.JPEGQuality > 100:
		return fmt.Errorf("demo: JPEG quality %d outside 1..100", o.JPEGQuality)
	}
	return nil
}

// MOS is the documented score of distortion d at severity s of levels:
// 1 + 4·(1 − s/(levels−1))^γ_d.
func MOS(d Distortion, severity, levels int) float64 {
	if severity <= 0 || levels < 2 {
		return 5
	}
	f := math.Min(1, float64(severity)/float64(levels-1))
	return 1 + 4*math.Pow(1-f, gamma[d])
}

// Item is one generated image.
type Item struct {
	Name       string // path relative to the data set directory
	Group      string // base image ("b007"): items of one group share a side of the split
	Base       int
	Distortion Distortion
	Severity   int
	MOS        float64
	Test       bool // in test.csv
}

// Plan lists the images Generate writes, in CSV order, and which base images
// go to the test side (a seeded shuffle of the bases).
func Plan(opts Options) ([]Item, error) {
	if err := opts.normalise(); err != nil {
		return nil, err
	}
	test := testBases(opts)
	ext := ".png"
	if opts.Format == "jpeg" {
		ext = ".jpg"
	}
	var items []Item
	for b := range opts.Bases {
		group := fmt.Sprintf("b%03d", b)
		items = append(items, Item{Name: "images/" + group + "_ref" + ext, Group: group, Base: b,
			Distortion: None, MOS: 5, Test: test[b]})
		for _, d := range Distortions {
			for s := 1; s < opts.Levels; s++ {
				items = append(items, Item{
					Name:  fmt.Sprintf("images/%s_%s_s%d%s", group, d, s, ext),
					Group: group, Base: b, Distortion: d, Severity: s,
					MOS: MOS(d, s, opts.Levels), Test: test[b],
				})
			}
		}
	}
	return items, nil
}

// testBases picks round(TestFraction·Bases) base images (at least one, at
// most Bases-1) by a seeded shuffle.
func testBases(opts Options) map[int]bool {
	r := newRNG(opts.Seed, 0x5eed5)
	order := make([]int, opts.Bases)
	for i := range order {
		order[i] = i
	}
	for i := len(order) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		order[i], order[j] = order[j], order[i]
	}
	n := int(math.Round(opts.TestFraction * float64(opts.Bases)))
	n = min(max(n, 1), opts.Bases-1)
	out := map[int]bool{}
	for _, b := range order[:n] {
		out[b] = true
	}
	return out
}

// Generate writes the data set under dir: images/*.png (or .jpg), train.csv
// and test.csv with columns image,mos,group,distortion,severity (image paths
// relative to dir, so dir is the image root). Train and test hold disjoint
// base images. It returns the two CSV paths.
func Generate(dir string, opts Options) (trainCSV, testCSV string, err error) {
	if err := opts.normalise(); err != nil {
		return "", "", err
	}
	items, err := Plan(opts)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		return "", "", fmt.Errorf("demo: %w", err)
	}
	// One base image at a time feeds its 1+4(L-1) variants; bases run in parallel.
	jobs := make(chan int)
	errs := make([]error, opts.Bases)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), opts.Bases) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				errs[b] = writeBase(dir, b, items, opts)
			}
		}()
	}
	for b := range opts.Bases {
		jobs <- b
	}
	close(jobs)
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return "", "", e
		}
	}
	trainCSV = filepath.Join(dir, "train.csv")
	testCSV = filepath.Join(dir, "test.csv")
	if err := writeCSV(trainCSV, items, false); err != nil {
		return "", "", err
	}
	if err := writeCSV(testCSV, items, true); err != nil {
		return "", "", err
	}
	return trainCSV, testCSV, nil
}

func writeBase(dir string, b int, items []Item, opts Options) error {
	base := BaseImage(opts.Seed, b, opts.Size)
	for _, it := range items {
		if it.Base != b {
			continue
		}
		img, err := Distort(base, it.Distortion, it.Severity, opts.Levels, distortSeed(opts.Seed, b, it.Distortion))
		if err != nil {
			return fmt.Errorf("demo: %s: %w", it.Name, err)
		}
		var buf bytes.Buffer
		if opts.Format == "jpeg" {
			err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: opts.JPEGQuality})
		} else {
			err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
		}
		if err != nil {
			return fmt.Errorf("demo: encode %s: %w", it.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(it.Name)), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	return nil
}

func writeCSV(path string, items []Item, test bool) error {
	var sb strings.Builder
	sb.WriteString("image,mos,group,distortion,severity\n")
	rows := make([]Item, 0, len(items))
	for _, it := range items {
		if it.Test == test {
			rows = append(rows, it)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	for _, it := range rows {
		fmt.Fprintf(&sb, "%s,%s,%s,%s,%d\n", it.Name, strconv.FormatFloat(it.MOS, 'f', 4, 64), it.Group, it.Distortion, it.Severity)
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func distortSeed(seed uint64, base int, d Distortion) uint64 {
	h := seed ^ 0x9e3779b97f4a7c15*uint64(base+1)
	for _, c := range []byte(d) {
		h = (h ^ uint64(c)) * 0x100000001b3
	}
	return h
}

// BaseImage draws base image index of the set with this seed, size×size: a
// linear gradient between two colours near (190, 165, 120) (±8 per channel),
// up to two anti-aliased discs or rectangles (±15), and two sine gratings
// (periods 6–14 px, amplitudes 20–30).
func BaseImage(seed uint64, index, size int) *image.RGBA {
	r := newRNG(seed, uint64(index)+1)
	// Similar colours and texture energy in every base: see the package comment.
	warm := [3]float64{190, 165, 120}
	randColour := func(spread float64) [3]float64 {
		var c [3]float64
		for i := range c {
			c[i] = warm[i] + spread*(2*r.float()-1)
		}
		return c
	}
	c0, c1 := randColour(8), randColour(8)
	theta := r.float() * 2 * math.Pi
	cs, sn := math.Cos(theta), math.Sin(theta)
	type shape struct {
		disc       bool
		cx, cy, rx float64 // centre and radius (disc) or half-width
		ry         float64 // half-height (rectangle)
		col        [3]float64
	}
	n := r.intn(3)
	shapes := make([]shape, n)
	sz := float64(size)
	for i := range shapes {
		shapes[i] = shape{disc: r.intn(2) == 0, cx: r.float() * sz, cy: r.float() * sz,
			rx: (0.06 + 0.16*r.float()) * sz, ry: (0.06 + 0.16*r.float()) * sz, col: randColour(15)}
	}
	// Two fine sine gratings (periods 6–14 px).
	var gratings [2]struct{ fx, fy, phi, amp float64 }
	for i := range gratings {
		a := r.float() * math.Pi
		f := 2 * math.Pi / (6 + 8*r.float())
		gratings[i].fx, gratings[i].fy = f*math.Cos(a), f*math.Sin(a)
		gratings[i].phi = r.float() * 2 * math.Pi
		gratings[i].amp = 20 + 10*r.float()
	}

	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for y := range size {
		for x := range size {
			fx, fy := float64(x)+0.5, float64(y)+0.5
			t := ((fx-sz/2)*cs+(fy-sz/2)*sn)/(sz*math.Sqrt2) + 0.5
			var px [3]float64
			for c := range 3 {
				px[c] = c0[c] + (c1[c]-c0[c])*t
			}
			for _, s := range shapes {
				var cover float64
				if s.disc {
					cover = clamp01(s.rx - math.Hypot(fx-s.cx, fy-s.cy) + 0.5)
				} else {
					cover = clamp01(s.rx-math.Abs(fx-s.cx)+0.5) * clamp01(s.ry-math.Abs(fy-s.cy)+0.5)
				}
				for c := range 3 {
					px[c] += (s.col[c] - px[c]) * cover
				}
			}
			var tex float64
			for _, g := range gratings {
				tex += g.amp * math.Sin(g.fx*fx+g.fy*fy+g.phi)
			}
			o := img.PixOffset(x, y)
			for c := range 3 {
				img.Pix[o+c] = toU8(px[c] + tex)
			}
			img.Pix[o+3] = 255
		}
	}
	return img
}

// Distort applies distortion d at severity s (of levels) to src and returns a
// new opaque RGBA image; severity 0 or None returns a copy. seed drives the
// noise.
func Distort(src *image.RGBA, d Distortion, severity, levels int, seed uint64) (*image.RGBA, error) {
	if levels < 2 || severity < 0 || severity >= levels {
		return nil, fmt.Errorf("severity %d outside 0..%d", severity, levels-1)
	}
	f := float64(severity) / float64(levels-1)
	out := image.NewRGBA(src.Bounds())
	copy(out.Pix, src.Pix)
	if severity == 0 || d == None {
		return out, nil
	}
	switch d {
	case Blur:
		GaussianBlur(out, 3*f)
	case Noise:
		r := newRNG(seed, 2)
		sigma := 70 * f
		for i := 0; i < len(out.Pix); i += 4 {
			for c := range 3 {
				out.Pix[i+c] = toU8(float64(out.Pix[i+c]) + sigma*r.normal())
			}
		}
	case JPEG:
		q := JPEGQuality(severity, levels)
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: q}); err != nil {
			return nil, fmt.Errorf("jpeg distortion: %w", err)
		}
		dec, err := jpeg.Decode(&buf)
		if err != nil {
			return nil, fmt.Errorf("jpeg distortion: %w", err)
		}
		b := out.Bounds()
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				out.Set(x, y, color.RGBAModel.Convert(dec.At(x, y)))
			}
		}
	case Colour:
		shift := [3]float64{40 * f, -8 * f, -40 * f}
		for i := 0; i < len(out.Pix); i += 4 {
			for c := range 3 {
				out.Pix[i+c] = toU8(float64(out.Pix[i+c]) + shift[c])
			}
		}
	default:
		return nil, fmt.Errorf("unknown distortion %q", d)
	}
	return out, nil
}

// JPEGQuality is the encoder quality of the JPEG distortion at severity s of
// levels: round(24(1−f))+1 with f = s/(levels−1).
func JPEGQuality(severity, levels int) int {
	f := float64(severity) / float64(levels-1)
	return int(math.Round(24*(1-f))) + 1
}

// GaussianBlur blurs img's RGB channels in place with a separable Gaussian of
// standard deviation sigma (kernel radius ceil(3σ), edges clamped).
func GaussianBlur(img *image.RGBA, sigma float64) {
	if sigma <= 0 {
		return
	}
	k := GaussianKernel(sigma)
	rad := len(k) / 2
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	tmp := make([]float64, w*h*3)
	// Horizontal pass into tmp, vertical pass back into img.
	for y := range h {
		for x := range w {
			var acc [3]float64
			for i, kv := range k {
				xx := min(max(x+i-rad, 0), w-1)
				o := y*img.Stride + xx*4
				for c := range 3 {
					acc[c] += kv * float64(img.Pix[o+c])
				}
			}
			copy(tmp[(y*w+x)*3:], acc[:])
		}
	}
	for y := range h {
		for x := range w {
			var acc [3]float64
			for i, kv := range k {
				yy := min(max(y+i-rad, 0), h-1)
				for c := range 3 {
					acc[c] += kv * tmp[(yy*w+x)*3+c]
				}
			}
			o := y*img.Stride + x*4
			for c := range 3 {
				img.Pix[o+c] = toU8(acc[c])
			}
		}
	}
}

// GaussianKernel returns the normalised 1-D kernel exp(−i²/2σ²)/Σ for
// i = −r..r, r = ceil(3σ).
func GaussianKernel(sigma float64) []float64 {
	rad := int(math.Ceil(3 * sigma))
	k := make([]float64, 2*rad+1)
	var sum float64
	for i := range k {
		d := float64(i - rad)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

func clamp01(v float64) float64 { return math.Min(1, math.Max(0, v)) }

func toU8(v float64) uint8 { return uint8(math.Min(255, math.Max(0, math.Round(v)))) }

// rng is splitmix64: tiny, fast and fixed, so the data set never changes
// with the Go version.
type rng struct{ s uint64 }

func newRNG(seed, stream uint64) *rng {
	r := &rng{s: seed ^ (stream * 0xd1b54a32d192ed03)}
	r.next()
	return r
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float is uniform in [0, 1) with 53 bits.
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// intn is uniform in [0, n) (modulo bias is irrelevant for n this small).
func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// normal is N(0, 1) by Box–Muller.
func (r *rng) normal() float64 {
	u1 := 1 - r.float() // (0, 1]
	u2 := r.float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// Caption describes an image's quality in words for Image2Prompt
// pre-training: a quality word from its MOS (the six CLIP-AGIQA words,
// worst to best) and what degraded it and how strongly, e.g. "a poor photo,
// very blurry". The words follow the MOS formula, so a tower that learns to
// place images near their captions learns their quality.
func Caption(d Distortion, severity, levels int) string {
	mos := MOS(d, severity, levels)
	words := []string{"terrible", "bad", "poor", "average", "good", "perfect"}
	q := words[min(len(words)-1, max(0, int(math.Floor((mos-1)/4*float64(len(words)-1)+0.5))))]
	if severity <= 0 || d == None {
		return "a " + q + " photo, sharp and clean"
	}
	f := float64(severity) / float64(levels-1)
	strength := "slightly"
	switch {
	case f > 0.8:
		strength = "extremely"
	case f > 0.55:
		strength = "very"
	case f > 0.3:
		strength = "moderately"
	}
	what := map[Distortion]string{Blur: "blurry", Noise: "noisy", JPEG: "blocky from jpeg compression", Colour: "colour shifted to red"}[d]
	return fmt.Sprintf("a %s photo, %s %s", q, strength, what)
}

// GeneratePairs writes an Image2Prompt pre-training set under dir: every
// image of Generate(dir, opts) (train and test sides alike) and pairs.csv
// with columns image,prompt (Caption of each image). Use a seed other than
// the demo's so that no base image or noise pattern is shared with the
// demo's test set. It returns the table's path.
func GeneratePairs(dir string, opts Options) (string, error) {
	if err := opts.normalise(); err != nil {
		return "", err
	}
	if _, _, err := Generate(dir, opts); err != nil {
		return "", err
	}
	items, err := Plan(opts)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.WriteString("image,prompt\n")
	for _, it := range items {
		fmt.Fprintf(&sb, "%s,\"%s\"\n", it.Name, Caption(it.Distortion, it.Severity, opts.Levels))
	}
	path := filepath.Join(dir, "pairs.csv")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	return path, nil
}
