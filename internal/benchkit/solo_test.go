package benchkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A fake side for the solo tests: the test binary re-executed with
// BENCHKIT_FAKE_SIDE set to a directory speaks the bench protocol, answers
// a training step with BENCHKIT_FAKE_STEP seconds and a peak of its idle
// RSS plus BENCHKIT_FAKE_GROW_KB, and appends to DIR/log how many fake
// sides were alive at each step (one file per live process in DIR).
func TestMain(m *testing.M) {
	if dir := os.Getenv("BENCHKIT_FAKE_SIDE"); dir != "" {
		os.Exit(fakeSide(dir))
	}
	os.Exit(m.Run())
}

func fakeSide(dir string) int {
	alive := filepath.Join(dir, fmt.Sprintf("alive-%d", os.Getpid()))
	if err := os.WriteFile(alive, nil, 0o644); err != nil {
		return 1
	}
	defer os.Remove(alive)
	step, _ := strconv.ParseFloat(os.Getenv("BENCHKIT_FAKE_STEP"), 64)
	grow, _ := strconv.ParseInt(os.Getenv("BENCHKIT_FAKE_GROW_KB"), 10, 64)
	const idle = 1 << 20
	sc := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var req struct {
			Op    string `json:"op"`
			Iters int    `json:"iters"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return 1
		}
		rep := map[string]any{"ok": true}
		switch req.Op {
		case "quit":
			_ = out.Encode(rep)
			return 0
		case "reset_hwm":
			rep["hwm_reset"], rep["rss_kb"] = true, idle
		case "train_step":
			live, _ := filepath.Glob(filepath.Join(dir, "alive-*"))
			f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return 1
			}
			fmt.Fprintf(f, "%d\n", len(live))
			f.Close()
			times, cpu := []float64{}, []float64{}
			for range req.Iters {
				times, cpu = append(times, step), append(cpu, 2*step)
			}
			rep["times"], rep["cpu"], rep["hwm_kb"] = times, cpu, idle+grow
		}
		_ = out.Encode(rep)
	}
	return 0
}

// fakeStarter starts a fake side answering steps in stepS seconds with
// growKB of growth.
func fakeStarter(t *testing.T, dir string, stepS float64, growKB int64) func() (*Reference, error) {
	self, err := os.Executable()
	require.NoError(t, err)
	return func() (*Reference, error) {
		return StartReferenceCommand([]string{self, "-test.run=^$"}, []string{"BENCHKIT_FAKE_SIDE=" + dir,
			fmt.Sprintf("BENCHKIT_FAKE_STEP=%g", stepS), fmt.Sprintf("BENCHKIT_FAKE_GROW_KB=%d", growKB)})
	}
}

func aliveAtSteps(t *testing.T, dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	require.NoError(t, err)
	return strings.Fields(string(b))
}

// Each side runs alone (no other fake process alive at any of its steps),
// and the row carries each side's own times, growth and the ratios.
func TestMeasureSoloRunsEachSideAlone(t *testing.T) {
	dir := t.TempDir()
	starts := []func() (*Reference, error){
		fakeStarter(t, dir, 1, 100), fakeStarter(t, dir, 3, 300), fakeStarter(t, dir, 2, 200),
	}
	row, err := measureSolo(&IPIQAOptions{Log: io.Discard}, starts, 32, 1024, IPIQAFLOPs{TrainStep: 1e9})
	require.NoError(t, err)
	assert.Empty(t, row.Skipped)
	assert.True(t, row.Solo)
	assert.Equal(t, []string{"1", "1", "1", "1", "1", "1"}, aliveAtSteps(t, dir), "warm-up and timed step of three sides, one process at a time")
	assert.Equal(t, 1.0, row.Go.Median)
	assert.Equal(t, 3.0, row.Ref.Median)
	assert.Equal(t, 3.0, row.Ratio)
	assert.Equal(t, 3.0, row.CPURatio)
	assert.Equal(t, int64(100), row.GoPeakKB-row.GoIdleKB)
	assert.Equal(t, int64(300), row.RefPeakKB-row.RefIdleKB)
	require.NotNil(t, row.LibtorchAlloc)
	assert.Equal(t, 1.5, row.LibtorchAlloc.Ratio)
	assert.InDelta(t, 32.0, row.StepGFLOP, 1e-9)
	live, _ := filepath.Glob(filepath.Join(dir, "alive-*"))
	assert.Empty(t, live, "every side has exited")
}

// A step that does not fit even alone is skipped with the reason, and the
// side that was started for it exits.
func TestMeasureSoloRefusesWhatDoesNotFitAlone(t *testing.T) {
	avail, err := memAvailableKB()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	row, err := measureSolo(&IPIQAOptions{}, []func() (*Reference, error){fakeStarter(t, dir, 1, 1)}, 32, 2*float64(avail), IPIQAFLOPs{})
	require.NoError(t, err)
	assert.Contains(t, row.Skipped, "even with each side alone")
	_, err = os.Stat(filepath.Join(dir, "log"))
	assert.True(t, os.IsNotExist(err), "no step ran")
	live, _ := filepath.Glob(filepath.Join(dir, "alive-*"))
	assert.Empty(t, live)
}

// measureSoloRows ends the shared processes first and replaces exactly the
// rows the memory guard refused; the projection then takes the batch-32 step.
func TestMeasureSoloRowsReplacesRefusedRows(t *testing.T) {
	dir := t.TempDir()
	var shared []*Reference
	for range 3 {
		r, err := fakeStarter(t, dir, 9, 9)()
		require.NoError(t, err)
		defer r.Close()
		shared = append(shared, r)
	}
	startGo := func(plain bool) (*Reference, *RefReply, error) {
		step := 1.0
		if plain {
			step = 2
		}
		r, err := fakeStarter(t, dir, step, 400)()
		return r, nil, err
	}
	startRef := func(string) (*Reference, *RefReply, error) {
		r, err := fakeStarter(t, dir, 4, 400)()
		return r, nil, err
	}
	rep := &IPIQAReport{Machine: MachineInfo{Threads: 2}, Rows: []IPIQARow{
		{What: "score", Batch: 32, GoRate: 2, RefRate: 1, GoCPU: Stat{Median: 32}, RefCPU: Stat{Median: 64}},
		{What: "train_step", Batch: 8, Go: Stat{Median: 0.3}, Ref: Stat{Median: 1}, GoPeakKB: 200, RefPeakKB: 100},
		{What: "train_step", Batch: 16, Skipped: "failed: killed"},
		{What: "train_step", Batch: 32, Skipped: "memory", tooBig: true},
	}}
	require.NoError(t, measureSoloRows(&IPIQAOptions{Log: io.Discard}, rep, shared, startGo, startRef))
	assert.Equal(t, []string{"1", "1", "1", "1", "1", "1"}, aliveAtSteps(t, dir), "the shared processes exited before the solo sides")
	assert.Equal(t, "failed: killed", rep.Rows[2].Skipped, "only refused rows are measured again")
	solo := rep.Rows[3]
	assert.True(t, solo.Solo)
	assert.Empty(t, solo.Skipped)
	assert.Equal(t, 4.0, solo.Ratio)
	assert.Equal(t, 2.0, solo.LibtorchAlloc.Ratio)
	rep.Rows[1].GoCPU, rep.Rows[1].RefCPU = Stat{Median: 1}, Stat{Median: 1}
	p := project(rep)
	require.NotNil(t, p)
	assert.Equal(t, 32, p.StepBatch)
	var sb strings.Builder
	rep.Notes = ipiqaNotes(rep)
	rep.Markdown(&sb)
	assert.Contains(t, sb.String(), "training step (each side alone) | 32 |")
	assert.Contains(t, sb.String(), "ran with each side alone")
}
