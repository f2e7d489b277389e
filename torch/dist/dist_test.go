package dist

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/torch"
)

// The test binary re-executes itself as the ranks of a group: with
// DIST_TEST_WORKER set it runs that worker instead of the tests.
const workerEnv = "DIST_TEST_WORKER"

func TestMain(m *testing.M) {
	if name := os.Getenv(workerEnv); name != "" {
		os.Exit(runWorker(name))
	}
	os.Exit(m.Run())
}

var workers = map[string]func(g *Group) error{
	"collectives": workerCollectives,
	"die":         workerDie,
	"ddp":         workerDDP,
	"stall":       workerStall,
}

func runWorker(name string) int {
	f, ok := workers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown worker %q\n", name)
		return 2
	}
	g, err := InitFromOS(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer g.Close()
	if err := f(g); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func floats(t *torch.Tensor) []float32 {
	v, err := t.Float32s()
	if err != nil {
		panic(err)
	}
	return v
}

func expect(what string, got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: got %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	return nil
}

// workerCollectives checks each collective against a value computed by hand
// from the rank numbers.
func workerCollectives(g *Group) error {
	r, w := float32(g.Rank()), float32(g.WorldSize())
	mk := func(v ...float32) *torch.Tensor {
		t, err := torch.FromFloat32(v, int64(len(v)))
		if err != nil {
			panic(err)
		}
		return t
	}
	// Sum of (rank+1) and 10*(rank+1) over ranks 0..w-1.
	a, b := mk(r+1, 10*(r+1)), mk(2*r)
	defer a.Close()
	defer b.Close()
	// Collectives write through the data pointer; like PyTorch's in-place
	// ops they must bump the version counter (folds memoised on it).
	written := func(what string, t *torch.Tensor, before int64) error {
		if v := t.Version(); v <= before {
			return fmt.Errorf("%s: version %d after the collective, %d before", what, v, before)
		}
		return nil
	}
	va := a.Version()
	if err := g.AllReduce(Sum, a, b); err != nil {
		return err
	}
	if err := written("all_reduce", a, va); err != nil {
		return err
	}
	s := w * (w + 1) / 2
	if err := expect("sum", floats(a), []float32{s, 10 * s}); err != nil {
		return err
	}
	if err := expect("sum second tensor", floats(b), []float32{w * (w - 1)}); err != nil {
		return err
	}
	c := mk(r, 4)
	defer c.Close()
	if err := g.AllReduce(Avg, c); err != nil {
		return err
	}
	if err := expect("avg", floats(c), []float32{(w - 1) / 2, 4}); err != nil {
		return err
	}
	d := mk(r, -r)
	defer d.Close()
	if err := g.AllReduce(Max, d); err != nil {
		return err
	}
	if err := expect("max", floats(d), []float32{w - 1, 0}); err != nil {
		return err
	}
	root := g.WorldSize() - 1
	e := mk(r*100, 7)
	defer e.Close()
	ve := e.Version()
	if err := g.Broadcast(root, e); err != nil {
		return err
	}
	if err := written("broadcast", e, ve); err != nil {
		return err
	}
	if err := expect("broadcast", floats(e), []float32{float32(root) * 100, 7}); err != nil {
		return err
	}
	in := mk(r, r+0.5, -r)
	defer in.Close()
	out, err := torch.FromFloat32(make([]float32, 3*g.WorldSize()), int64(g.WorldSize()), 3)
	if err != nil {
		return err
	}
	defer out.Close()
	in3, err := torch.FromFloat32([]float32{r, r + 0.5, -r}, 1, 3)
	if err != nil {
		return err
	}
	defer in3.Close()
	vout := out.Version()
	if err := g.AllGather(in3, out); err != nil {
		return err
	}
	if err := written("all_gather", out, vout); err != nil {
		return err
	}
	var want []float32
	for k := 0; k < g.WorldSize(); k++ {
		want = append(want, float32(k), float32(k)+0.5, -float32(k))
	}
	if err := expect("all_gather", floats(out), want); err != nil {
		return err
	}
	// A wrong output shape is refused with an error, not a crash.
	if err := g.AllGather(in3, in3); err == nil || !strings.Contains(err.Error(), "output must have shape") {
		return fmt.Errorf("all_gather with a wrong output shape: got %v", err)
	}
	if err := g.Barrier(); err != nil {
		return err
	}
	if err := g.Close(); err != nil {
		return err
	}
	if err := g.Close(); err != nil {
		return fmt.Errorf("second Close: %w", err)
	}
	if err := g.Barrier(); err == nil {
		return fmt.Errorf("barrier after Close succeeded")
	}
	fmt.Println("collectives ok")
	return nil
}

// workerDie: the last rank exits abruptly after a barrier; the others then
// all-reduce and must fail within the timeout, naming it.
func workerDie(g *Group) error {
	if err := g.Barrier(); err != nil {
		return err
	}
	victim := g.WorldSize() - 1
	if os.Getenv("DIST_TEST_VICTIM") == "0" {
		victim = 0
	}
	if g.Rank() == victim {
		os.Exit(7)
	}
	x, _ := torch.FromFloat32([]float32{1}, 1)
	defer x.Close()
	start := time.Now()
	err := g.AllReduce(Sum, x)
	fmt.Printf("elapsed %.2fs\n", time.Since(start).Seconds())
	if err == nil {
		return fmt.Errorf("all_reduce with a dead peer succeeded")
	}
	fmt.Printf("peer error: %v\n", err)
	return nil
}

// workerStall: the last rank stays alive but skips the collective; the
// others must time out instead of hanging.
func workerStall(g *Group) error {
	if err := g.Barrier(); err != nil {
		return err
	}
	if g.Rank() == g.WorldSize()-1 {
		time.Sleep(3 * g.Timeout())
		return nil
	}
	x, _ := torch.FromFloat32([]float32{1}, 1)
	defer x.Close()
	start := time.Now()
	err := g.AllReduce(Sum, x)
	fmt.Printf("elapsed %.2fs\n", time.Since(start).Seconds())
	if err == nil {
		return fmt.Errorf("all_reduce with a stalled peer succeeded")
	}
	fmt.Printf("peer error: %v\n", err)
	return nil
}

// needGloo skips multi-process tests in a build without Gloo (no libgloo-dev).
func needGloo(t *testing.T) {
	t.Helper()
	if !HasGloo() {
		t.Skip("built without Gloo (install libgloo-dev and rebuild with make native)")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type rankResult struct {
	code   int
	stdout string
	stderr string
}

// spawn runs worker as ranks 0..n-1 of a fresh group and waits for all.
func spawn(t *testing.T, worker string, n int, timeout string, env ...string) []rankResult {
	t.Helper()
	port := freePort(t)
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	errs := make([]*bytes.Buffer, n)
	for r := 0; r < n; r++ {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), workerEnv+"="+worker,
			"RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(n),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port), "CLIPAGIQA_DIST_TIMEOUT="+timeout)
		c.Env = append(c.Env, env...)
		outs[r], errs[r] = &bytes.Buffer{}, &bytes.Buffer{}
		c.Stdout, c.Stderr = outs[r], errs[r]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[r] = c
	}
	// A hang is a failure too: kill everything after a bound well above the timeout.
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			for _, c := range cmds {
				_ = c.Process.Kill()
			}
		}
	}()
	res := make([]rankResult, n)
	for r, c := range cmds {
		_ = c.Wait()
		res[r] = rankResult{c.ProcessState.ExitCode(), outs[r].String(), errs[r].String()}
	}
	close(done)
	return res
}

