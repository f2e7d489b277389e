package benchkit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
)

// DefaultTrixieRoot is where scripts/trixie-root.sh keeps the Debian trixie
// root with PyTorch 2.x (see `make test-libtorch2`).
const DefaultTrixieRoot = "/var/cache/clipagiqa/trixie"

// maxExtraRelErr is how far an extra runtime's image features may be from
// Go's before its column is dropped: it would be timing another computation.
const maxExtraRelErr = 1e-3

// extraRef is a further image-encoder reference timed beside the PyTorch
// eager one: PyTorch 2.x eager, torch.compile, ONNX Runtime.
type extraRef struct {
	name string
	ref  *Reference
	req  map[string]any // merged into its encoder and features requests
}

func (e extraRef) call(req map[string]any) (*RefReply, error) {
	r := maps.Clone(req)
	maps.Copy(r, e.req)
	return e.ref.Call(r)
}

// ExtraInfo describes one extra reference of a run.
type ExtraInfo struct {
	Name    string  `json:"name"`
	Version string  `json:"version"`
	RelErr  float64 `json:"features_rel_err"` // vs Go fused, same pixels
}

// ExtraRate is an extra reference's image-encoder throughput at one batch.
type ExtraRate struct {
	Name  string  `json:"name"`
	Runs  Stat    `json:"runs"`
	Rate  float64 `json:"img_s"`
	Ratio float64 `json:"ratio"` // Go fused ÷ this
}

// Names of the extra columns; targets look them up.
const (
	extraTorch2        = "PyTorch 2 eager"
	extraTorch2Compile = "PyTorch 2 torch.compile"
	extraONNX          = "ONNX Runtime"
)

// startExtras starts the extra references that this machine has, checks
// that each computes Go's image features, and returns them with a closer.
// What is missing or fails becomes a note, not an error: the columns are
// "where available".
func startExtras(o *Options, cm *clip.Model, load map[string]any, host *Reference) ([]extraRef, []ExtraInfo, []string, func()) {
	var extras []extraRef
	var infos []ExtraInfo
	var notes []string
	var refs []*Reference
	closeAll := func() {
		for _, r := range refs {
			_ = r.Close()
		}
	}
	keep := func(e extraRef, version string) {
		rel, err := agreementIn(cm, o.Cache, e)
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("%s: dropped, its features call failed: %v", e.name, err))
		case !(rel <= maxExtraRelErr):
			notes = append(notes, fmt.Sprintf("%s: dropped, its image features differ from Go's by %.2g (relative L2 > %g)", e.name, rel, maxExtraRelErr))
		default:
			logf(o, "%s (%s): features agree to %.2g", e.name, version, rel)
			extras = append(extras, e)
			infos = append(infos, ExtraInfo{Name: e.name, Version: version, RelErr: rel})
		}
	}
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		notes = append(notes, fmt.Sprintf("extra references skipped: %v", err))
		return nil, nil, notes, closeAll
	}

	if runner, why := torch2Runner(o); runner == "" {
		notes = append(notes, "PyTorch 2 columns absent: "+why)
	} else {
		r, version, err := startTorch2(o, runner, load)
		if err != nil {
			notes = append(notes, fmt.Sprintf("PyTorch 2 columns absent: %v", err))
		} else {
			refs = append(refs, r)
			keep(extraRef{name: extraTorch2, ref: r}, version)
			logf(o, "torch.compile of the image tower (PyTorch %s)", version)
			if _, err := r.Call(map[string]any{"op": "compile"}); err != nil {
				notes = append(notes, fmt.Sprintf("torch.compile column absent: %v", err))
			} else {
				keep(extraRef{name: extraTorch2Compile, ref: r, req: map[string]any{"compiled": true}}, version)
			}
		}
	}

	if dir, why := onnxDir(o); dir == "" {
		notes = append(notes, "ONNX Runtime column absent: "+why)
	} else {
		r, version, err := startONNX(o, dir, cm, host)
		if err != nil {
			notes = append(notes, fmt.Sprintf("ONNX Runtime column absent: %v", err))
		} else {
			refs = append(refs, r)
			keep(extraRef{name: extraONNX, ref: r}, version)
		}
	}
	return extras, infos, notes, closeAll
}

// torch2Runner is the command that runs a program in the PyTorch 2 root, or
// "" with the reason.
func torch2Runner(o *Options) (string, string) {
	switch o.Torch2 {
	case "off":
		return "", "turned off (--torch2 off)"
	case "":
		runner := filepath.Join(o.Root, "scripts", "trixie-run.sh")
		if os.Geteuid() != 0 {
			return "", "the Debian trixie root needs root (chroot)"
		}
		if _, err := os.Stat(filepath.Join(DefaultTrixieRoot, ".clipagiqa-stamp")); err != nil {
			return "", "no Debian trixie root at " + DefaultTrixieRoot + " (make test-libtorch2 or scripts/trixie-root.sh creates it)"
		}
		if _, err := os.Stat(runner); err != nil {
			return "", err.Error()
		}
		return runner, ""
	default:
		return o.Torch2, ""
	}
}

