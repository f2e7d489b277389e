package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/ipiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/metrics"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/clipagiqa/train/ipiqatrain"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/require"
)

// IP-IQA data-parallel checks on the 16-image mini AGIQA-3K (official fold
// 0: 12 training, 4 test images) with the tiny ResNet CLIP at 64×64.
// Flips and dropout are off, so one process and two ranks see the same
// computation up to the split of each batch.

var launch2 = []string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--"}

// ipiqaDPSeed is train's default --seed.
const ipiqaDPSeed = 1

func ipiqaDPArgs(root, out string, epochs, batch int, extra ...string) []string {
	return append([]string{"train", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--dataset", "agiqa3k", "--root", root,
		"--protocol", "ipiqa-official", "--splits", "1", "--epochs", strconv.Itoa(epochs), "--batch-size", strconv.Itoa(batch),
		"--input-resolution", "64", "--no-augment", "--dropout", "0", "--lr", "1e-4", "--threads", "1", "--out", out}, extra...)
}

// ipiqaState reads every tensor of an IP-IQA checkpoint's state dict
// (trainable parameters and all buffers) as float64.
func ipiqaState(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	f, err := ptfile.Load(path)
	require.NoError(t, err)
	root, ok := f.Root.(*ptfile.Dict)
	require.True(t, ok, path)
	mv, ok := root.Get("model")
	require.True(t, ok, path)
	raw, names, err := ptfile.StateDict(mv)
	require.NoError(t, err)
	out := map[string][]float64{}
	for _, n := range names {
		tt, err := torch.FromRaw(raw[n])
		require.NoError(t, err, n)
		v, err := tt.Float64s()
		tt.Close()
		require.NoError(t, err, n)
		out[n] = v
	}
	return out
}

// relDiff is max|a-b| / max|a| (0 when both are all zeros).
func relDiff(a, b []float64) float64 {
	var diff, scale float64
	for i := range a {
		diff = math.Max(diff, math.Abs(a[i]-b[i]))
		scale = math.Max(scale, math.Abs(a[i]))
	}
	if diff == 0 {
		return 0
	}
	return diff / math.Max(scale, 1e-30)
}

// isBNBuffer reports whether a state-dict name is a BatchNorm running statistic.
func isBNBuffer(name string) bool {
	return strings.HasSuffix(name, ".running_mean") || strings.HasSuffix(name, ".running_var") || strings.HasSuffix(name, ".num_batches_tracked")
}

// zeroGradient names the tensors whose exact gradient is zero: an attention
// key bias adds q·b to every logit of a query alike, which softmax ignores.
// Their computed gradients are float rounding noise (~1e-10), which AdamW
// divides by its own square root, so each step moves them by up to the
// learning rate in a direction the rounding picks: one process and two ranks
// (a different summation order) then drift apart by far more than float32
// rounding elsewhere, and are compared with zeroGradTolerance.
func zeroGradient(name string) bool { return strings.HasSuffix(name, "k_proj.bias") }

const zeroGradTolerance = 5e-3

