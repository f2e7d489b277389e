package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/train"
	"github.com/clipagiqa/clipagiqa/internal/ipiqaref"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var tinyRNCLIPPath = ipiqaref.Path("tiny_clip_rn_fp16.pt")

// miniAGIQA3K writes a 16-image AGIQA-3K (rows of the real data.csv, 12 of
// prompts the official fold 0 trains on and 4 of its test prompts; images
// are the IP-IQA fixture's) and returns its root.
func miniAGIQA3K(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../../data/testdata/agiqa3k/data.csv")
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	raw, err := os.ReadFile("../../data/testdata/ipiqa-splits/agiqa3k_seed42_fold0.txt")
	require.NoError(t, err)
	test := map[string]bool{}
	for _, n := range strings.Fields(string(raw)) {
		test[n] = true
	}
	root := t.TempDir()
	var b strings.Builder
	w := csv.NewWriter(&b)
	require.NoError(t, w.Write(rows[0]))
	nTrain, nTest := 0, 0
	for _, row := range rows[1:] {
		isTest := test[row[0]]
		if (isTest && nTest == 4) || (!isTest && nTrain == 12) {
			continue
		}
		k := nTrain + nTest
		if isTest {
			nTest++
		} else {
			nTrain++
		}
		img, err := os.ReadFile(ipiqaref.Path(fmt.Sprintf("images/img_%d.png", k%8)))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(root, row[0]), img, 0o644))
		require.NoError(t, w.Write(row))
		if nTrain+nTest == 16 {
			break
		}
	}
	w.Flush()
	require.NoError(t, os.WriteFile(filepath.Join(root, "data.csv"), []byte(b.String()), 0o644))
	return root
}

func TestTrainIPIQAOfficialProtocol(t *testing.T) {
	root := miniAGIQA3K(t)
	out := filepath.Join(t.TempDir(), "run")
	live := torch.LiveTensors()
	args := []string{"train", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--dataset", "agiqa3k", "--root", root,
		"--protocol", "ipiqa-official", "--splits", "1", "--epochs", "2", "--batch-size", "4", "--input-resolution", "128", "--out", out}
	stdout, stderr, err := run(t, args...)
	require.NoError(t, err, stderr)
	assert.Equal(t, live, torch.LiveTensors(), "tensors leaked")
	assert.Contains(t, stdout, "fold0 epoch 2/2")
	assert.Contains(t, stdout, "test alignment SRCC")
	assert.Contains(t, stdout, "optimistic: chosen on the test part")
	for _, n := range []string{train.CheckpointName(1), train.BestCheckpoint, train.MetricsJSON, train.MetricsCSV, train.LossPlot, train.MetricsPlot, summaryFile, predictionsFile} {
		assert.FileExists(t, filepath.Join(out, n))
	}
	assert.NoFileExists(t, filepath.Join(out, train.CheckpointName(0)), "only the newest epoch's checkpoint is kept")

	hist, err := train.ReadMetrics(filepath.Join(out, train.MetricsJSON))
	require.NoError(t, err)
	require.Len(t, hist, 2)
	for _, h := range hist {
		assert.Equal(t, 12, h.TrainSamples)
		assert.Equal(t, 3, h.Steps)
		for _, o := range []string{"quality", "alignment"} {
			r, ok := h.Parts["test"].Outputs[o]
			require.True(t, ok, "epoch %d test %s", h.Epoch, o)
			assert.Equal(t, 4, r.N)
		}
	}
	var sum ipiqaSummary
	b, err := os.ReadFile(filepath.Join(out, summaryFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &sum))
	require.Len(t, sum.Splits, 1)
	s := sum.Splits[0]
	assert.Equal(t, "test_sum_corr", s.BestBy)
	assert.Contains(t, s.BestLabel, "optimistic")
	require.NotNil(t, s.Last)
	assert.Equal(t, 2, s.Last.Epoch)
	assert.Equal(t, 0.5, sum.Options.Dropout, "official dropout by default")
	assert.Equal(t, 1e-5, sum.Schedule.LR, "official lr by default")

	pf, err := os.Open(filepath.Join(out, predictionsFile))
	require.NoError(t, err)
	defer pf.Close()
	pred, err := csv.NewReader(pf).ReadAll()
	require.NoError(t, err)
	require.Len(t, pred, 5)
	assert.Equal(t, []string{"image", "mos", "score", "alignment_mos", "alignment"}, pred[0])

	// --resume finds the run complete; a changed learning rate is refused.
	stdout, stderr, err = run(t, append(args, "--resume")...)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "resumed from")
	_, _, err = run(t, append(args, "--resume", "--lr", "2e-5")...)
	require.ErrorContains(t, err, "lr 1e-05 → 2e-05")
}

