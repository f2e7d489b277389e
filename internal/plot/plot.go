// Package plot draws small PNG charts (a scatter plot with identity and
// least-squares lines, and line charts for training curves) with Go's image
// packages and the basicfont bitmap face, so the CLI needs no plotting
// dependency.
package plot

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Canvas size and the plot area's margins, in pixels.
const (
	Width  = 640
	Height = 480

	marginLeft   = 64
	marginRight  = 20
	marginTop    = 32
	marginBottom = 48
)

// Colours used by the charts.
var (
	White     = color.RGBA{255, 255, 255, 255}
	Black     = color.RGBA{0, 0, 0, 255}
	GridGrey  = color.RGBA{225, 225, 225, 255}
	LineGrey  = color.RGBA{150, 150, 150, 255}
	PointBlue = color.RGBA{31, 119, 180, 255}
	FitRed    = color.RGBA{214, 39, 40, 255}
	// Palette colours the series of a line chart, in name order.
	Palette = []color.RGBA{
		{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
		{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
	}
)

// axis maps data values onto pixels along one direction.
type axis struct {
	lo, hi, step float64 // data range (tick-aligned) and tick spacing
	p0, p1       float64 // pixel positions of lo and hi
}

func (a axis) px(v float64) float64 { return a.p0 + (v-a.lo)/(a.hi-a.lo)*(a.p1-a.p0) }

// niceAxis widens [lo, hi] to multiples of a 1-2-5 step giving about 5 ticks.
func niceAxis(lo, hi float64, p0, p1 float64) axis {
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi == lo {
		d := math.Max(math.Abs(lo)*0.5, 0.5)
		lo, hi = lo-d, hi+d
	}
	raw := (hi - lo) / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return axis{lo: math.Floor(lo/step+1e-9) * step, hi: math.Ceil(hi/step-1e-9) * step, step: step, p0: p0, p1: p1}
}

func (a axis) ticks() []float64 {
	var out []float64
	for i := 0; ; i++ {
		v := a.lo + float64(i)*a.step
		if v > a.hi+a.step*1e-6 {
			return out
		}
		out = append(out, v)
	}
}

func tickLabel(v, step float64) string {
	if math.Abs(v) < step*1e-9 {
		v = 0
	}
	prec := max(0, -int(math.Floor(math.Log10(step)+1e-9)))
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// canvas is an RGBA image with the plot area's axes.
type canvas struct {
	img  *image.RGBA
	x, y axis
}

func newCanvas(xlo, xhi, ylo, yhi float64, title, xlabel, ylabel string) *canvas {
	img := image.NewRGBA(image.Rect(0, 0, Width, Height))
	fill(img, img.Bounds(), White)
	c := &canvas{img: img,
		x: niceAxis(xlo, xhi, marginLeft, Width-marginRight),
		y: niceAxis(ylo, yhi, Height-marginBottom, marginTop)}
	for _, t := range c.x.ticks() {
		p := int(math.Round(c.x.px(t)))
		fill(img, image.Rect(p, marginTop, p+1, Height-marginBottom), GridGrey)
		fill(img, image.Rect(p, Height-marginBottom, p+1, Height-marginBottom+4), Black)
		s := tickLabel(t, c.x.step)
		drawText(img, s, p-textWidth(s)/2, Height-marginBottom+16, Black)
	}
	for _, t := range c.y.ticks() {
		p := int(math.Round(c.y.px(t)))
		fill(img, image.Rect(marginLeft, p, Width-marginRight, p+1), GridGrey)
		fill(img, image.Rect(marginLeft-4, p, marginLeft, p+1), Black)
		s := tickLabel(t, c.y.step)
		drawText(img, s, marginLeft-6-textWidth(s), p+4, Black)
	}
	// Frame.
	fill(img, image.Rect(marginLeft, marginTop, Width-marginRight, marginTop+1), Black)
	fill(img, image.Rect(marginLeft, Height-marginBottom, Width-marginRight+1, Height-marginBottom+1), Black)
	fill(img, image.Rect(marginLeft, marginTop, marginLeft+1, Height-marginBottom), Black)
	fill(img, image.Rect(Width-marginRight, marginTop, Width-marginRight+1, Height-marginBottom), Black)
	drawText(img, title, (Width-textWidth(title))/2, marginTop-10, Black)
	drawText(img, xlabel, marginLeft+(Width-marginLeft-marginRight-textWidth(xlabel))/2, Height-10, Black)
	drawTextVertical(img, ylabel, 14, marginTop+(Height-marginTop-marginBottom+textWidth(ylabel))/2, Black)
	return c
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

var face = basicfont.Face7x13

func textWidth(s string) int { return font.MeasureString(face, s).Round() }

// drawText writes s with its baseline at y, starting at x.
func drawText(img *image.RGBA, s string, x, y int, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// drawTextVertical writes s rotated 90° anticlockwise, reading upwards from (x, y).
func drawTextVertical(img *image.RGBA, s string, x, y int, c color.RGBA) {
	w := textWidth(s)
	if w == 0 {
		return
	}
	tmp := image.NewRGBA(image.Rect(0, 0, w, 16))
	drawText(tmp, s, 0, 12, c)
	for ty := range 16 {
		for tx := range w {
			if tmp.Pix[tmp.PixOffset(tx, ty)+3] > 0 {
				px, py := x-12+ty, y-tx
				if image.Pt(px, py).In(img.Bounds()) {
					img.SetRGBA(px, py, tmp.RGBAAt(tx, ty))
				}
			}
		}
	}
}

// inside reports whether a pixel lies inside the plot area grown by pad
// pixels (points on the frame stay visible).
func inside(x, y, pad int) bool {
	return x > marginLeft-pad && x < Width-marginRight+pad && y > marginTop-pad && y < Height-marginBottom+pad
}

// dot draws a filled disc of radius r at pixel (x, y), clipped to a few
// pixels around the plot area.
func (c *canvas) dot(x, y, r float64, col color.RGBA) {
	for dy := -math.Ceil(r); dy <= math.Ceil(r); dy++ {
		for dx := -math.Ceil(r); dx <= math.Ceil(r); dx++ {
			if dx*dx+dy*dy <= r*r+0.25 {
				px, py := int(math.Round(x+dx)), int(math.Round(y+dy))
				if inside(px, py, 4) {
					c.img.SetRGBA(px, py, col)
				}
			}
		}
	}
}

// segment draws a line between data points with the given pen width; dash > 0
// leaves gaps every dash pixels.
func (c *canvas) segment(x0, y0, x1, y1 float64, width float64, col color.RGBA, dash float64) {
	px0, py0, px1, py1, ok := clip(c.x.px(x0), c.y.px(y0), c.x.px(x1), c.y.px(y1))
	if !ok {
		return
	}
	n := math.Hypot(px1-px0, py1-py0)
	for t := 0.0; t <= n; t += 0.5 {
		if dash > 0 && math.Mod(t, 2*dash) >= dash {
			continue
		}
		f := 0.0
		if n > 0 {
			f = t / n
		}
		c.dot(px0+(px1-px0)*f, py0+(py1-py0)*f, width/2, col)
	}
}

// clip cuts a pixel segment to the plot area (Liang–Barsky), so a steep fit
// line costs no more than the area it crosses.
func clip(x0, y0, x1, y1 float64) (float64, float64, float64, float64, bool) {
	if !finite(x0) || !finite(y0) || !finite(x1) || !finite(y1) {
		return 0, 0, 0, 0, false
	}
	t0, t1 := 0.0, 1.0
	dx, dy := x1-x0, y1-y0
	for _, e := range [][2]float64{
		{-dx, x0 - marginLeft}, {dx, Width - marginRight - x0},
		{-dy, y0 - marginTop}, {dy, Height - marginBottom - y0},
	} {
		p, q := e[0], e[1]
		if p == 0 {
			if q < 0 {
				return 0, 0, 0, 0, false
			}
			continue
		}
		r := q / p
		if p < 0 {
			t0 = math.Max(t0, r)
		} else {
			t1 = math.Min(t1, r)
		}
	}
	if t0 > t1 {
		return 0, 0, 0, 0, false
	}
	return x0 + t0*dx, y0 + t0*dy, x0 + t1*dx, y0 + t1*dy, true
}

func (c *canvas) save(path string) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, c.img); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func bounds(vals ...[]float64) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, vs := range vals {
		for _, v := range vs {
			if finite(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
				ok = true
			}
		}
	}
	return lo, hi, ok
}

// Scatter writes a PNG scatter plot of ys against xs (e.g. predicted score
// against MOS) with the identity line y = x (dashed grey, where the two
// ranges overlap) and the least-squares line (red). Non-finite pairs are
// skipped.
func Scatter(path string, xs, ys []float64, title, xlabel, ylabel string) error {
	img, err := ScatterImage(xs, ys, title, xlabel, ylabel)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return (&canvas{img: img}).save(path)
}

// ScatterImage draws what Scatter writes.
func ScatterImage(xs, ys []float64, title, xlabel, ylabel string) (*image.RGBA, error) {
	if len(xs) != len(ys) {
		return nil, fmt.Errorf("scatter: %d x values but %d y values", len(xs), len(ys))
	}
	var fx, fy []float64
	for i := range xs {
		if finite(xs[i]) && finite(ys[i]) {
			fx, fy = append(fx, xs[i]), append(fy, ys[i])
		}
	}
	if len(fx) == 0 {
		return nil, fmt.Errorf("scatter: no finite points")
	}
	xlo, xhi, _ := bounds(fx)
	ylo, yhi, _ := bounds(fy)
	c := newCanvas(xlo, xhi, ylo, yhi, title, xlabel, ylabel)
	// Identity over the overlap of both axes.
	if lo, hi := math.Max(c.x.lo, c.y.lo), math.Min(c.x.hi, c.y.hi); lo < hi {
		c.segment(lo, lo, hi, hi, 1, LineGrey, 4)
	}
	for i := range fx {
		c.dot(c.x.px(fx[i]), c.y.px(fy[i]), 2.5, PointBlue)
	}
	if a, b, ok := leastSquares(fx, fy); ok {
		c.segment(c.x.lo, a+b*c.x.lo, c.x.hi, a+b*c.x.hi, 2, FitRed, 0)
	}
	return c.img, nil
}

// leastSquares fits y = a + b·x.
func leastSquares(x, y []float64) (a, b float64, ok bool) {
	n := float64(len(x))
	if len(x) < 2 {
		return 0, 0, false
	}
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
	}
	if sxx == 0 {
		return 0, 0, false
	}
	b = sxy / sxx
	return my - b*mx, b, true
}

// Lines writes a PNG line chart: series[name][i] is the value at x = i+1
// (epochs count from 1). Series are drawn in name order with Palette colours
// and a legend; NaN values leave gaps.
func Lines(path string, series map[string][]float64, title, xlabel, ylabel string) error {
	img, err := LinesImage(series, title, xlabel, ylabel)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return (&canvas{img: img}).save(path)
}

// LinesImage draws what Lines writes.
func LinesImage(series map[string][]float64, title, xlabel, ylabel string) (*image.RGBA, error) {
	names := make([]string, 0, len(series))
	n := 0
	for name, vs := range series {
		names = append(names, name)
		n = max(n, len(vs))
	}
	sort.Strings(names)
	all := make([][]float64, 0, len(series))
	for _, name := range names {
		all = append(all, series[name])
	}
	ylo, yhi, ok := bounds(all...)
	if !ok {
		return nil, fmt.Errorf("lines: no finite values")
	}
	c := newCanvas(1, math.Max(float64(n), 2), ylo, yhi, title, xlabel, ylabel)
	for k, name := range names {
		col := Palette[k%len(Palette)]
		vs := series[name]
		for i, v := range vs {
			if !finite(v) {
				continue
			}
			if i+1 < len(vs) && finite(vs[i+1]) {
				c.segment(float64(i+1), v, float64(i+2), vs[i+1], 2, col, 0)
			}
			if len(vs) <= 40 {
				c.dot(c.x.px(float64(i+1)), c.y.px(v), 2.5, col)
			}
		}
		// Legend, top right inside the plot area.
		lx := Width - marginRight - 12 - textWidth(name) - 22
		ly := marginTop + 16 + 16*k
		fill(c.img, image.Rect(lx, ly-6, lx+16, ly-3), col)
		drawText(c.img, name, lx+22, ly, Black)
	}
	return c.img, nil
}
