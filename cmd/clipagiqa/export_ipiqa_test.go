package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pythonTorch is Debian's python3 with python3-torch, the independent
// reader of exported checkpoints.
const pythonTorch = "/usr/bin/python3"

// checkExportWithTorch is run by python3-torch on (the official checkpoint,
// our export): the export has the official layout (keys in order, shapes,
// dtypes), equal model tensors, AdamW state, config and epoch, and PyTorch's
// own AdamW.load_state_dict accepts its optimizer state. It prints a JSON
// summary.
const checkExportWithTorch = `
import json, sys, torch
ref = torch.load(sys.argv[1], map_location="cpu")
got = torch.load(sys.argv[2], map_location="cpu")
assert sorted(got) == ["config", "epoch", "model", "optimizer", "scaler"], sorted(got)
assert got["scaler"] is None and got["epoch"] == ref["epoch"], (got["scaler"], got["epoch"])
assert got["config"] == ref["config"], "config differs"
rm, gm = ref["model"], got["model"]
assert list(gm) == list(rm), sorted(set(gm) ^ set(rm))
for k, a in rm.items():
    b = gm[k]
    assert (b.shape, b.dtype) == (a.shape, a.dtype), (k, b.shape, b.dtype, a.shape, a.dtype)
    assert torch.equal(a, b), k
ro, go = ref["optimizer"], got["optimizer"]
assert len(go["param_groups"]) == len(ro["param_groups"])
for gr, gg in zip(ro["param_groups"], go["param_groups"]):
    # Our AdamW also writes what newer PyTorch and its schedulers add.
    assert set(gg) - set(gr) <= {"initial_lr", "param_names"}, sorted(set(gg) - set(gr))
    for k, v in gr.items():
        assert gg[k] == v, (k, gg[k], v)
    if "initial_lr" in gg:
        assert gg["initial_lr"] == gg["lr"], (gg["initial_lr"], gg["lr"])
    if "param_names" in gg:
        assert len(gg["param_names"]) == len(gg["params"])
        for n, i in zip(gg["param_names"], gg["params"]):
            assert gm[n].shape == ro["state"][i]["exp_avg"].shape, (n, i)
assert sorted(go["state"]) == sorted(ro["state"]), "state indices differ"
for i, st in ro["state"].items():
    assert sorted(go["state"][i]) == sorted(st), i
    for k, a in st.items():
        b = go["state"][i][k]
        assert b.dtype == a.dtype and torch.equal(a, b), (i, k)
groups = []
for g in go["param_groups"]:
    ps = [torch.nn.Parameter(torch.zeros_like(go["state"][i]["exp_avg"])) for i in g["params"]]
    groups.append(dict({k: v for k, v in g.items() if k != "params"}, params=ps))
opt = torch.optim.AdamW(groups)
opt.load_state_dict(go)
print(json.dumps({"model_tensors": len(gm), "optimizer_states": len(go["state"]),
    "param_groups": len(go["param_groups"]), "epoch": got["epoch"]}))
`

