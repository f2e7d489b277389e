package explain

import (
	"fmt"
	"image"
	"image/color"
	"math"

	"github.com/clipagiqa/clipagiqa/internal/plot"
	"golang.org/x/image/draw"
)

// Layout constants of the rendered panels, in pixels.
const (
	pad        = 8
	lineHeight = 16 // one caption line (13 px face + spacing)
	barHeight  = 12 // the colour bar
	maxGridW   = 1536
	minTile    = 96
)

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{90, 90, 90, 255}
)

// InputImage turns normalised CHW pixels (size×size, (x/255 − mean)/std per
// channel) back into the RGB image the model saw.
func InputImage(pixels []float32, size int, mean, std [3]float32) (*image.RGBA, error) {
	if size <= 0 || len(pixels) != 3*size*size {
		return nil, fmt.Errorf("explain: %d pixel values for a %d×%d RGB input", len(pixels), size, size)
	}
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	plane := size * size
	for y := range size {
		for x := range size {
			o := img.PixOffset(x, y)
			for c := range 3 {
				v := (float64(pixels[c*plane+y*size+x])*float64(std[c]) + float64(mean[c])) * 255
				img.Pix[o+c] = uint8(math.Round(math.Max(0, math.Min(255, v))))
			}
			img.Pix[o+3] = 255
		}
	}
	return img, nil
}

// Upsample resizes a g×g map (row-major) to size×size bilinearly, as
// PyTorch's F.interpolate(mode="bilinear", align_corners=False): the source
// coordinate of output pixel o is (o+0.5)·g/size − 0.5, clamped at 0.
func Upsample(grid []float32, g, size int) ([]float32, error) {
	if g <= 0 || len(grid) != g*g || size <= 0 {
		return nil, fmt.Errorf("explain: upsample %d values as a %d×%d grid to %d", len(grid), g, g, size)
	}
	type tap struct {
		i0, i1 int
		w1     float64
	}
	taps := make([]tap, size)
	scale := float64(g) / float64(size)
	for o := range taps {
		src := math.Max((float64(o)+0.5)*scale-0.5, 0)
		i0 := min(int(src), g-1)
		taps[o] = tap{i0, min(i0+1, g-1), src - float64(i0)}
	}
	out := make([]float32, size*size)
	for y, ty := range taps {
		for x, tx := range taps {
			at := func(r, c int) float64 { return float64(grid[r*g+c]) }
			top := at(ty.i0, tx.i0)*(1-tx.w1) + at(ty.i0, tx.i1)*tx.w1
			bot := at(ty.i1, tx.i0)*(1-tx.w1) + at(ty.i1, tx.i1)*tx.w1
			out[y*size+x] = float32(top*(1-ty.w1) + bot*ty.w1)
		}
	}
	return out, nil
}

// normalise scales v to [0, 1] by its own minimum and maximum (all zeros
// when it is flat) and returns that range.
func normalise(v []float32) (out []float32, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, float64(x)), math.Max(hi, float64(x))
	}
	out = make([]float32, len(v))
	if !(hi > lo) {
		return out, lo, hi
	}
	for i, x := range v {
		out[i] = float32((float64(x) - lo) / (hi - lo))
	}
	return out, lo, hi
}

// Overlay alpha-blends the colour-mapped heat (values in [0, 1], one per
// pixel of base) over base: (1−alpha)·base + alpha·colour.
func Overlay(base *image.RGBA, heat []float32, cmap plot.Colormap, alpha float64) (*image.RGBA, error) {
	b := base.Bounds()
	w, h := b.Dx(), b.Dy()
	if len(heat) != w*h {
		return nil, fmt.Errorf("explain: %d heat values for a %d×%d image", len(heat), w, h)
	}
	if alpha < 0 || alpha > 1 || math.IsNaN(alpha) {
		return nil, fmt.Errorf("explain: alpha %v, want [0, 1]", alpha)
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := cmap(float64(heat[y*w+x]))
			src := base.PixOffset(b.Min.X+x, b.Min.Y+y)
			dst := out.PixOffset(x, y)
			for k, cv := range [3]uint8{c.R, c.G, c.B} {
				v := (1-alpha)*float64(base.Pix[src+k]) + alpha*float64(cv)
				out.Pix[dst+k] = uint8(math.Round(v))
			}
			out.Pix[dst+3] = 255
		}
	}
	return out, nil
}

// resized returns img scaled to size×size (bilinear; img itself when it
// already has that size).
func resized(img *image.RGBA, size int) *image.RGBA {
	if img.Bounds().Dx() == size && img.Bounds().Dy() == size {
		return img
	}
	out := image.NewRGBA(image.Rect(0, 0, size, size))
	draw.BiLinear.Scale(out, out.Bounds(), img, img.Bounds(), draw.Src, nil)
	return out
}

// headOverlay renders one head's grid weights (tokens after token 0) on
// base at base's size; it returns the image and the raw weight range.
func headOverlay(base *image.RGBA, weights []float32, g int, o RenderOptions) (*image.RGBA, float64, float64, error) {
	size := base.Bounds().Dx()
	up, err := Upsample(weights[1:], g, size)
	if err != nil {
		return nil, 0, 0, err
	}
	// The colour range is the grid's, not the upsampled map's: bilinear
	// interpolation stays inside it and reaches both ends at cell centres.
	_, lo, hi := normalise(weights[1:])
	heat := make([]float32, len(up))
	if hi > lo {
		for i, v := range up {
			heat[i] = float32((float64(v) - lo) / (hi - lo))
		}
	}
	img, err := Overlay(base, heat, o.Colormap, o.Alpha)
	return img, lo, hi, err
}

