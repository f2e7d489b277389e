package plot

import (
	"image"
	"image/color"
)

// TextHeight is the line height of the labels' bitmap face, in pixels.
const TextHeight = 13

// TextWidth is the width of s in the labels' face, in pixels.
func TextWidth(s string) int { return textWidth(s) }

// DrawText writes s in the labels' face with its baseline at y, from x.
func DrawText(img *image.RGBA, s string, x, y int, c color.RGBA) { drawText(img, s, x, y, c) }

// FillRect paints r (clipped to img) with c.
func FillRect(img *image.RGBA, r image.Rectangle, c color.RGBA) { fill(img, r, c) }

// FitText shortens s with a trailing "..." until it is at most width pixels
// wide.
func FitText(s string, width int) string {
	if textWidth(s) <= width {
		return s
	}
	r := []rune(s)
	for len(r) > 0 && textWidth(string(r)+"...") > width {
		r = r[:len(r)-1]
	}
	if len(r) == 0 {
		return ""
	}
	return string(r) + "..."
}
