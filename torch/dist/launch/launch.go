// Package launch starts the processes of a single-machine process group the
// way torchrun does: N copies of one command, each with RANK, LOCAL_RANK,
// WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. Signals are
// forwarded to every child; when one child fails the others are stopped, and
// the first failure's exit status is the launcher's.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DefaultMasterPort is torchrun's default store port.
const DefaultMasterPort = 29500

// DefaultGrace is how long stopped children get between SIGTERM and SIGKILL.
const DefaultGrace = 30 * time.Second

// Config describes one launch.
type Config struct {
	NProc      int           // processes to start (world size); at least 1
	MasterAddr string        // MASTER_ADDR; "" means 127.0.0.1
	MasterPort int           // MASTER_PORT; 0 picks a free port
	Program    string        // executable of every child
	Args       []string      // its arguments (without the program name)
	Env        []string      // base environment; nil means os.Environ()
	Stdout     io.Writer     // children's stdout; nil means os.Stdout
	Stderr     io.Writer     // children's stderr and the launcher's notes; nil means os.Stderr
	Grace      time.Duration // SIGTERM→SIGKILL delay when stopping children; 0 means DefaultGrace
}

// Result is how a launch ended.
type Result struct {
	ExitCode   int // 0 when every child succeeded, else the first failure's (128+signal for a signal)
	FailedRank int // rank of the first failure, -1 when none
}

// FreePort returns a TCP port that was free on addr a moment ago.
func FreePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("launch: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ChildEnv is the environment of rank r of n: base plus torchrun's variables
// (existing values of those names are replaced).
func ChildEnv(base []string, r, n int, addr string, port int) []string {
	set := map[string]string{
		"RANK": strconv.Itoa(r), "LOCAL_RANK": strconv.Itoa(r), "GROUP_RANK": "0",
		"WORLD_SIZE": strconv.Itoa(n), "LOCAL_WORLD_SIZE": strconv.Itoa(n),
		"MASTER_ADDR": addr, "MASTER_PORT": strconv.Itoa(port),
	}
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k := kv
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				k = kv[:i]
				break
			}
		}
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range []string{"RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} {
		out = append(out, k+"="+set[k])
	}
	return out
}

func exitCode(state *os.ProcessState) int {
	if state == nil {
		return 1
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}

// Run starts the children and waits for all of them. Signals received on
// sigs are sent to every running child; cancelling ctx stops them (SIGTERM,
// then SIGKILL after the grace period). The error is non-nil only when the
// launch itself could not be made.
func Run(ctx context.Context, cfg Config, sigs <-chan os.Signal) (Result, error) {
	if cfg.NProc < 1 {
		return Result{}, fmt.Errorf("launch: --nproc-per-node must be at least 1, got %d", cfg.NProc)
	}
	if cfg.Program == "" {
		return Result{}, errors.New("launch: no program to run")
	}
	if cfg.MasterAddr == "" {
		cfg.MasterAddr = "127.0.0.1"
	}
	if cfg.MasterPort == 0 {
		p, err := FreePort(cfg.MasterAddr)
		if err != nil {
			return Result{}, err
		}
		cfg.MasterPort = p
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	// Children write concurrently; plain io.Writers get one lock each (one
	// shared lock when stdout and stderr are the same writer).
	sameWriter := cfg.Stdout == cfg.Stderr
	if _, ok := cfg.Stdout.(*os.File); !ok {
		cfg.Stdout = &lockedWriter{w: cfg.Stdout}
	}
	if _, ok := cfg.Stderr.(*os.File); !ok {
		if sameWriter {
			cfg.Stderr = cfg.Stdout
		} else {
			cfg.Stderr = &lockedWriter{w: cfg.Stderr}
		}
	}
	if cfg.Grace == 0 {
		cfg.Grace = DefaultGrace
	}

	type exit struct {
		rank  int
		state *os.ProcessState
	}
	var mu sync.Mutex
	running := make(map[int]*exec.Cmd)
	exits := make(chan exit, cfg.NProc)
	signalAll := func(s os.Signal) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range running {
			_ = c.Process.Signal(s)
		}
	}
	killLater := sync.OnceFunc(func() {
		go func() {
			time.Sleep(cfg.Grace)
			signalAll(syscall.SIGKILL)
		}()
	})
	stopAll := func() {
		signalAll(syscall.SIGTERM)
		killLater()
	}

	for r := 0; r < cfg.NProc; r++ {
		c := exec.Command(cfg.Program, cfg.Args...)
		c.Env = ChildEnv(cfg.Env, r, cfg.NProc, cfg.MasterAddr, cfg.MasterPort)
		c.Stdout, c.Stderr = cfg.Stdout, cfg.Stderr
		// Own process group: a terminal's Ctrl-C reaches the children once,
		// through the launcher, not twice.
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			stopAll()
			for range running {
				<-exits
			}
			return Result{}, fmt.Errorf("launch: starting rank %d (%s): %w", r, cfg.Program, err)
		}
		mu.Lock()
		running[r] = c
		mu.Unlock()
		go func(r int, c *exec.Cmd) {
			_ = c.Wait()
			mu.Lock()
			delete(running, r)
			mu.Unlock()
			exits <- exit{r, c.ProcessState}
		}(r, c)
	}

	res := Result{FailedRank: -1}
	stopping := false // the children were told to stop (SIGTERM or a forwarded signal)
	for left := cfg.NProc; left > 0; {
		select {
		case e := <-exits:
			left--
			if code := exitCode(e.state); code != 0 && res.FailedRank < 0 {
				res = Result{ExitCode: code, FailedRank: e.rank}
				if left > 0 && !stopping {
					fmt.Fprintf(cfg.Stderr, "launch: rank %d exited with status %d; stopping the other %d\n", e.rank, code, left)
				}
				// After a forwarded signal the others are already stopping on
				// their own: a second signal could cut their shutdown short.
				if !stopping {
					stopping = true
					stopAll()
				}
			}
		case s := <-sigs:
			signalAll(s)
			stopping = true
			killLater()
		case <-ctx.Done():
			if !stopping {
				stopping = true
				stopAll()
			}
			ctx = context.Background()
		}
	}
	return res, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