// startTorch2 runs reference.py with the root's python3 (PyTorch 2.x), the
// weights' and cache directories mounted at the same paths.
func startTorch2(o *Options, runner string, load map[string]any) (*Reference, string, error) {
	script, err := filepath.Abs(filepath.Join(o.Root, "bench", "reference.py"))
	if err != nil {
		return nil, "", err
	}
	weights, err := filepath.Abs(o.CLIP)
	if err != nil {
		return nil, "", err
	}
	cache, err := filepath.Abs(o.Cache)
	if err != nil {
		return nil, "", err
	}
	env := append(refEnv(o.Threads), "TRIXIE_NO_GO=1",
		"TRIXIE_BIND="+cache+" "+filepath.Dir(weights),
		"TRIXIE_PASS=OPENBLAS_NUM_THREADS PYTHONUNBUFFERED")
	r, err := StartReferenceCommand([]string{runner, "python3", script, "--serve"}, env)
	if err != nil {
		return nil, "", err
	}
	l := maps.Clone(load)
	l["clip"] = weights
	lr, err := r.Call(l)
	if err != nil {
		_ = r.Close()
		return nil, "", err
	}
	return r, lr.Torch, nil
}

// onnxDir is the directory whose node_modules holds onnxruntime-node, or ""
// with the reason.
func onnxDir(o *Options) (string, string) {
	if o.ONNX == "off" {
		return "", "turned off (--onnx off)"
	}
	dir := o.ONNX
	if dir == "" {
		dir = filepath.Join(o.Cache, "onnxruntime")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-node", "package.json")); err != nil {
		return "", "onnxruntime-node is not installed in " + dir + " (`make bench` runs `npm install --ignore-scripts onnxruntime-node` there)"
	}
	if _, err := exec.LookPath(o.node()); err != nil {
		return "", "no node: " + err.Error()
	}
	return dir, ""
}

// startONNX exports the image tower once per weights file (by the host
// reference's PyTorch) and starts onnx_reference.js on it.
func startONNX(o *Options, dir string, cm *clip.Model, host *Reference) (*Reference, string, error) {
	model, err := onnxPath(o)
	if err != nil {
		return nil, "", err
	}
	if _, err := os.Stat(model); err != nil {
		logf(o, "exporting the image tower to %s", model)
		tmp := model + ".tmp"
		if _, err := host.Call(map[string]any{"op": "export_onnx", "path": tmp}); err != nil {
			return nil, "", fmt.Errorf("export to ONNX: %w", err)
		}
		if err := os.Rename(tmp, model); err != nil {
			return nil, "", err
		}
	}
	script := filepath.Join(o.Root, "bench", "onnx_reference.js")
	if _, err := os.Stat(script); err != nil {
		return nil, "", fmt.Errorf("onnx reference: %w", err)
	}
	r, err := StartReferenceCommand([]string{o.node(), script},
		append(refEnv(o.Threads), "NODE_PATH="+filepath.Join(dir, "node_modules")))
	if err != nil {
		return nil, "", err
	}
	lr, err := r.Call(map[string]any{"op": "load", "onnx": model, "threads": o.Threads,
		"resolution": cm.Config.ImageResolution})
	if err != nil {
		_ = r.Close()
		return nil, "", err
	}
	return r, lr.Torch, nil
}

// onnxPath names the exported image tower after the weights file's path,
// size and modification time, so new weights get a new export.
func onnxPath(o *Options) (string, error) {
	abs, err := filepath.Abs(o.CLIP)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d", abs, st.Size(), st.ModTime().UnixNano())))
	dir := filepath.Join(o.Cache, "onnx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))
	return filepath.Join(dir, base+"-visual-"+hex.EncodeToString(h[:6])+".onnx"), nil
}

func (o *Options) node() string {
	if o.Node == "" {
		return "node"
	}
	return o.Node
}

// extraRates turns the extra references' timings into a row's columns.
func extraRates(extras []extraRef, times [][]float64, batch int, fusedRate float64) []ExtraRate {
	var out []ExtraRate
	for i, e := range extras {
		s := NewStat(times[i])
		rate := s.Rate(float64(batch))
		out = append(out, ExtraRate{Name: e.name, Runs: s, Rate: rate, Ratio: Ratio(fusedRate, rate)})
	}
	return out
}

// bestExtra is the highest rate among the columns whose names start with
// prefix (NaN when none).
func bestExtra(row EncoderRow, prefix string) (float64, string) {
	best, name := 0.0, ""
	for _, e := range row.Extra {
		if strings.HasPrefix(e.Name, prefix) && e.Rate > best {
			best, name = e.Rate, e.Name
		}
	}
	if name == "" {
		return nan(), ""
	}
	return best, name
}

func nan() float64 { return math.NaN() }
