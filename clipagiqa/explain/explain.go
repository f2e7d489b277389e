// Package explain renders what a quality model looked at: attention maps of
// its pooling queries over the image grid (IP-IQA's cross-modal attention of
// the prompt and CLIP's attnpool of the mean token, as the IP-IQA paper's
// Fig. 3; the class-token attention of a ViT's last block for CLIP-AGIQA),
// upsampled bilinearly onto the preprocessed input, colour-mapped and
// alpha-blended, as PNG panels plus an index (explain.json, index.html).
package explain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/clipagiqa/clipagiqa/internal/plot"
)

// What token 0 of a map is (the query's own pooled token).
const (
	TokenMean  = "mean token"
	TokenClass = "class token"
)

// Map kinds (the file-name part of a map's panels).
const (
	KindCross  = "cross"  // IP-IQA txt_attnpool: text-feature query
	KindVisual = "visual" // CLIP attnpool: mean-token query
	KindClass  = "cls"    // ViT last block: class-token query
)

// Map is one attention map: per head, the weights of one query over the
// tokens [token 0; the Grid×Grid image grid row-major].
type Map struct {
	Kind   string      // KindCross, KindVisual, KindClass
	Title  string      // caption, e.g. "cross-modal attention (prompt query)"
	Token0 string      // TokenMean or TokenClass
	Grid   int         // G
	Heads  [][]float32 // [H][1+G²], rows sum to 1
}

// Score is one named model output.
type Score struct {
	Name  string
	Value float64
}

// Explanation is one image's scores and attention maps.
type Explanation struct {
	Image  string // as given on the command line
	Prompt string // the prompt it was scored with ("" when none)
	Scores []Score
	// Pixels is the model input, CHW normalised (x/255 − Mean)/Std, Size².
	Pixels    []float32
	Size      int
	Mean, Std [3]float32
	Maps      []Map
}

// check reports inconsistent maps.
func (e *Explanation) check() error {
	if len(e.Pixels) != 3*e.Size*e.Size || e.Size <= 0 {
		return fmt.Errorf("explain: %s: %d pixel values for size %d", e.Image, len(e.Pixels), e.Size)
	}
	for _, m := range e.Maps {
		if len(m.Heads) == 0 || m.Grid <= 0 {
			return fmt.Errorf("explain: %s: map %s has %d heads on a %d grid", e.Image, m.Kind, len(m.Heads), m.Grid)
		}
		for h, w := range m.Heads {
			if len(w) != 1+m.Grid*m.Grid {
				return fmt.Errorf("explain: %s: map %s head %d has %d weights, want 1+%d²", e.Image, m.Kind, h, len(w), m.Grid)
			}
			for _, v := range w {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("explain: %s: map %s head %d has a non-finite weight", e.Image, m.Kind, h)
				}
			}
		}
	}
	return nil
}

// RenderOptions choose the look of the overlays.
type RenderOptions struct {
	Colormap plot.Colormap // nil: plot.Jet
	// ColormapName is recorded in the index ("jet" when Colormap is nil).
	ColormapName string
	Alpha        float64 // weight of the colour in the blend; 0 means 0.5
}

func (o RenderOptions) withDefaults() (RenderOptions, error) {
	if o.Colormap == nil {
		o.Colormap, o.ColormapName = plot.Jet, "jet"
	}
	if o.Alpha == 0 {
		o.Alpha = 0.5
	}
	if !(o.Alpha > 0 && o.Alpha <= 1) {
		return o, fmt.Errorf("explain: alpha %v, want (0, 1]", o.Alpha)
	}
	return o, nil
}

// Header describes the run in the index.
type Header struct {
	Method     string `json:"method"`
	CLIP       string `json:"clip"`
	Checkpoint string `json:"checkpoint,omitempty"`
}

// IndexMap lists one map's files and figures.
type IndexMap struct {
	Kind   string `json:"kind"`
	Title  string `json:"title"`
	Heads  int    `json:"heads"`
	Grid   int    `json:"grid"`
	Token0 string `json:"token0"`
	// MeanFile and HeadsFile are relative to the output directory.
	MeanFile  string `json:"mean_file"`
	HeadsFile string `json:"heads_file"`
	// Token0Weight is the mean over heads of token 0's weight, MaxGridWeight
	// the largest mean weight of a grid cell.
	Token0Weight  float64 `json:"token0_weight"`
	MaxGridWeight float64 `json:"max_grid_weight"`
}

// IndexEntry is one explained image.
type IndexEntry struct {
	Image  string             `json:"image"`
	Prompt string             `json:"prompt,omitempty"`
	Score  float64            `json:"score"`
	Scores map[string]float64 `json:"scores"`
	Maps   []IndexMap         `json:"maps"`
}

// IndexError is an image that could not be explained.
type IndexError struct {
	Image string `json:"image"`
	Error string `json:"error"`
}

// Index is explain.json.
type Index struct {
	Header
	Colormap string       `json:"colormap"`
	Alpha    float64      `json:"alpha"`
	Images   []IndexEntry `json:"images"`
	Errors   []IndexError `json:"errors"`
}

// Writer renders explanations into a directory and keeps its index files
// (explain.json, index.html) current after every image, so an interrupted
// run leaves a consistent directory. Every file is written to a temporary
// name and renamed.
type Writer struct {
	dir   string
	opts  RenderOptions
	index Index
	n     int
}

// IndexJSON and IndexHTML are the index files' names in the output directory.
const (
	IndexJSON = "explain.json"
	IndexHTML = "index.html"
)