// With --sync-batchnorm, two ranks (half of every batch each) train the same
// model as one process: after 3 epochs of 3 steps every tensor of the
// checkpoint, BatchNorm running statistics included, agrees to float32
// rounding. Without it, each rank normalises its own half, and the running
// statistics visibly differ (the check can fail).
func TestIPIQADataParallelSyncBatchNormMatchesOneProcess(t *testing.T) {
	needGloo(t)
	root := miniAGIQA3K(t)
	dir := t.TempDir()
	one, two, perRank := filepath.Join(dir, "one"), filepath.Join(dir, "two"), filepath.Join(dir, "per-rank")
	t0 := time.Now()
	_, stderr, err := runCLI(t, nil, ipiqaDPArgs(root, one, 3, 4, "--sync-batchnorm")...)
	require.NoError(t, err, stderr)
	t1 := time.Now()
	stdout, stderr, err := runCLI(t, nil, append(launch2, ipiqaDPArgs(root, two, 3, 4, "--sync-batchnorm")...)...)
	require.NoError(t, err, stderr)
	t.Logf("1 process %.1fs, 2 ranks %.1fs", t1.Sub(t0).Seconds(), time.Since(t1).Seconds())
	require.Contains(t, stderr, "data-parallel: 2 ranks")
	require.Contains(t, stderr, "SyncBatchNorm")
	require.Equal(t, 1, strings.Count(stdout, "fold0 epoch 3/3"), "only rank 0 prints:\n%s", stdout)
	var sum ipiqaSummary
	require.NoError(t, json.Unmarshal([]byte(mustRead(t, filepath.Join(two, summaryFile))), &sum))
	require.Equal(t, 2, sum.WorldSize)
	require.True(t, sum.SyncBatchNorm)

	ck := train.CheckpointName(2)
	a, b := ipiqaState(t, filepath.Join(one, ck)), ipiqaState(t, filepath.Join(two, ck))
	require.Equal(t, len(a), len(b))
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	var worst, worstBN, worstZero float64
	var worstName string
	nBN, nZero := 0, 0
	for _, n := range names {
		require.Contains(t, b, n)
		require.Len(t, b[n], len(a[n]), n)
		d := relDiff(a[n], b[n])
		if zeroGradient(n) {
			nZero++
			worstZero = math.Max(worstZero, d)
			if d > zeroGradTolerance {
				t.Errorf("%s differs by %.3g (relative) > %g", n, d, zeroGradTolerance)
			}
			continue
		}
		if d > dpTolerance {
			t.Errorf("%s differs by %.3g (relative) > %g", n, d, dpTolerance)
		}
		if d > worst {
			worst, worstName = d, n
		}
		if isBNBuffer(n) {
			nBN++
			worstBN = math.Max(worstBN, d)
		}
	}
	require.Greater(t, nBN, 0, "the checkpoint has BatchNorm buffers")
	require.Equal(t, []float64{9}, a["resnet50.bn1.num_batches_tracked"], "3 epochs × 3 steps")
	t.Logf("IP-IQA, 2 ranks with SyncBatchNorm vs 1 process after 3 epochs: %d tensors, worst relative difference %.3g (%s), BatchNorm buffers (%d) %.3g; tolerance %g",
		len(names)-nZero, worst, worstName, nBN, worstBN, dpTolerance)
	t.Logf("the %d attention key biases (exact gradient 0, AdamW-normalised rounding noise): worst %.3g (tolerance %g)", nZero, worstZero, zeroGradTolerance)

	// Per-rank statistics (DDP's default) are a different model.
	_, stderr, err = runCLI(t, nil, append(launch2, ipiqaDPArgs(root, perRank, 3, 4)...)...)
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "BatchNorm per rank")
	c := ipiqaState(t, filepath.Join(perRank, ck))
	var perRankBN float64
	for _, n := range names {
		if isBNBuffer(n) {
			perRankBN = math.Max(perRankBN, relDiff(a[n], c[n]))
		}
	}
	t.Logf("without --sync-batchnorm the running statistics differ from one process's by up to %.3g (relative)", perRankBN)
	require.Greater(t, perRankBN, 100*dpTolerance, "per-rank BatchNorm must not match the global batch")
}

