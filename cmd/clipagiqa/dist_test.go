package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/torch/dist"
	"github.com/clipagiqa/clipagiqa/torch/dist/launch"
	"github.com/stretchr/testify/require"
)

// asCLI makes the test binary behave as the clipagiqa command, so that
// `launch` (which re-runs its own executable) and spawned ranks work in tests.
const asCLI = "CLIPAGIQA_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// needGloo skips multi-process tests in a build without Gloo (no libgloo-dev).
func needGloo(t *testing.T) {
	t.Helper()
	if !dist.HasGloo() {
		t.Skip("built without Gloo (install libgloo-dev and rebuild with make native)")
	}
}

// cliCmd is the test binary run as `clipagiqa args...`.
func cliCmd(env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(append(os.Environ(), asCLI+"=1", "CLIPAGIQA_DIST_TIMEOUT=30s"), env...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	return c, &out, &errb
}

func runCLI(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	c, out, errb := cliCmd(env, args...)
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		return out.String(), errb.String(), err
	case <-time.After(4 * time.Minute):
		_ = c.Process.Kill()
		t.Fatalf("clipagiqa %v hung\nstderr: %s", args, errb.String())
	}
	return "", "", nil
}

// maxRelDiff compares two checkpoints tensor by tensor: max |a-b| / max |a|.
func maxRelDiff(t *testing.T, dirA, dirB string) map[string]float64 {
	t.Helper()
	a, err := clipagiqa.ReadCheckpoint(dirA, 0)
	require.NoError(t, err)
	b, err := clipagiqa.ReadCheckpoint(dirB, 0)
	require.NoError(t, err)
	require.Equal(t, a.Epoch, b.Epoch, "epochs of %s and %s", dirA, dirB)
	out := map[string]float64{}
	for name, ta := range a.Params {
		tb := b.Params[name]
		require.NotNil(t, tb, name)
		va, vb := floats(t, ta), floats(t, tb)
		require.Equal(t, len(va), len(vb), name)
		var diff, scale float64
		for i := range va {
			diff = math.Max(diff, math.Abs(float64(va[i])-float64(vb[i])))
			scale = math.Max(scale, math.Abs(float64(va[i])))
		}
		out[name] = diff / math.Max(scale, 1e-30)
	}
	return out
}

// Relative tolerance of the 2-rank vs 1-process weights after 3 epochs:
// float32 rounding of the split mean (Σ n_r·mean_r / N vs mean) through SGD.
const dpTolerance = 1e-5

func trainArgs(trainCSV, testCSV, out string, epochs int) []string {
	return []string{"train", "--clip", tinyCLIPPath, "--dataset", "csv", "--train-csv", trainCSV, "--test-csv", testCSV,
		"--epochs", strconv.Itoa(epochs), "--lr", "0.01", "--dropout", "0", "--val-fraction", "0.25",
		"--batch-size", "16", "--threads", "1", "--out", out}
}

