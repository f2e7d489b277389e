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

// epochReportJSON is EpochReport's wire form: Score is null for an epoch
// without a selection value (NaN in memory: the selected part could not be
// scored, its PartReport.Error says why), which encoding/json cannot write.
type epochReportJSON struct {
	plainEpochReport
	Score *float64 `json:"score"`
}

type plainEpochReport EpochReport // EpochReport without its JSON methods

// MarshalJSON writes Score as null when it is NaN or infinite.
func (h EpochReport) MarshalJSON() ([]byte, error) {
	w := epochReportJSON{plainEpochReport: plainEpochReport(h)}
	if !math.IsNaN(h.Score) && !math.IsInf(h.Score, 0) {
		w.Score = &h.Score
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a null Score back as NaN.
func (h *EpochReport) UnmarshalJSON(b []byte) error {
	var w epochReportJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*h = EpochReport(w.plainEpochReport)
	h.Score = math.NaN()
	if w.Score != nil {
		h.Score = *w.Score
	}
	return nil
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