// ipiqaFixtureModel is a fresh IP-IQA on the tiny ResNet CLIP as
// `train --method ipiqa` builds it (64×64, two outputs, dropout 0).
func ipiqaFixtureModel(t *testing.T) *ipiqa.Model {
	t.Helper()
	require.NoError(t, torch.ManualSeed(ipiqaDPSeed))
	cm, err := clip.Load(tinyRNCLIPPath, clip.Options{Device: torch.CPU})
	require.NoError(t, err)
	m, err := ipiqa.New(cm, ipiqa.Options{InputResolution: 64, Outputs: 2, Dropout: 0, Freezing: ipiqa.FreezeOfficial})
	if err != nil {
		cm.Close()
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// officialFold0 is the mini AGIQA-3K's fold-0 partition as train plans it,
// with both targets (quality, alignment).
func officialFold0(t *testing.T, root string) (trainSet, test []ipiqatrain.Sample) {
	t.Helper()
	align, _, err := data.Open(data.Source{Name: "agiqa3k", Root: root, Target: data.TargetAlignment})
	require.NoError(t, err)
	am := map[string]float64{}
	for _, s := range align.Samples {
		am[s.Name] = s.MOS
	}
	all, fixed, err := data.Open(data.Source{Name: "agiqa3k", Root: root, Target: data.TargetQuality})
	require.NoError(t, err)
	parts, err := data.Plan(data.Protocol{Name: data.ProtocolIPIQAOfficial, Splits: 1, TestFraction: 0.2, ValFraction: 0.1, Seed: ipiqaDPSeed}, all, fixed)
	require.NoError(t, err)
	require.Len(t, parts, 1)
	conv := func(d *data.Dataset) []ipiqatrain.Sample {
		var out []ipiqatrain.Sample
		for _, s := range d.Samples {
			out = append(out, ipiqatrain.Sample{Name: s.Name, Path: s.Path, Prompt: s.Group, Targets: []float64{s.MOS, am[s.Name]}})
		}
		return out
	}
	return conv(parts[0].Train), conv(parts[0].Test)
}

// bnBuffers are the model's BatchNorm running statistics by name.
func bnBuffers(t *testing.T, m *ipiqa.Model) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	for _, b := range m.Store().Buffers() {
		if isBNBuffer(b.Name) {
			v, err := b.T.Float64s()
			require.NoError(t, err, b.Name)
			out[b.Name] = v
		}
	}
	require.NotEmpty(t, out)
	return out
}

// trainModeStats forwards ss[idx] through a fresh model in training mode
// (no update) and returns the BatchNorm buffers that one step leaves.
func trainModeStats(t *testing.T, trainSet []ipiqatrain.Sample, idx []int) map[string][]float64 {
	t.Helper()
	m := ipiqaFixtureModel(t)
	a, err := ipiqatrain.New(m, trainSet, nil, ipiqatrain.Options{Workers: 1})
	require.NoError(t, err)
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	a.TrainBatch(s, train.Batch{Epoch: 0, Step: 0, Indices: idx})
	require.NoError(t, s.Err())
	return bnBuffers(t, m)
}

// Without --sync-batchnorm (DDP's default), against a hand computation of
// one step with batch 12 (6 per rank): each rank normalises its own half,
// so the running statistics rank 0 saves are those of a single forward of
// rank 0's half (not the whole batch's, not rank 1's); and rank 0's
// buffers reach rank 1 before evaluation: the sharded test metrics equal a
// single process's scoring of rank 0's checkpoint, while rank 1 scoring
// its block with its own statistics would give other metrics.
func TestIPIQADataParallelPerRankBatchNorm(t *testing.T) {
	needGloo(t)
	root := miniAGIQA3K(t)
	out := filepath.Join(t.TempDir(), "run")
	_, stderr, err := runCLI(t, nil, append(launch2, ipiqaDPArgs(root, out, 1, 12)...)...)
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "BatchNorm per rank")
	saved := ipiqaState(t, filepath.Join(out, train.CheckpointName(0)))

	trainSet, test := officialFold0(t, root)
	require.Len(t, trainSet, 12)
	require.Len(t, test, 4)
	idx := make([]int, len(trainSet))
	for i := range idx {
		idx[i] = i
	}
	global := train.Batches(train.EpochOrder(ipiqaDPSeed, 0, idx), 12, false)
	require.Len(t, global, 1, "one step")
	half0, half1 := global[0][:6], global[0][6:]
	want := trainModeStats(t, trainSet, half0)
	whole := trainModeStats(t, trainSet, global[0])
	other := trainModeStats(t, trainSet, half1)

	const tol = 1e-5
	var worst, vsWhole, vsOther float64
	for name, w := range want {
		got, ok := saved[name]
		require.True(t, ok, name)
		d := relDiff(w, got)
		if d > tol {
			t.Errorf("%s: saved running statistic differs from rank 0's half by %.3g (relative) > %g", name, d, tol)
		}
		worst = math.Max(worst, d)
		vsWhole = math.Max(vsWhole, relDiff(whole[name], got))
		vsOther = math.Max(vsOther, relDiff(other[name], got))
	}
	t.Logf("saved BatchNorm buffers vs one forward of rank 0's half: worst relative difference %.3g (tolerance %g); vs the whole batch %.3g, vs rank 1's half %.3g",
		worst, tol, vsWhole, vsOther)
	require.Greater(t, vsWhole, 100*tol, "per-rank statistics must differ from the global batch's")
	require.Greater(t, vsOther, 100*tol, "rank 0's statistics must differ from rank 1's")

	// Evaluation: the gathered test scores are those of rank 0's model.
	hist, err := train.ReadMetrics(filepath.Join(out, train.MetricsJSON))
	require.NoError(t, err)
	require.Len(t, hist, 1)
	reported := hist[0].Parts["test"].Outputs
	m := ipiqaFixtureModel(t)
	_, err = m.LoadOfficial(filepath.Join(out, train.CheckpointName(0)), nil)
	require.NoError(t, err)
	a, err := ipiqatrain.New(m, trainSet, map[string][]ipiqatrain.Sample{"test": test}, ipiqatrain.Options{Workers: 1})
	require.NoError(t, err)
	pred, err := a.Predict(context.Background(), "test")
	require.NoError(t, err)
	plcc := func(pred [][]float64, o int) float64 {
		x, y := make([]float64, len(test)), make([]float64, len(test))
		for i := range test {
			x[i], y[i] = pred[i][o], test[i].Targets[o]
		}
		r, err := metrics.Compute(x, y)
		require.NoError(t, err)
		return r.PLCC
	}
	// Rank 1's block (test images 2, 3) scored with rank 1's own statistics.
	own := ipiqaFixtureModel(t)
	_, err = own.LoadOfficial(filepath.Join(out, train.CheckpointName(0)), nil)
	require.NoError(t, err)
	for _, b := range own.Store().Buffers() {
		if v, ok := other[b.Name]; ok && b.T.DType() == torch.Float32 {
			f := make([]float32, len(v))
			for i, x := range v {
				f[i] = float32(x)
			}
			tv, err := torch.FromFloat32(f, b.T.Shape()...)
			require.NoError(t, err)
			require.NoError(t, b.T.CopyFrom(tv))
			tv.Close()
		}
	}
	ao, err := ipiqatrain.New(own, trainSet, map[string][]ipiqatrain.Sample{"test": test}, ipiqatrain.Options{Workers: 1})
	require.NoError(t, err)
	predOwn, err := ao.Predict(context.Background(), "test")
	require.NoError(t, err)
	mixed := append(append([][]float64(nil), pred[:2]...), predOwn[2:]...)
	for o, name := range []string{"quality", "alignment"} {
		got, want, alt := reported[name].PLCC, plcc(pred, o), plcc(mixed, o)
		t.Logf("test %s PLCC: reported %.6f, rank 0's model in one process %.6f, with rank 1's own statistics it would be %.6f", name, got, want, alt)
		require.InDelta(t, want, got, 1e-4, "%s: the gathered evaluation is rank 0's model", name)
		require.Greater(t, math.Abs(alt-got), 1e-3, "%s: rank 1's own statistics would change the metric (the check can fail)", name)
	}
}