// captionLines writes lines from the top of img, shortened to width.
func captionLines(img *image.RGBA, lines []string, x, y, width int) {
	for i, l := range lines {
		c := black
		if i > 0 {
			c = grey
		}
		plot.DrawText(img, plot.FitText(l, width), x, y+i*lineHeight+12, c)
	}
}

// colourBar draws the map's colour scale in r with the raw range under it.
func colourBar(img *image.RGBA, r image.Rectangle, cmap plot.Colormap, lo, hi float64, label string) {
	w := r.Dx()
	for x := range w {
		plot.FillRect(img, image.Rect(r.Min.X+x, r.Min.Y, r.Min.X+x+1, r.Min.Y+barHeight), cmap(float64(x)/float64(max(w-1, 1))))
	}
	y := r.Min.Y + barHeight + 13
	left, right := formatWeight(lo), formatWeight(hi)
	plot.DrawText(img, left, r.Min.X, y, black)
	plot.DrawText(img, right, r.Max.X-plot.TextWidth(right), y, black)
	room := w - plot.TextWidth(left) - plot.TextWidth(right) - 2*pad
	label = plot.FitText(label, room)
	plot.DrawText(img, label, r.Min.X+(w-plot.TextWidth(label))/2, y, grey)
}

// formatWeight prints an attention weight as a percentage.
func formatWeight(v float64) string {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return "n/a"
	}
	switch p := 100 * v; {
	case p >= 10:
		return fmt.Sprintf("%.1f%%", p)
	case p >= 0.1:
		return fmt.Sprintf("%.2f%%", p)
	default:
		return fmt.Sprintf("%.3g%%", p)
	}
}

// meanOverHeads averages the heads' weights token by token.
func meanOverHeads(heads [][]float32) []float32 {
	out := make([]float32, len(heads[0]))
	for t := range out {
		var s float64
		for _, h := range heads {
			s += float64(h[t])
		}
		out[t] = float32(s / float64(len(heads)))
	}
	return out
}

// MeanPanel renders the paper's Fig. 3 layout for one map averaged over its
// heads: caption lines (image, scores, map, prompt), the input image and the
// overlay side by side, and the colour bar with the weight range.
func MeanPanel(e *Explanation, m *Map, o RenderOptions) (*image.RGBA, error) {
	base, err := InputImage(e.Pixels, e.Size, e.Mean, e.Std)
	if err != nil {
		return nil, err
	}
	mean := meanOverHeads(m.Heads)
	over, lo, hi, err := headOverlay(base, mean, m.Grid, o)
	if err != nil {
		return nil, err
	}
	lines := append(captionHead(e), m.Title,
		fmt.Sprintf("mean of %d head(s); %s %s", len(m.Heads), m.Token0, formatWeight(float64(mean[0]))))
	s := e.Size
	width := 2*s + 3*pad
	top := pad + len(lines)*lineHeight + pad/2
	height := top + s + pad + barHeight + lineHeight + pad
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	plot.FillRect(img, img.Bounds(), white)
	captionLines(img, lines, pad, pad, width-2*pad)
	draw.Draw(img, image.Rect(pad, top, pad+s, top+s), base, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(2*pad+s, top, 2*pad+2*s, top+s), over, image.Point{}, draw.Src)
	colourBar(img, image.Rect(2*pad+s, top+s+pad, 2*pad+2*s, height), o.Colormap, lo, hi, "grid weight")
	plot.DrawText(img, plot.FitText("input", s), pad, top+s+pad+12, grey)
	return img, nil
}

// HeadsPanel renders every head of a map as a grid of overlays, each with
// its own colour range, labelled with its maximum and token-0 weights.
func HeadsPanel(e *Explanation, m *Map, o RenderOptions) (*image.RGBA, error) {
	base, err := InputImage(e.Pixels, e.Size, e.Mean, e.Std)
	if err != nil {
		return nil, err
	}
	n := len(m.Heads)
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	rows := (n + cols - 1) / cols
	tile := min(e.Size, max(minTile, (maxGridW-pad)/cols-pad))
	small := resized(base, tile)
	lines := append(captionHead(e), m.Title, fmt.Sprintf("%d head(s), each on its own min..max scale", n))
	width := max(cols*(tile+pad)+pad, 2*e.Size+3*pad)
	top := pad + len(lines)*lineHeight + pad/2
	cell := lineHeight + tile + pad
	img := image.NewRGBA(image.Rect(0, 0, width, top+rows*cell))
	plot.FillRect(img, img.Bounds(), white)
	captionLines(img, lines, pad, pad, width-2*pad)
	for h, w := range m.Heads {
		over, lo, hi, err := headOverlay(small, w, m.Grid, o)
		if err != nil {
			return nil, err
		}
		x := pad + (h%cols)*(tile+pad)
		y := top + (h/cols)*cell
		label := fmt.Sprintf("head %d: %s..%s, %s %s", h, formatWeight(lo), formatWeight(hi), shortToken(m.Token0), formatWeight(float64(w[0])))
		plot.DrawText(img, plot.FitText(label, tile), x, y+12, black)
		draw.Draw(img, image.Rect(x, y+lineHeight, x+tile, y+lineHeight+tile), over, image.Point{}, draw.Src)
	}
	return img, nil
}

// shortToken abbreviates the token-0 names for the narrow head labels.
func shortToken(t string) string {
	switch t {
	case TokenMean:
		return "mean-tok"
	case TokenClass:
		return "cls-tok"
	}
	return t
}

// captionHead is the image's caption: name and scores, then the prompt.
func captionHead(e *Explanation) []string {
	line := e.Image
	for _, s := range e.Scores {
		line += fmt.Sprintf("   %s %.4g", s.Name, s.Value)
	}
	lines := []string{line}
	if e.Prompt != "" {
		lines = append(lines, "prompt: "+e.Prompt)
	}
	return lines
}
