package plot

import (
	"fmt"
	"image/color"
	"math"
	"sort"
	"strings"
)

// Colormap maps a value in [0, 1] to a colour (values outside are clamped,
// NaN maps to 0).
type Colormap func(v float64) color.RGBA

// channel interpolates one piecewise-linear channel given as (x, y) knots.
func channel(v float64, knots [][2]float64) float64 {
	for i := 1; i < len(knots); i++ {
		if v <= knots[i][0] {
			a, b := knots[i-1], knots[i]
			return a[1] + (v-a[0])/(b[0]-a[0])*(b[1]-a[1])
		}
	}
	return knots[len(knots)-1][1]
}

func clamp01(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return min(v, 1)
}

func to8(v float64) uint8 { return uint8(math.Round(clamp01(v) * 255)) }

// Matplotlib's jet, from its segment data (piecewise linear per channel).
var jetR = [][2]float64{{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}}
var jetG = [][2]float64{{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}}
var jetB = [][2]float64{{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}}

// Jet is matplotlib's "jet": dark blue, cyan, yellow, dark red.
func Jet(v float64) color.RGBA {
	v = clamp01(v)
	return color.RGBA{to8(channel(v, jetR)), to8(channel(v, jetG)), to8(channel(v, jetB)), 255}
}

// viridisHex samples matplotlib's "viridis" at ten evenly spaced points.
var viridisHex = []uint32{0x440154, 0x482878, 0x3e4a89, 0x31688e, 0x26828e, 0x1f9e89, 0x35b779, 0x6ece58, 0xb5de2b, 0xfde725}

// Viridis is matplotlib's perceptually uniform "viridis" (dark purple to
// yellow), linearly interpolated between ten samples.
func Viridis(v float64) color.RGBA {
	v = clamp01(v)
	f := v * float64(len(viridisHex)-1)
	i := min(int(f), len(viridisHex)-2)
	t := f - float64(i)
	mix := func(shift uint) uint8 {
		a := float64(viridisHex[i] >> shift & 0xff)
		b := float64(viridisHex[i+1] >> shift & 0xff)
		return uint8(math.Round(a + t*(b-a)))
	}
	return color.RGBA{mix(16), mix(8), mix(0), 255}
}

// Gray runs from black to white.
func Gray(v float64) color.RGBA {
	g := to8(v)
	return color.RGBA{g, g, g, 255}
}

var colormaps = map[string]Colormap{"jet": Jet, "viridis": Viridis, "gray": Gray}

// ColormapNames lists the colour maps ColormapByName knows, sorted.
func ColormapNames() []string {
	names := make([]string, 0, len(colormaps))
	for n := range colormaps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ColormapByName returns jet, viridis or gray.
func ColormapByName(name string) (Colormap, error) {
	if c, ok := colormaps[strings.ToLower(name)]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("colour map %q: want one of %s", name, strings.Join(ColormapNames(), ", "))
}