// waitForFile polls until path exists.
func waitForFile(t *testing.T, path string, within time.Duration, log fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v; rank 0: %s", path, within, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastIPIQACheckpoint is the epoch (1-based) of the newest checkpoint_N.pth in dir (0: none).
func lastIPIQACheckpoint(t *testing.T, dir string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "checkpoint_[0-9]*.pth"))
	require.NoError(t, err)
	last := 0
	for _, f := range files {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "checkpoint_"), ".pth"))
		if err == nil {
			last = max(last, n+1)
		}
	}
	return last
}

// A rank killed mid-run makes the other fail within the collective timeout
// (30s here), naming it; --resume then continues from the last checkpoint
// with 2 ranks and with 1 rank (SyncBatchNorm: the world size may change)
// and ends where an uninterrupted one-process run ends.
func TestIPIQADataParallelKilledRankAndResume(t *testing.T) {
	needGloo(t)
	root := miniAGIQA3K(t)
	dir := t.TempDir()
	const epochs = 8
	ref := filepath.Join(dir, "ref")
	_, stderr, err := runCLI(t, nil, ipiqaDPArgs(root, ref, epochs, 4, "--sync-batchnorm")...)
	require.NoError(t, err, stderr)
	want := ipiqaState(t, filepath.Join(ref, train.CheckpointName(epochs-1)))

	for _, resumeRanks := range []int{2, 1} {
		t.Run(fmt.Sprintf("resume with %d", resumeRanks), func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("run%d", resumeRanks))
			args := ipiqaDPArgs(root, out, epochs, 4, "--sync-batchnorm")
			cmds, errs := startRanks(t, 2, args...)
			// Kill rank 1 once rank 0 has saved the first epoch.
			waitForFile(t, filepath.Join(out, train.CheckpointName(0)), 2*time.Minute, errs[0])
			require.NoError(t, cmds[1].Process.Kill())
			_ = cmds[1].Wait()
			killed := time.Now()
			done := make(chan error, 1)
			go func() { done <- cmds[0].Wait() }()
			select {
			case err := <-done:
				require.Error(t, err, "rank 0 must fail when rank 1 dies")
				t.Logf("rank 0 exited %v %.2fs after rank 1 was killed", err, time.Since(killed).Seconds())
			case <-time.After(60 * time.Second):
				_ = cmds[0].Process.Kill()
				t.Fatalf("rank 0 did not exit within 60s of rank 1's death (timeout 30s)")
			}
			require.Contains(t, errs[0].String(), "lost rank 1")
			t.Logf("rank 0: %s", lastLine(errs[0].String()))
			saved := lastIPIQACheckpoint(t, out)
			t.Logf("last saved epoch %d of %d", saved, epochs)
			if saved >= epochs {
				t.Skip("the run finished before the kill took effect")
			}

			resume := append(append([]string(nil), args...), "--resume")
			var stdout string
			if resumeRanks == 2 {
				stdout, stderr, err = runCLI(t, nil, append(launch2, resume...)...)
			} else {
				stdout, stderr, err = runCLI(t, nil, resume...)
			}
			require.NoError(t, err, stderr)
			require.Contains(t, stdout, fmt.Sprintf("after epoch %d", saved))
			got := ipiqaState(t, filepath.Join(out, train.CheckpointName(epochs-1)))
			worst, worstZero := 0.0, 0.0
			for name, w := range want {
				require.Len(t, got[name], len(w), name)
				d := relDiff(w, got[name])
				if zeroGradient(name) {
					worstZero = math.Max(worstZero, d)
					if d > zeroGradTolerance {
						t.Errorf("%s: resumed run differs from the uninterrupted one by %.3g > %g", name, d, zeroGradTolerance)
					}
					continue
				}
				if d > 1e-4 {
					t.Errorf("%s: resumed run differs from the uninterrupted one by %.3g", name, d)
				}
				worst = math.Max(worst, d)
			}
			t.Logf("resumed with %d rank(s) after epoch %d: worst relative difference to the uninterrupted one-process run %.3g (tolerance 1e-4; key biases %.3g, tolerance %g)",
				resumeRanks, saved, worst, worstZero, zeroGradTolerance)
		})
	}
}