// The official fixture checkpoint (epoch 0, AdamW state of two steps)
// continues for one more epoch.
func TestTrainIPIQAResumesOfficialCheckpoint(t *testing.T) {
	root := miniAGIQA3K(t)
	out := filepath.Join(t.TempDir(), "run")
	stdout, stderr, err := run(t, "train", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--dataset", "agiqa3k", "--root", root,
		"--protocol", "ipiqa-official", "--epochs", "2", "--batch-size", "4", "--out", out,
		"--resume-from", ipiqaref.Path("checkpoint_best.pth"))
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "after epoch 1")
	hist, err := train.ReadMetrics(filepath.Join(out, train.MetricsJSON))
	require.NoError(t, err)
	require.Len(t, hist, 1)
	assert.Equal(t, 2, hist[0].Epoch)
	assert.FileExists(t, filepath.Join(out, train.CheckpointName(1)))
}

func TestTrainIPIQABadInput(t *testing.T) {
	root := miniAGIQA3K(t)
	base := []string{"train", "--method", "ipiqa", "--dataset", "agiqa3k", "--root", root, "--epochs", "1", "--batch-size", "4",
		"--input-resolution", "64", "--out", filepath.Join(t.TempDir(), "run")}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"ViT CLIP", []string{"--clip", tinyCLIPPath}, "IP-IQA needs a ResNet CLIP"},
		{"feature cache", []string{"--clip", tinyRNCLIPPath, "--feature-cache", "center"}, "cannot be cached"},
		{"freezing", []string{"--clip", tinyRNCLIPPath, "--freezing", "some"}, "want official, paper or none"},
		{"unknown method", []string{"--clip", tinyRNCLIPPath, "--method", "nope"}, `--method "nope"`},
		{"resolution", []string{"--clip", tinyRNCLIPPath, "--input-resolution", "100"}, "multiple of 32"},
		{"checkpoint of another geometry", []string{"--clip", tinyRNCLIPPath, "--resume-from", ipiqaref.Path("checkpoint_best.pth")}, "attnpool.positional_embedding"},
		{"fp16 autocast on the CPU", []string{"--clip", tinyRNCLIPPath, "--precision", "fp16"}, "precision fp16 needs a CUDA device"},
		{"bf16 autocast on the CPU", []string{"--clip", tinyRNCLIPPath, "--precision", "bf16"}, "precision bf16 needs a CUDA device"},
		{"resume-from several splits", []string{"--clip", tinyRNCLIPPath, "--protocol", "ipiqa-official", "--splits", "2", "--resume-from", "x.pth"}, "one run"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, append(append([]string(nil), base...), tc.args...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Two ranks train IP-IQA (each its half of every global batch, BatchNorm
// on its own shard, rank 0's buffers broadcast before every forward): the
// run completes, only rank 0 prints and writes. dist_ipiqa_test.go checks
// the numbers, with and without --sync-batchnorm.
func TestTrainIPIQADataParallel(t *testing.T) {
	needGloo(t)
	root := miniAGIQA3K(t)
	out := filepath.Join(t.TempDir(), "run")
	args := []string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--",
		"train", "--method", "ipiqa", "--clip", tinyRNCLIPPath, "--dataset", "agiqa3k", "--root", root, "--threads", "1",
		"--protocol", "ipiqa-official", "--epochs", "1", "--batch-size", "4", "--input-resolution", "64", "--out", out}
	stdout, stderr, err := runCLI(t, nil, args...)
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "data-parallel: 2 ranks")
	assert.Equal(t, 1, strings.Count(stdout, "fold0 epoch 1/1"), "only rank 0 prints:\n%s", stdout)
	assert.FileExists(t, filepath.Join(out, train.CheckpointName(0)))
	assert.FileExists(t, filepath.Join(out, predictionsFile))
	hist, err := train.ReadMetrics(filepath.Join(out, train.MetricsJSON))
	require.NoError(t, err)
	require.Len(t, hist, 1)
	assert.Equal(t, 12, hist[0].TrainSamples, "samples count the global batches")
	for _, o := range []string{"quality", "alignment"} {
		assert.Equal(t, 4, hist[0].Parts["test"].Outputs[o].N, "evaluation sharded over the ranks and gathered")
	}
}
