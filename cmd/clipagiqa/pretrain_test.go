package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa/demo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pretrain writes a CLIP that train --clip (both methods) accepts, and its
// summary says the features moved towards the prompts.
func TestPretrainThenTrain(t *testing.T) {
	dir := t.TempDir()
	table, err := demo.GeneratePairs(dir, demo.Options{Seed: 5, Bases: 2, Size: 48, Levels: 2})
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "pre")
	stdout, stderr, err := run(t, "pretrain", "--clip", tinyRNCLIPPath, "--pairs", table, "--out", out,
		"--epochs", "3", "--batch-size", "5", "--lr", "1e-3", "--half", "--min-cosine", "-0.99")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "mean image–prompt cosine")
	assert.Contains(t, stderr, "epoch 3/3")
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	require.NoError(t, err)
	var sum pretrainSummary
	require.NoError(t, json.Unmarshal(b, &sum))
	assert.Equal(t, 10, sum.Pairs)
	assert.Equal(t, 10, sum.Kept)
	assert.Greater(t, sum.CosineAfter, sum.CosineBefore)
	clipFile := filepath.Join(out, pretrainCLIPFile)

	_, trainCSV, testCSV := smallSet(t)
	for _, method := range []string{"agiqa", "ipiqa"} {
		runDir := filepath.Join(t.TempDir(), method)
		args := []string{"train", "--method", method, "--clip", clipFile, "--dataset", "csv", "--train-csv", trainCSV, "--test-csv", testCSV,
			"--epochs", "1", "--val-fraction", "0.25", "--out", runDir}
		if method == "ipiqa" {
			args = append(args, "--input-resolution", "64", "--batch-size", "8")
		}
		_, stderr, err := run(t, args...)
		require.NoError(t, err, "%s: %s", method, stderr)
		assert.FileExists(t, filepath.Join(runDir, predictionsFile))
	}
}

func TestPretrainErrors(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "pairs.csv")
	require.NoError(t, os.WriteFile(table, []byte("image,prompt\nmissing.png,a photo\n"), 0o644))
	_, _, err := run(t, "pretrain", "--clip", tinyRNCLIPPath, "--pairs", table, "--out", filepath.Join(dir, "o"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.png")
	_, _, err = run(t, "pretrain", "--clip", tinyRNCLIPPath, "--pairs", filepath.Join(dir, "nope.csv"), "--out", filepath.Join(dir, "o"))
	require.Error(t, err)
}