func TestCollectives(t *testing.T) {
	needGloo(t)
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("world%d", n), func(t *testing.T) {
			for r, res := range spawn(t, "collectives", n, "30s") {
				if res.code != 0 || !strings.Contains(res.stdout, "collectives ok") {
					t.Errorf("rank %d: exit %d\nstdout: %s\nstderr: %s", r, res.code, res.stdout, res.stderr)
				}
			}
		})
	}
}

func TestKilledPeerNamed(t *testing.T) {
	needGloo(t)
	const timeout = 10 * time.Second
	res := spawn(t, "die", 2, timeout.String())
	if res[1].code != 7 {
		t.Fatalf("rank 1 should have exited 7, got %d: %s", res[1].code, res[1].stderr)
	}
	r0 := res[0]
	if r0.code != 0 {
		t.Fatalf("rank 0: exit %d\n%s\n%s", r0.code, r0.stdout, r0.stderr)
	}
	if !strings.Contains(r0.stdout, "lost rank 1") {
		t.Errorf("rank 0's error does not name rank 1:\n%s", r0.stdout)
	}
	var secs float64
	if _, err := fmt.Sscanf(r0.stdout, "elapsed %fs", &secs); err != nil {
		t.Fatalf("no elapsed time in %q", r0.stdout)
	}
	if secs > timeout.Seconds()+5 {
		t.Errorf("the error took %.1fs, more than the %v timeout", secs, timeout)
	}
	t.Logf("rank 0 failed after %.2fs: %s", secs, strings.TrimSpace(r0.stdout))
}