func TestDataParallelTrainingMatchesOneProcess(t *testing.T) {
	needGloo(t)
	_, trainCSV, testCSV := smallSet(t)
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	_, stderr, err := runCLI(t, nil, trainArgs(trainCSV, testCSV, one, 3)...)
	require.NoError(t, err, stderr)
	stdout, stderr, err := runCLI(t, nil, append([]string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--"},
		trainArgs(trainCSV, testCSV, two, 3)...)...)
	require.NoError(t, err, stderr)
	require.Contains(t, stderr, "data-parallel: 2 ranks")
	require.Contains(t, stdout, "epoch 3/3")
	require.Equal(t, 1, strings.Count(stdout, "epoch 3/3"), "only rank 0 prints:\n%s", stdout)

	worst := 0.0
	for name, d := range maxRelDiff(t, filepath.Join(one, "last"), filepath.Join(two, "last")) {
		t.Logf("%-28s max rel diff %.3g", name, d)
		if d > dpTolerance {
			t.Errorf("%s differs by %.3g (relative) > %g", name, d, dpTolerance)
		}
		worst = math.Max(worst, d)
	}
	t.Logf("2 ranks vs 1 process after 3 epochs: worst relative difference %.3g (tolerance %g)", worst, dpTolerance)

	// The sharded feature cache files equal the single-process ones bit for bit.
	files, err := filepath.Glob(filepath.Join(one, "feature-cache", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		a, b := mustRead(t, f), mustRead(t, filepath.Join(two, "feature-cache", filepath.Base(f)))
		require.True(t, a == b, "feature cache %s differs between 1 and 2 ranks", filepath.Base(f))
	}
	t.Logf("%d feature cache file(s) identical", len(files))
}

func TestDataParallelRefusesIndivisibleBatch(t *testing.T) {
	needGloo(t)
	_, trainCSV, testCSV := smallSet(t)
	args := trainArgs(trainCSV, testCSV, filepath.Join(t.TempDir(), "run"), 1)
	for i, a := range args {
		if a == "16" {
			args[i] = "15"
		}
	}
	_, stderr, err := runCLI(t, nil, append([]string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--"}, args...)...)
	require.Error(t, err)
	require.Contains(t, stderr, "batch size 15 (the global batch) does not divide by the world size 2")
}

// startRanks starts n ranks of `clipagiqa args...` directly (as torchrun would).
func startRanks(t *testing.T, n int, args ...string) ([]*exec.Cmd, []*bytes.Buffer) {
	t.Helper()
	port, err := launch.FreePort("127.0.0.1")
	require.NoError(t, err)
	var cmds []*exec.Cmd
	var errs []*bytes.Buffer
	for r := 0; r < n; r++ {
		c, _, errb := cliCmd(launch.ChildEnv(nil, r, n, "127.0.0.1", port), args...)
		require.NoError(t, c.Start())
		cmds, errs = append(cmds, c), append(errs, errb)
	}
	return cmds, errs
}

// A rank killed mid-run makes the other fail within the collective timeout,
// naming it; --resume then continues from the last checkpoint with 2 ranks
// and with 1 rank, and ends where an uninterrupted run ends.
func TestDataParallelKilledRankAndResume(t *testing.T) {
	needGloo(t)
	_, trainCSV, testCSV := smallSet(t)
	dir := t.TempDir()
	const epochs = 20
	ref := filepath.Join(dir, "ref")
	_, stderr, err := runCLI(t, nil, trainArgs(trainCSV, testCSV, ref, epochs)...)
	require.NoError(t, err, stderr)

	for _, resumeRanks := range []int{2, 1} {
		t.Run(fmt.Sprintf("resume with %d", resumeRanks), func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("run%d", resumeRanks))
			cmds, errs := startRanks(t, 2, trainArgs(trainCSV, testCSV, out, epochs)...)
			// Kill rank 1 once rank 0 has saved an epoch.
			deadline := time.Now().Add(2 * time.Minute)
			for {
				if _, err := os.Stat(filepath.Join(out, "last", "model.pt")); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no checkpoint appeared; rank 0: %s", errs[0].String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			require.NoError(t, cmds[1].Process.Kill())
			_ = cmds[1].Wait()
			killed := time.Now()
			done := make(chan error, 1)
			go func() { done <- cmds[0].Wait() }()
			select {
			case err := <-done:
				require.Error(t, err, "rank 0 must fail when rank 1 dies")
				t.Logf("rank 0 exited %v after %.2fs", err, time.Since(killed).Seconds())
			case <-time.After(60 * time.Second):
				_ = cmds[0].Process.Kill()
				t.Fatalf("rank 0 did not exit within 60s of rank 1's death (timeout 30s)")
			}
			require.Contains(t, errs[0].String(), "lost rank 1")
			t.Logf("rank 0: %s", lastLine(errs[0].String()))
			ck, err := clipagiqa.ReadCheckpoint(filepath.Join(out, "last"), 0)
			require.NoError(t, err)
			t.Logf("last saved epoch %d of %d", ck.Epoch, epochs)
			if ck.Epoch >= epochs {
				t.Skip("the run finished before the kill took effect")
			}

			args := append(trainArgs(trainCSV, testCSV, out, epochs), "--resume")
			if resumeRanks == 2 {
				_, stderr, err = runCLI(t, nil, append([]string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--"}, args...)...)
			} else {
				_, stderr, err = runCLI(t, nil, args...)
			}
			require.NoError(t, err, stderr)
			worst := 0.0
			for name, d := range maxRelDiff(t, filepath.Join(ref, "last"), filepath.Join(out, "last")) {
				if d > 1e-4 {
					t.Errorf("%s: resumed run differs from the uninterrupted one by %.3g", name, d)
				}
				worst = math.Max(worst, d)
			}
			t.Logf("resumed with %d rank(s) from epoch %d: worst relative difference to the uninterrupted run %.3g", resumeRanks, ck.Epoch, worst)
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// SIGINT to `launch` reaches both ranks; the run stops with a failure
// status, and the last finished epoch is on disk for --resume.
func TestLaunchForwardsInterrupt(t *testing.T) {
	needGloo(t)
	_, trainCSV, testCSV := smallSet(t)
	out := filepath.Join(t.TempDir(), "run")
	c, stdout, stderr := cliCmd(nil, append([]string{"launch", "--nproc-per-node", "2", "--master-port", "0", "--"},
		trainArgs(trainCSV, testCSV, out, 200)...)...)
	require.NoError(t, c.Start())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(out, "last", "model.pt")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = c.Process.Kill()
			t.Fatalf("no checkpoint appeared: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, c.Process.Signal(os.Interrupt))
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		require.Error(t, err, "an interrupted run must not exit 0\n%s", stdout.String())
		t.Logf("launch exited: %v", err)
	case <-time.After(60 * time.Second):
		_ = c.Process.Kill()
		t.Fatalf("launch did not stop within 60s of SIGINT:\n%s", stderr.String())
	}
	require.Contains(t, stderr.String(), "interrupted")
	// The ranks agreed on the step to stop at: nobody was left in a collective.
	require.NotContains(t, stderr.String(), "lost rank")
	stops := regexp.MustCompile(`clipagiqa: train: (interrupted in|stopped before) epoch (\d+)`).FindAllStringSubmatch(stderr.String(), -1)
	require.Len(t, stops, 2, stderr.String())
	require.Equal(t, stops[0][0], stops[1][0], "both ranks stop at the same point")
	ck, err := clipagiqa.ReadCheckpoint(filepath.Join(out, "last"), 0)
	require.NoError(t, err)
	require.Less(t, ck.Epoch, 200)
	t.Logf("stopped with epoch %d saved", ck.Epoch)
}

func TestRankDevice(t *testing.T) {
	two := dist.Env{Rank: 3, WorldSize: 4, LocalRank: 1}
	for _, c := range []struct {
		flag string
		env  dist.Env
		want string
	}{
		{"cuda", two, "cuda:1"},
		{"cuda:0", two, "cuda:0"},
		{"cpu", two, "cpu"},
		{"cuda", dist.Env{WorldSize: 1}, "cuda"},
	} {
		if got := rankDevice(c.flag, c.env); got != c.want {
			t.Errorf("rankDevice(%q, %+v) = %q, want %q", c.flag, c.env, got, c.want)
		}
	}
}

// Ranks that see different output directories (no shared filesystem) stop
// with a clear error instead of running mismatched collectives.
func TestDataParallelDetectsUnsharedOutput(t *testing.T) {
	needGloo(t)
	_, trainCSV, testCSV := smallSet(t)
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	_, stderr, err := runCLI(t, nil, trainArgs(trainCSV, testCSV, seen, 1)...)
	require.NoError(t, err, stderr)
	port, err := launch.FreePort("127.0.0.1")
	require.NoError(t, err)
	var cmds []*exec.Cmd
	var errs []*bytes.Buffer
	for r, out := range []string{seen, filepath.Join(dir, "empty")} {
		args := append(trainArgs(trainCSV, testCSV, out, 3), "--resume", "--override-schedule")
		c, _, errb := cliCmd(launch.ChildEnv(nil, r, 2, "127.0.0.1", port), args...)
		require.NoError(t, c.Start())
		cmds, errs = append(cmds, c), append(errs, errb)
	}
	for r, c := range cmds {
		require.Error(t, c.Wait(), "rank %d", r)
	}
	require.Contains(t, errs[0].String(), "ranks disagree on the epoch to start from: rank 0 has [1], rank 1 has [0]")
}
