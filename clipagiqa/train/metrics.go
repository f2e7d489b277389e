package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/internal/plot"
)

// Output files in Config.OutDir.
const (
	MetricsJSON = "metrics.jsonl"
	MetricsCSV  = "metrics.csv"
	LossPlot    = "loss.png"
	MetricsPlot = "metrics.png"
)

// PartReport is one evaluation part's metrics after an epoch, per output.
type PartReport struct {
	Outputs map[string]metrics.Report `json:"outputs,omitempty"`
	Error   string                    `json:"error,omitempty"`
}

// EpochReport is one line of metrics.jsonl.
type EpochReport struct {
	Epoch        int                   `json:"epoch"` // 1-based
	LR           float64               `json:"lr"`    // group 0's at the epoch's first step
	TrainLoss    float64               `json:"train_loss"`
	Steps        int                   `json:"steps"`
	TrainSamples int                   `json:"train_samples"`
	Parts        map[string]PartReport `json:"parts,omitempty"`
	// Score is the selection value (see Selection); Best marks the epoch
	// saved as the best so far.
	Score   float64 `json:"score"`
	Best    bool    `json:"best"`
	Seconds float64 `json:"seconds"`
}

// StepInfo describes one finished optimisation step.
type StepInfo struct {
	Epoch, Step, Steps int // 1-based epoch and step, steps in the epoch
	Samples            int // global batch size of the step
	Loss               float64
	LR                 float64
	GradNorm           float64       // before clipping (0 without clipping)
	Elapsed            time.Duration // since the epoch started
}

// Callbacks observe training on Run's goroutine; each may be nil.
type Callbacks struct {
	OnStep  func(StepInfo)
	OnEpoch func(EpochReport)
}

// ReadMetrics reads a metrics.jsonl written by Run.
func ReadMetrics(path string) ([]EpochReport, error) {
	return ReadJSONLines[EpochReport](path)
}

// ReadJSONLines reads a JSON-lines file of T records (blank lines
// skipped); an undecodable line is an error naming path and line.
func ReadJSONLines[T any](path string) ([]T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r T
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// jsonFloat keeps NaN/Inf out of JSON: encoding/json refuses them, and an
// undefined metric (e.g. SRCC of constant predictions on a tiny part) must
// not stop training. It is written as 0 and named in the part's Error.
func jsonFloat(x float64) (float64, bool) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, false
	}
	return x, true
}

// MarshalJSON writes h with non-finite values as 0, named in the part's
// Error (see jsonFloat), so metrics.jsonl and summaries always encode.
func (h EpochReport) MarshalJSON() ([]byte, error) {
	type plain EpochReport // without this method
	return json.Marshal(plain(jsonSafe(h)))
}

// jsonSafe returns a copy of h that encoding/json accepts (see jsonFloat).
func jsonSafe(h EpochReport) EpochReport {
	h.LR, _ = jsonFloat(h.LR)
	h.TrainLoss, _ = jsonFloat(h.TrainLoss)
	h.Score, _ = jsonFloat(h.Score)
	if h.Parts == nil {
		return h
	}
	parts := make(map[string]PartReport, len(h.Parts))
	for name, pr := range h.Parts {
		outs := make(map[string]metrics.Report, len(pr.Outputs))
		var undefined []string
		for o, r := range pr.Outputs {
			for _, f := range []struct {
				name string
				v    *float64
			}{{"plcc", &r.PLCC}, {"srcc", &r.SRCC}, {"krcc", &r.KRCC}, {"rmse", &r.RMSE},
				{"logistic_plcc", &r.LogisticPLCC}, {"logistic_rmse", &r.LogisticRMSE}} {
				var ok bool
				if *f.v, ok = jsonFloat(*f.v); !ok {
					undefined = append(undefined, o+" "+f.name)
				}
			}
			for i := range r.LogisticParams {
				r.LogisticParams[i], _ = jsonFloat(r.LogisticParams[i])
			}
			outs[o] = r
		}
		if len(pr.Outputs) > 0 {
			pr.Outputs = outs
		}
		if len(undefined) > 0 {
			slices.Sort(undefined)
			msg := "undefined (written as 0): " + strings.Join(undefined, ", ")
			if pr.Error != "" {
				msg = pr.Error + "; " + msg
			}
			pr.Error = msg
		}
		parts[name] = pr
	}
	h.Parts = parts
	return h
}

// writeMetrics rewrites metrics.jsonl and metrics.csv atomically.
func writeMetrics(out string, parts, outputs []string, history []EpochReport) error {
	var js, cs bytes.Buffer
	head := []string{"epoch", "lr", "train_loss", "steps", "train_samples"}
	for _, p := range parts {
		for _, o := range outputs {
			for _, m := range []string{"n", "plcc", "srcc", "krcc", "rmse"} {
				head = append(head, p+"_"+o+"_"+m)
			}
		}
	}
	head = append(head, "score", "best", "seconds")
	cs.WriteString(strings.Join(head, ",") + "\n")
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	for _, h := range history {
		b, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("metrics of epoch %d: %w", h.Epoch, err)
		}
		js.Write(b)
		js.WriteByte('\n')
		row := []string{strconv.Itoa(h.Epoch), f(h.LR), f(h.TrainLoss), strconv.Itoa(h.Steps), strconv.Itoa(h.TrainSamples)}
		for _, p := range parts {
			for _, o := range outputs {
				r, ok := h.Parts[p].Outputs[o]
				if !ok {
					row = append(row, "", "", "", "", "")
					continue
				}
				row = append(row, strconv.Itoa(r.N), f(r.PLCC), f(r.SRCC), f(r.KRCC), f(r.RMSE))
			}
		}
		row = append(row, f(h.Score), strconv.FormatBool(h.Best), strconv.FormatFloat(h.Seconds, 'f', 3, 64))
		cs.WriteString(strings.Join(row, ",") + "\n")
	}
	if err := WriteFileAtomic(filepath.Join(out, MetricsJSON), js.Bytes()); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(out, MetricsCSV), cs.Bytes())
}

// writePlots draws the training loss and every part's SRCC per output.
func writePlots(out string, parts, outputs []string, history []EpochReport) error {
	loss := make([]float64, len(history))
	series := map[string][]float64{}
	for i, h := range history {
		loss[i] = h.TrainLoss
		for _, p := range parts {
			for _, o := range outputs {
				key := p + " " + o
				v := math.NaN()
				if r, ok := h.Parts[p].Outputs[o]; ok {
					v = r.SRCC
				}
				series[key] = append(series[key], v)
			}
		}
	}
	if err := plot.Lines(filepath.Join(out, LossPlot), map[string][]float64{"train loss": loss}, "training loss", "epoch", "loss"); err != nil {
		return err
	}
	for key, v := range series {
		if !slices.ContainsFunc(v, func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }) {
			delete(series, key) // SRCC undefined every epoch so far: nothing to draw
		}
	}
	if len(series) == 0 {
		return nil
	}
	return plot.Lines(filepath.Join(out, MetricsPlot), series, "SRCC per epoch", "epoch", "SRCC")
}

// WriteFileAtomic writes data to path through a temporary file in the
// same directory (".NAME.tmp*", removed by the next run if a crash leaves
// it), synced and renamed.
func WriteFileAtomic(path string, data []byte) error {
	return writeAtomic(path, func(w io.Writer) error { _, err := w.Write(data); return err })
}

func writeAtomic(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