// A peer that is alive but never joins the collective gives a timeout error.
func TestStalledPeerTimesOut(t *testing.T) {
	needGloo(t)
	const timeout = 3 * time.Second
	res := spawn(t, "stall", 2, timeout.String())
	r0 := res[0]
	if r0.code != 0 {
		t.Fatalf("rank 0: exit %d\n%s\n%s", r0.code, r0.stdout, r0.stderr)
	}
	var secs float64
	if _, err := fmt.Sscanf(r0.stdout, "elapsed %fs", &secs); err != nil {
		t.Fatalf("no elapsed time in %q", r0.stdout)
	}
	if secs < timeout.Seconds()*0.9 || secs > timeout.Seconds()+5 {
		t.Errorf("failed after %.1fs, want about the %v timeout", secs, timeout)
	}
	if strings.Contains(r0.stdout, "lost rank") {
		t.Errorf("a live peer was reported lost: %s", r0.stdout)
	}
	t.Logf("rank 0 after %.2fs: %s", secs, strings.TrimSpace(r0.stdout))
}

// When rank 0, the store host, dies, the survivor says so.
func TestKilledStoreHostNamed(t *testing.T) {
	needGloo(t)
	res := spawn(t, "die", 2, "10s", "DIST_TEST_VICTIM=0")
	if res[0].code != 7 {
		t.Fatalf("rank 0 should have exited 7, got %d: %s", res[0].code, res[0].stderr)
	}
	r1 := res[1]
	if r1.code != 0 || !strings.Contains(r1.stdout, "lost rank 0") {
		t.Fatalf("rank 1: exit %d, want an error naming rank 0:\n%s\n%s", r1.code, r1.stdout, r1.stderr)
	}
	t.Log(strings.TrimSpace(r1.stdout))
}

func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = Init(Env{Rank: 0, WorldSize: 2, MasterAddr: "127.0.0.1", MasterPort: port}, Options{Timeout: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "could not host the store on port "+strconv.Itoa(port)) {
		t.Fatalf("want a clear port-in-use error, got %v", err)
	}
	t.Log(err)
}