// NewWriter creates dir (and its parents) and writes an empty index.
func NewWriter(dir string, h Header, o RenderOptions) (*Writer, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	w := &Writer{dir: dir, opts: o, index: Index{Header: h, Colormap: o.ColormapName, Alpha: o.Alpha,
		Images: []IndexEntry{}, Errors: []IndexError{}}}
	return w, w.writeIndex()
}

// Index is what has been written so far.
func (w *Writer) Index() Index { return w.index }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// stem is the file-name prefix of the n-th image: its number (names may
// repeat across directories) and its base name without extension.
func stem(n int, image string) string {
	base := strings.TrimSuffix(filepath.Base(image), filepath.Ext(image))
	base = strings.Trim(unsafeName.ReplaceAllString(base, "_"), "_")
	if len(base) > 60 {
		base = base[:60]
	}
	return fmt.Sprintf("%03d_%s", n, base)
}

// Add renders e's panels (per map: mean over heads, and the heads' grid),
// writes them and updates the index.
func (w *Writer) Add(e *Explanation) error {
	if err := e.check(); err != nil {
		return err
	}
	st := stem(w.n, e.Image)
	entry := IndexEntry{Image: e.Image, Prompt: e.Prompt, Scores: map[string]float64{}, Maps: []IndexMap{}}
	for i, s := range e.Scores {
		if i == 0 {
			entry.Score = s.Value
		}
		entry.Scores[s.Name] = s.Value
	}
	for i := range e.Maps {
		m := &e.Maps[i]
		mean, err := MeanPanel(e, m, w.opts)
		if err != nil {
			return err
		}
		heads, err := HeadsPanel(e, m, w.opts)
		if err != nil {
			return err
		}
		im := IndexMap{Kind: m.Kind, Title: m.Title, Heads: len(m.Heads), Grid: m.Grid, Token0: m.Token0,
			MeanFile: st + "_" + m.Kind + "_mean.png", HeadsFile: st + "_" + m.Kind + "_heads.png"}
		avg := meanOverHeads(m.Heads)
		im.Token0Weight = float64(avg[0])
		for _, v := range avg[1:] {
			im.MaxGridWeight = math.Max(im.MaxGridWeight, float64(v))
		}
		if err := writePNG(filepath.Join(w.dir, im.MeanFile), mean); err != nil {
			return err
		}
		if err := writePNG(filepath.Join(w.dir, im.HeadsFile), heads); err != nil {
			return err
		}
		entry.Maps = append(entry.Maps, im)
	}
	w.n++
	w.index.Images = append(w.index.Images, entry)
	return w.writeIndex()
}

// AddError records an image that could not be explained.
func (w *Writer) AddError(image string, err error) error {
	w.n++
	w.index.Errors = append(w.index.Errors, IndexError{Image: image, Error: err.Error()})
	return w.writeIndex()
}

func (w *Writer) writeIndex() error {
	b, err := json.MarshalIndent(w.index, "", "  ")
	if err != nil {
		return fmt.Errorf("explain: index: %w", err)
	}
	if err := writeFile(filepath.Join(w.dir, IndexJSON), append(b, '\n')); err != nil {
		return err
	}
	var page bytes.Buffer
	if err := pageTemplate.Execute(&page, w.index); err != nil {
		return fmt.Errorf("explain: index.html: %w", err)
	}
	return writeFile(filepath.Join(w.dir, IndexHTML), page.Bytes())
}

// writePNG encodes img (deterministically: image/png has no timestamps).
func writePNG(path string, img image.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("explain: %s: %w", path, err)
	}
	return writeFile(path, buf.Bytes())
}

// writeFile writes data to path through a temporary file and a rename.
func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("explain: write %s: %w", path, err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("index").Funcs(template.FuncMap{
	"pct": func(v float64) string { return formatWeight(v) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipagiqa explain: {{.Method}}</title>
<style>
body{font-family:sans-serif;margin:1em 2em;color:#222}
section{border-top:1px solid #ccc;padding:.5em 0}
img{max-width:100%;height:auto;border:1px solid #ddd}
.maps{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0}
figcaption{font-size:.9em;color:#555}
.err{color:#b00}
</style></head><body>
<h1>Attention maps: {{.Method}}</h1>
<p>CLIP <code>{{.CLIP}}</code>{{if .Checkpoint}}, checkpoint <code>{{.Checkpoint}}</code>{{end}};
colour map {{.Colormap}}, alpha {{.Alpha}}. Each map is scaled to its own minimum..maximum grid weight;
the query's own token (mean or class token) is not drawn, its weight is given. Machine-readable: <a href="explain.json">explain.json</a>.</p>
{{range .Images}}<section>
<h2>{{.Image}}</h2>
<p>{{range $k, $v := .Scores}}{{$k}} <b>{{printf "%.4g" $v}}</b> &nbsp; {{end}}{{if .Prompt}}<br>prompt: <i>{{.Prompt}}</i>{{end}}</p>
<div class="maps">{{range .Maps}}<figure><a href="{{.MeanFile}}"><img src="{{.MeanFile}}" alt="{{.Title}}"></a>
<figcaption>{{.Title}}: mean of {{.Heads}} head(s), {{.Token0}} {{pct .Token0Weight}}, max cell {{pct .MaxGridWeight}};
<a href="{{.HeadsFile}}">every head</a></figcaption></figure>
{{end}}</div></section>
{{end}}{{if .Errors}}<section><h2>Errors</h2><ul>{{range .Errors}}<li class="err">{{.Image}}: {{.Error}}</li>{{end}}</ul></section>{{end}}
</body></html>
`))