// TestExportIPIQARoundTrip: export --method ipiqa of the official
// checkpoint_best.pth (as a file and as a run directory) loads with our
// loader to bit-identical scores (and the fixture's within its tolerance),
// and python3-torch finds the official layout with the same tensors.
func TestExportIPIQARoundTrip(t *testing.T) {
	prompts, want := ipiqaFixture(t)
	table := writePromptTable(t, prompts, 0, 1, 2, 3, 4, 5, 6, 7)
	dir := t.TempDir()
	exported := filepath.Join(dir, "exported.pth")
	stdout, stderr, err := run(t, "export", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--out", exported)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "epoch 0, 2 output(s), 512×512 input; AdamW state from the input")

	// A run directory exports its checkpoint_best.pth: the same bytes.
	runDir := filepath.Join(dir, "run")
	require.NoError(t, os.Mkdir(runDir, 0o755))
	raw, err := os.ReadFile(ipiqaCheckpoint)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(runDir, "checkpoint_best.pth"), raw, 0o644))
	fromDir := filepath.Join(dir, "from_dir.pth")
	_, stderr, err = run(t, "export", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", runDir, "--out", fromDir)
	require.NoError(t, err, stderr)
	a, err := os.ReadFile(exported)
	require.NoError(t, err)
	b, err := os.ReadFile(fromDir)
	require.NoError(t, err)
	assert.Equal(t, a, b, "the run directory's export differs from the file's")

	// Our loader: the export scores as the official checkpoint, bit for bit.
	scores := func(ck string) predictOutput {
		// One image per batch: the scorer's batches otherwise depend on
		// timing, and their shapes change the last bits.
		out, stderr, err := run(t, "predict", "--clip", ipiqaCLIP, "--method", "ipiqa", "--checkpoint", ck,
			"--prompts", table, "--batch-size", "1", ipiqaref.Path("images"))
		require.NoError(t, err, stderr)
		var p predictOutput
		require.NoError(t, json.Unmarshal([]byte(out), &p))
		require.Len(t, p.Results, ipiqaref.Images)
		return p
	}
	orig, back := scores(ipiqaCheckpoint), scores(exported)
	worst := 0.0
	for k := range orig.Results {
		o, r := orig.Results[k], back.Results[k]
		require.NotNil(t, r.Alignment)
		assert.Equal(t, o.Score, r.Score, o.Image)
		assert.Equal(t, *o.Alignment, *r.Alignment, o.Image)
		worst = max(worst, abs(r.Score-want[k][0]), abs(*r.Alignment-want[k][1]))
	}
	t.Logf("exported checkpoint: scores equal the official checkpoint's bit for bit; max abs error to the official reload %.2g (tolerance %g)", worst, ipiqaScoreAtol)
	assert.LessOrEqual(t, worst, ipiqaScoreAtol)

	// The independent reader.
	if exec.Command(pythonTorch, "-c", "import torch").Run() != nil {
		t.Skip("python3-torch not installed: checked our loader's round trip only")
	}
	out, err := exec.Command(pythonTorch, "-c", checkExportWithTorch, ipiqaCheckpoint, exported).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		t.Fatalf("python3-torch rejects the export: %v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err)
	var sum map[string]int
	require.NoError(t, json.Unmarshal(out, &sum), string(out))
	t.Logf("python3-torch: %v", sum)
	assert.Equal(t, 82, sum["optimizer_states"], "every trainable tensor has AdamW state after two steps (fixture README: 82 trainable)")
	assert.Equal(t, 4, sum["param_groups"])
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestExportIPIQABadInputs: misuse is a clear error that writes nothing,
// and a checkpoint without optimizer state exports with AdamW's initial
// state (said so) that our resume loads.
func TestExportIPIQABadInputs(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.pth")
	empty := filepath.Join(dir, "empty-run")
	require.NoError(t, os.Mkdir(empty, 0o755))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ViT CLIP", []string{"--clip", tinyCLIPPath, "--checkpoint", ipiqaCheckpoint}, "needs a ResNet CLIP"},
		{"checkpoint of another CLIP", []string{"--clip", "../../testdata/clipgen/tiny-rn/clip.pt", "--checkpoint", ipiqaCheckpoint}, "does not fit CLIP"},
		{"run directory without checkpoints", []string{"--clip", ipiqaCLIP, "--checkpoint", empty}, "no checkpoint_best.pth or checkpoint_N.pth"},
		{"absent epoch", []string{"--clip", ipiqaCLIP, "--checkpoint", empty, "--epoch", "3"}, "checkpoint_3.pth"},
		{"absent file", []string{"--clip", ipiqaCLIP, "--checkpoint", filepath.Join(dir, "nope.pth")}, "nope.pth"},
		{"not an IP-IQA checkpoint", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaref.Path("init_new_params.pth")}, "not an IP-IQA checkpoint"},
		{"--lr", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--lr", "0.1"}, "--lr is for --method agiqa"},
		{"--out a directory", []string{"--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--out", dir}, "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"export", "--method", "ipiqa", "--out", out}, tc.args...)
			_, _, err := run(t, args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NoFileExists(t, out)
		})
	}
	_, _, err := run(t, "export", "--method", "clipiqa", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--out", out)
	// Methods registered by other tests (toy_method_test.go) sort after these.
	assert.ErrorContains(t, err, "--method clipiqa has no trained weights to export (want one of [agiqa ipiqa")
	_, _, err = run(t, "export", "--method", "nope", "--clip", ipiqaCLIP, "--checkpoint", ipiqaCheckpoint, "--out", out)
	assert.ErrorContains(t, err, `method "nope"`)
}

// A checkpoint without optimizer state or config (SaveOfficial's nil) gets
// AdamW's initial state and the official config keys, so the official
// --resume and ours accept the export.
func TestExportIPIQAWithoutOptimizerState(t *testing.T) {
	dir := t.TempDir()
	bare := filepath.Join(dir, "bare.pth")
	m, err := ipiqa.Load(ipiqaCLIP, ipiqaCheckpoint, torch.CPU, nil)
	require.NoError(t, err)
	require.NoError(t, m.SaveOfficial(bare, nil, nil, 5))
	m.Close()
	out := filepath.Join(dir, "out.pth")
	stdout, stderr, err := run(t, "export", "--method", "ipiqa", "--clip", ipiqaCLIP, "--checkpoint", bare, "--out", out)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "epoch 5, 2 output(s), 512×512 input; no optimizer state in the input: wrote AdamW's initial state (official schedule)")

	r, err := ipiqa.Load(ipiqaCLIP, out, torch.CPU, nil)
	require.NoError(t, err)
	defer r.Close()
	opt, err := ipiqatrain.NewOptimizer(r, ipiqatrain.OfficialSchedule())
	require.NoError(t, err)
	defer opt.Close()
	ck, err := r.LoadOfficial(out, opt)
	require.NoError(t, err)
	assert.EqualValues(t, 5, ck.Epoch)
	for path, want := range map[string]any{"arch": "ipiqa", "output_dim": int64(2), "input_resolution": int64(512), "qa_token": true} {
		v, err := ptfile.Get(ck.Config, "model", path)
		require.NoError(t, err, path)
		assert.Equal(t, want, v, path)
	}
	task, err := ptfile.Get(ck.Config, "run", "task")
	require.NoError(t, err)
	assert.Equal(t, "agiqa_doublescore", task)
}

// A run of our IP-IQA training exports from its directory: the export
// evaluates as the run's checkpoint_best.pth does, and python3-torch finds
// the same tensors in the same layout.
// The text side's freezing (--freezing) is read back from the saved keys:
// a paper-frozen run (no txt_pos, text_projection) loads, and a run that
// trains the whole text side keeps its txt_model tensors.
func TestExportIPIQAOfOurTrainingRun(t *testing.T) {
	root := miniAGIQA3K(t)
	for _, freezing := range []string{"official", "paper", "none"} {
		t.Run(freezing, func(t *testing.T) { exportTrainingRun(t, root, freezing) })
	}
}

func exportTrainingRun(t *testing.T, root, freezing string) {
	runDir := filepath.Join(t.TempDir(), "run")
	_, stderr, err := run(t, "train", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--dataset", "agiqa3k", "--root", root,
		"--protocol", "ipiqa-official", "--splits", "1", "--epochs", "1", "--batch-size", "4", "--input-resolution", "128",
		"--freezing", freezing, "--out", runDir)
	require.NoError(t, err, stderr)
	exported := filepath.Join(t.TempDir(), "exported.pth")
	stdout, stderr, err := run(t, "export", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--checkpoint", runDir, "--out", exported)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "from "+filepath.Join(runDir, "checkpoint_best.pth"))
	assert.Contains(t, stdout, "128×128 input; AdamW state from the input")

	eval := func(ck string) evalOutput {
		out, stderr, err := run(t, "eval", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--checkpoint", ck,
			"--dataset", "agiqa3k", "--root", root, "--batch-size", "1", "--format", "json")
		require.NoError(t, err, stderr)
		var e evalOutput
		require.NoError(t, json.Unmarshal([]byte(out), &e))
		return e
	}
	orig, back := eval(filepath.Join(runDir, "checkpoint_best.pth")), eval(exported)
	require.Len(t, back.Outputs, 2)
	assert.Equal(t, 16, back.Outputs[0].N)
	assert.Equal(t, orig.Outputs, back.Outputs, "the export evaluates exactly as the run's checkpoint")

	if exec.Command(pythonTorch, "-c", "import torch").Run() != nil {
		t.Skip("python3-torch not installed: checked our loader's round trip only")
	}
	out, err := exec.Command(pythonTorch, "-c", checkExportWithTorch, filepath.Join(runDir, "checkpoint_best.pth"), exported).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		t.Fatalf("python3-torch rejects the export: %v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err)
	t.Logf("python3-torch: %s", out)
	var sum map[string]int
	require.NoError(t, json.Unmarshal(out, &sum), string(out))
	// Trainable tensors (fixture README: 82 with the official freezing;
	// the paper's freezes txt_pos and text_projection; none adds the
	// 26 txt_model and ln_final tensors).
	assert.Equal(t, map[string]int{"official": 82, "paper": 80, "none": 108}[freezing], sum["optimizer_states"])
}
