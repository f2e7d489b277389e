package launch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "LAUNCH_TEST_CHILD"

// With LAUNCH_TEST_CHILD set the test binary acts as a launched child.
func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

func child(mode string) int {
	rank := os.Getenv("RANK")
	switch mode {
	case "env":
		fmt.Printf("rank=%s local=%s world=%s addr=%s port=%s\n", rank, os.Getenv("LOCAL_RANK"),
			os.Getenv("WORLD_SIZE"), os.Getenv("MASTER_ADDR"), os.Getenv("MASTER_PORT"))
		return 0
	case "fail-rank1":
		if rank == "1" {
			time.Sleep(200 * time.Millisecond)
			return 3
		}
		time.Sleep(time.Minute) // stopped by the launcher
		return 0
	case "signal":
		// Like a trainer: on SIGINT/SIGTERM record it, then exit with 130.
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		if err := os.WriteFile(filepath.Join(os.Getenv("LAUNCH_TEST_DIR"), "ready-"+rank), nil, 0o644); err != nil {
			return 9
		}
		select {
		case s := <-ch:
			got := s.String()
			// Rank 1 shuts down slowly; a second signal would be recorded.
			if rank == "1" {
				select {
				case s2 := <-ch:
					got += "," + s2.String()
				case <-time.After(time.Second):
				}
			}
			_ = os.WriteFile(filepath.Join(os.Getenv("LAUNCH_TEST_DIR"), "got-"+rank), []byte(got), 0o644)
			return 130
		case <-time.After(time.Minute):
			return 8
		}
	}
	return 2
}

func cfg(mode string, n int, out *bytes.Buffer, extraEnv ...string) Config {
	return Config{NProc: n, Program: os.Args[0], Args: []string{"-test.run=^$"},
		Env: append(append(os.Environ(), childEnv+"="+mode), extraEnv...), Stdout: out, Stderr: out, Grace: 5 * time.Second}
}

func TestEnvironment(t *testing.T) {
	var out bytes.Buffer
	c := cfg("env", 3, &out)
	c.MasterPort = 23456
	res, err := Run(context.Background(), c, nil)
	if err != nil || res.ExitCode != 0 || res.FailedRank != -1 {
		t.Fatalf("res %+v err %v\n%s", res, err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	sort.Strings(lines)
	want := []string{
		"rank=0 local=0 world=3 addr=127.0.0.1 port=23456",
		"rank=1 local=1 world=3 addr=127.0.0.1 port=23456",
		"rank=2 local=2 world=3 addr=127.0.0.1 port=23456",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("children saw\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestFirstFailureStopsAll(t *testing.T) {
	var out bytes.Buffer
	start := time.Now()
	res, err := Run(context.Background(), cfg("fail-rank1", 3, &out), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.FailedRank != 1 {
		t.Fatalf("want rank 1's status 3, got %+v\n%s", res, out.String())
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("took %v: the other ranks were not stopped", el)
	}
	if !strings.Contains(out.String(), "rank 1 exited with status 3; stopping the other 2") {
		t.Errorf("no note about the failure:\n%s", out.String())
	}
}

func TestSignalsForwarded(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			sigs := make(chan os.Signal, 1)
			go func() {
				// Wait until both children have installed their handlers.
				for i := 0; i < 400; i++ {
					_, e0 := os.Stat(filepath.Join(dir, "ready-0"))
					_, e1 := os.Stat(filepath.Join(dir, "ready-1"))
					if e0 == nil && e1 == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				sigs <- sig
			}()
			res, err := Run(context.Background(), cfg("signal", 2, &out, "LAUNCH_TEST_DIR="+dir), sigs)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 130 {
				t.Errorf("want the children's status 130, got %+v\n%s", res, out.String())
			}
			for _, r := range []string{"0", "1"} {
				b, err := os.ReadFile(filepath.Join(dir, "got-"+r))
				if err != nil || string(b) != sig.String() {
					t.Errorf("rank %s did not get %v: %q %v", r, sig, b, err)
				}
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := Run(context.Background(), Config{NProc: 0, Program: "x"}, nil); err == nil {
		t.Error("nproc 0 accepted")
	}
	var out bytes.Buffer
	_, err := Run(context.Background(), Config{NProc: 2, Program: "/nonexistent/prog", Stdout: &out, Stderr: &out}, nil)
	if err == nil || !strings.Contains(err.Error(), "starting rank 0") {
		t.Errorf("missing program: %v", err)
	}
}

func TestChildEnvReplaces(t *testing.T) {
	env := ChildEnv([]string{"RANK=9", "HOME=/h", "MASTER_PORT=1"}, 1, 2, "a", 5)
	got := strings.Join(env, " ")
	if strings.Contains(got, "RANK=9") || strings.Contains(got, "MASTER_PORT=1 ") || !strings.Contains(got, "HOME=/h") ||
		!strings.Contains(got, "RANK=1") || !strings.Contains(got, "MASTER_PORT=5") {
		t.Fatalf("env %v", env)
	}
}