func TestUnreachableMaster(t *testing.T) {
	port := freePort(t) // nothing listens there
	start := time.Now()
	_, err := Init(Env{Rank: 1, WorldSize: 2, MasterAddr: "127.0.0.1", MasterPort: port}, Options{Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "could not reach the store at 127.0.0.1:"+strconv.Itoa(port)) {
		t.Fatalf("want a clear unreachable-master error, got %v", err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("took %v for a 2s timeout", el)
	}
	t.Log(err)
}

func TestEnvFrom(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    Env
		wantErr string
	}{
		{"unset is single process", nil, Env{WorldSize: 1, MasterAddr: "127.0.0.1", MasterPort: 29500}, ""},
		{"torchrun", map[string]string{"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "1234"},
			Env{Rank: 3, WorldSize: 4, LocalRank: 1, MasterAddr: "node0", MasterPort: 1234}, ""},
		{"torchrun agent store", map[string]string{"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "9",
			"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "2"},
			Env{Rank: 1, WorldSize: 2, MasterAddr: "h", MasterPort: 9, AgentStore: true, RestartCount: 2}, ""},
		{"missing rank", map[string]string{"WORLD_SIZE": "2", "MASTER_ADDR": "x"}, Env{}, "RANK is not set"},
		{"missing addr", map[string]string{"WORLD_SIZE": "2", "RANK": "1"}, Env{}, "MASTER_ADDR is not set"},
		{"bad rank", map[string]string{"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "x"}, Env{}, "outside"},
		{"bad port", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "70000"}, Env{}, "not a TCP port"},
		{"garbage", map[string]string{"WORLD_SIZE": "two"}, Env{}, "not a non-negative integer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := envFrom(func(k string) string { return c.env[k] })
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("want error containing %q, got %v", c.wantErr, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestLocalGroup(t *testing.T) {
	g := Local()
	x, _ := torch.FromFloat32([]float32{1, 2}, 2)
	defer x.Close()
	out, _ := torch.FromFloat32([]float32{0, 0}, 2)
	defer out.Close()
	if err := g.AllReduce(Avg, x); err != nil {
		t.Fatal(err)
	}
	if err := g.AllGather(x, out); err != nil {
		t.Fatal(err)
	}
	if err := expect("local", floats(out), []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := g.Broadcast(1, x); err == nil {
		t.Fatal("broadcast from rank 1 of 1 accepted")
	}
	if err := g.Close(); err != nil || g.Close() != nil {
		t.Fatal("Close not idempotent")
	}
	var none *DataParallel // a nil DataParallel is one process
	if none.WorldSize() != 1 || !none.IsMain() || len(none.Sampler([]int{1, 2, 3})) != 3 || none.Stats() != (ReduceStats{}) {
		t.Fatal("nil DataParallel is not a single process")
	}
	if l, err := none.AverageGradients(nil, 2.5, 4); err != nil || l != 2.5 {
		t.Fatalf("nil AverageGradients: %v %v", l, err)
	}
}

// workerDDP checks AverageGradients against a hand computation: rank r has
// n_r = r+1 samples and gradient w_r = (r+1)·[1, 2, 3] + [r, 0, -r] in two
// buckets; the result must be Σ n_r·w_r / Σ n_r on every rank, and the loss
// Σ n_r·loss_r / Σ n_r. Broadcast of parameters from rank 0 is checked too.
func workerDDP(g *Group) error {
	d := NewDataParallel(g)
	d.BucketBytes = 12 // force one bucket per parameter
	r := float32(g.Rank())
	p1, _ := torch.FromFloat32([]float32{r, r, r}, 3)
	p2, _ := torch.FromFloat32([]float32{5 * r}, 1)
	defer p1.Close()
	defer p2.Close()
	for _, p := range []*torch.Tensor{p1, p2} {
		if err := p.SetRequiresGrad(true); err != nil {
			return err
		}
	}
	if err := d.BroadcastParams(p1, p2); err != nil {
		return err
	}
	if err := expect("broadcast p1", floats(p1), []float32{0, 0, 0}); err != nil {
		return err
	}
	s := torch.NewScope()
	w := []float32{(r + 1) + r, 2 * (r + 1), 3*(r+1) - r}
	wt := s.FromFloat32(w, 3)
	l := s.Add(s.Sum(s.Mul(p1, wt), false), s.Sum(s.MulScalar(p2, float64(7*(r+1))), false))
	if err := s.Err(); err != nil {
		return err
	}
	if err := l.Backward(); err != nil {
		return err
	}
	s.Close()
	n := g.Rank() + 1
	loss, err := d.AverageGradients([]*torch.Tensor{p1, p2}, float64(10*(r+1)), n)
	if err != nil {
		return err
	}
	var want [3]float64
	var want2, wantLoss, total float64
	for k := 0; k < g.WorldSize(); k++ {
		kr := float64(k)
		nk := float64(k + 1)
		want[0] += nk * ((kr + 1) + kr)
		want[1] += nk * 2 * (kr + 1)
		want[2] += nk * (3*(kr+1) - kr)
		want2 += nk * 7 * (kr + 1)
		wantLoss += nk * 10 * (kr + 1)
		total += nk
	}
	g1, _ := p1.Grad()
	g2, _ := p2.Grad()
	defer g1.Close()
	defer g2.Close()
	got1, got2 := floats(g1), floats(g2)
	for i := range 3 {
		if math.Abs(float64(got1[i])-want[i]/total) > 1e-5 {
			return fmt.Errorf("grad p1 = %v, want %v", got1, []float64{want[0] / total, want[1] / total, want[2] / total})
		}
	}
	if math.Abs(float64(got2[0])-want2/total) > 1e-5 {
		return fmt.Errorf("grad p2 = %v, want %v", got2, want2/total)
	}
	if math.Abs(loss-wantLoss/total) > 1e-5 {
		return fmt.Errorf("loss %v, want %v", loss, wantLoss/total)
	}
	if st := d.Stats(); st.Calls != 2 || st.Bytes != 4*(3+1+3) {
		return fmt.Errorf("stats %+v: want 2 calls of 28 bytes in all", st)
	}
	// The last rank votes to stop: every rank learns it from the same step.
	if d.StopAgreed() {
		return fmt.Errorf("stop agreed before any vote")
	}
	stopped := 0
	d.StopVote = func() bool { return g.Rank() == g.WorldSize()-1 }
	d.OnStop = func() { stopped++ }
	if _, err := d.AverageGradients([]*torch.Tensor{p1, p2}, 1, n); err != nil {
		return err
	}
	if !d.StopAgreed() || stopped != 1 {
		return fmt.Errorf("rank %d: stop vote not seen (agreed %v, OnStop ran %d times)", g.Rank(), d.StopAgreed(), stopped)
	}
	d.StopVote, d.OnStop = nil, nil
	// Repeated steps free what they make.
	live := torch.LiveTensors()
	for range 5 {
		if _, err := d.AverageGradients([]*torch.Tensor{p1, p2}, 1, n); err != nil {
			return err
		}
	}
	if now := torch.LiveTensors(); now != live {
		return fmt.Errorf("AverageGradients leaks: %d live tensors, was %d", now, live)
	}
	if _, err := d.LocalBatch(g.WorldSize()*4 + 1); err == nil {
		return fmt.Errorf("indivisible batch accepted")
	}
	gathered, err := d.AllGatherFloat32([]float32{r, r})
	if err != nil {
		return err
	}
	var wantG []float32
	for k := 0; k < g.WorldSize(); k++ {
		wantG = append(wantG, float32(k), float32(k))
	}
	if err := expect("gather", gathered, wantG); err != nil {
		return err
	}
	fmt.Println("ddp ok")
	return nil
}

func TestDataParallel(t *testing.T) {
	needGloo(t)
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("world%d", n), func(t *testing.T) {
			for r, res := range spawn(t, "ddp", n, "30s") {
				if res.code != 0 || !strings.Contains(res.stdout, "ddp ok") {
					t.Errorf("rank %d: exit %d\nstdout: %s\nstderr: %s", r, res.code, res.stdout, res.stderr)
				}
			}
		})
	}
}

func TestSamplerSpans(t *testing.T) {
	for _, c := range []struct{ n, w int }{{32, 2}, {7, 2}, {5, 3}, {2, 4}} {
		seen := make([]int, c.n)
		for r := 0; r < c.w; r++ {
			lo, hi := Span(c.n, r, c.w)
			if hi-lo < c.n/c.w || hi-lo > c.n/c.w+1 {
				t.Errorf("n=%d w=%d rank %d gets %d", c.n, c.w, r, hi-lo)
			}
			for i := lo; i < hi; i++ {
				seen[i]++
			}
		}
		for i, k := range seen {
			if k != 1 {
				t.Fatalf("n=%d w=%d: item %d taken %d times", c.n, c.w, i, k)
			}
		}
	}
}

// The ranks join a group started by PyTorch's own torchrun, in both its
// rendezvous modes: static (torchrun's agent hosts the store; every rank is
// a client) and c10d (rank 0 hosts it).
//
// PyTorch 2.4+ asks its TCPStore for libuv by default; a torch built without
// libuv (Debian's 2.6) refuses that store. torchrun's rendezvous stores
// ignore USE_LIBUV=0, so this launcher makes torch.distributed.TCPStore honour
// it before torch.distributed.run imports it (a no-op on torch without the
// use_libuv argument, 1.13).
func TestTorchrun(t *testing.T) {
	needGloo(t)
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch.distributed.run").Run(); err != nil {
		t.Skipf("no torchrun (%s with torch): %v", py, err)
	}
	for _, mode := range []string{"static", "c10d"} {
		t.Run(mode, func(t *testing.T) {
			port := strconv.Itoa(freePort(t))
			// --redirects/--tee 2: Debian's torch 1.13 on Python 3.11 cannot parse the default 0.
			args := []string{"-m", "torch.distributed.run", "--nproc_per_node", "2", "--redirects", "2", "--tee", "2"}
			if mode == "static" {
				args = append(args, "--master_port", port)
			} else {
				args = append(args, "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:"+port)
			}
			args = append(args, "--no_python", os.Args[0], "-test.run=^$")
			c := exec.Command(py, append([]string{"-c", torchrunHonouringUseLibUV}, args[2:]...)...)
			c.Env = append(os.Environ(), workerEnv+"=collectives", "CLIPAGIQA_DIST_TIMEOUT=30s", "USE_LIBUV=0")
			done := make(chan struct{})
			go func() {
				select {
				case <-done:
				case <-time.After(120 * time.Second):
					_ = c.Process.Kill()
				}
			}()
			out, err := c.CombinedOutput()
			close(done)
			if err != nil || strings.Count(string(out), "collectives ok") != 2 {
				t.Fatalf("torchrun (%s): %v\n%s", mode, err, out)
			}
		})
	}
}

const torchrunHonouringUseLibUV = `
import os, runpy, sys
import torch.distributed as dist
if "use_libuv" in (dist.TCPStore.__init__.__doc__ or ""):
    class UseLibUVStore(dist.TCPStore):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("use_libuv", os.environ.get("USE_LIBUV", "1") == "1")
            super().__init__(*args, **kwargs)
    dist.TCPStore = UseLibUVStore
runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
`
