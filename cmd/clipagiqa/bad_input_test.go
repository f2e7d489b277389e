package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runWithin runs the CLI like run, failing the test instead of hanging when
// the command blocks (a FIFO opened for reading waits for a writer forever).
func runWithin(t *testing.T, limit time.Duration, args ...string) (string, string, error) {
	t.Helper()
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.out, r.errOut, r.err = run(t, args...)
		done <- r
	}()
	select {
	case r := <-done:
		return r.out, r.errOut, r.err
	case <-time.After(limit):
		t.Fatalf("clipagiqa %s: still running after %v (blocked on a FIFO?)", strings.Join(args, " "), limit)
		return "", "", nil
	}
}

func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo %s: %v", path, err)
	}
	return path
}

// Group 1: nothing that is not a regular file is opened, so nothing blocks;
// the message names the path. The command's error is its exit status 1.
func TestNonRegularFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "pipe.png"))
	imgDir := filepath.Join(dir, "images")
	require.NoError(t, os.MkdirAll(imgDir, 0o755))
	data, err := os.ReadFile(fixtureImage(0))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(imgDir, "a.png"), data, 0o644))
	inDir := mkfifo(t, filepath.Join(imgDir, "b.png"))
	ckDir := filepath.Join(dir, "ck")
	require.NoError(t, os.MkdirAll(ckDir, 0o755))
	ckFIFO := mkfifo(t, filepath.Join(ckDir, "model.pt"))
	clipFIFO := mkfifo(t, filepath.Join(dir, "clip.pt"))
	official := reffix.Dir()

	cases := []struct {
		name  string
		args  []string
		names string // the path the message must name
		out   string // what must still be in stdout ("" for nothing)
	}{
		{"predict image", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", official, fixtureImage(1), fifo}, fifo, fixtureImage(1)},
		{"predict fifo in a directory", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", official, imgDir}, inDir, "a.png"},
		{"predict --clip", []string{"predict", "--clip", clipFIFO, "--checkpoint", official, fixtureImage(1)}, clipFIFO, ""},
		{"predict --checkpoint file", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", ckFIFO, fixtureImage(1)}, ckFIFO, ""},
		{"predict --checkpoint dir", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", ckDir, fixtureImage(1)}, ckFIFO, ""},
		{"embed image", []string{"embed", "--clip", tinyCLIPPath, fifo, fixtureImage(1)}, fifo, fixtureImage(1)},
		{"embed --clip", []string{"embed", "--clip", clipFIFO, fixtureImage(1)}, clipFIFO, ""},
		{"eval --clip", []string{"eval", "--clip", clipFIFO, "--method", "clipiqa", "--dataset", "csv", "--train-csv", fifo}, fifo, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, err := runWithin(t, 30*time.Second, c.args...)
			require.Error(t, err, "exit status must be non-zero")
			assert.Contains(t, err.Error()+stderr, c.names)
			assert.Contains(t, err.Error()+stderr, "not a regular file")
			if c.out != "" {
				assert.Contains(t, out, c.out, "the other inputs are still processed")
			}
		})
	}
}
