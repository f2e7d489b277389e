package dist

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/clipagiqa/clipagiqa/torch/nn"
)

// A small conv + BatchNorm net trained a few SGD steps on fixed data, so the
// state after data-parallel training can be compared with one process
// training on the whole batch.

const (
	bnGlobalBatch = 8
	bnSteps       = 3
	bnSide        = 6
	bnMomentum    = 0.1
	bnEps         = 1e-5
)

func init() {
	workers["bn-sync"] = func(g *Group) error { return workerBatchNorm(g, true) }
	workers["bn-local"] = func(g *Group) error { return workerBatchNorm(g, false) }
}

type bnNet struct {
	store        *nn.Store
	bn0          *nn.BatchNorm2d // on the raw input: its batch statistics are the data's
	conv1, conv2 *nn.Conv2d
	bn1, bn2     *nn.BatchNorm2d
	fc           *nn.Linear
}

func newBNNet() (*bnNet, error) {
	st := nn.NewStore()
	n := &bnNet{store: st}
	var err error
	conv := nn.Conv2dConfig{Kernel: torch.Sq(3), Padding: torch.Sq(1), Bias: true}
	if n.bn0, err = nn.NewBatchNorm2d(st.Sub("bn0"), 3, nn.BatchNormDefaults); err != nil {
		return nil, err
	}
	if n.conv1, err = nn.NewConv2d(st.Sub("conv1"), 3, 4, conv); err != nil {
		return nil, err
	}
	if n.bn1, err = nn.NewBatchNorm2d(st.Sub("bn1"), 4, nn.BatchNormDefaults); err != nil {
		return nil, err
	}
	if n.conv2, err = nn.NewConv2d(st.Sub("conv2"), 4, 4, conv); err != nil {
		return nil, err
	}
	if n.bn2, err = nn.NewBatchNorm2d(st.Sub("bn2"), 4, nn.BatchNormDefaults); err != nil {
		return nil, err
	}
	if n.fc, err = nn.NewLinear(st.Sub("fc"), 4, 1, true); err != nil {
		return nil, err
	}
	// Deterministic weights instead of the RNG, identical in every process.
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	for k, p := range st.Parameters() {
		m := p.T.Numel()
		v := make([]float32, m)
		for i := range v {
			w := 0.3 * math.Sin(1.7*float64(i)+0.5*float64(k)+0.2)
			if strings.HasPrefix(p.Name, "bn") && strings.HasSuffix(p.Name, ".weight") {
				w = 1 + w/3
			}
			v[i] = float32(w)
		}
		if err := p.T.CopyFrom(s.Reshape(s.FromFloat32(v, m), p.T.Shape()...)); err != nil {
			return nil, err
		}
	}
	return n, s.Err()
}

func (n *bnNet) forward(s *torch.Scope, x *torch.Tensor) *torch.Tensor {
	h := n.bn0.Forward(s, x)
	h = s.Relu(n.bn1.Forward(s, n.conv1.Forward(s, h)))
	h = s.Relu(n.bn2.Forward(s, n.conv2.Forward(s, h)))
	return n.fc.Forward(s, s.Mean(h, false, 2, 3))
}

// bnSample is global sample g of step t: 3×6×6 values whose mean grows with
// g's position in the batch, so the two halves have different statistics.
func bnSample(t, g int) []float32 {
	v := make([]float32, 3*bnSide*bnSide)
	for k := range v {
		v[k] = float32(math.Sin(0.37*float64(k)+0.91*float64(g)+1.3*float64(t)) + 0.15*float64(g) + 0.05*float64(k/(bnSide*bnSide)))
	}
	return v
}

func bnTarget(t, g int) float32 { return float32(math.Cos(float64(g) + 0.7*float64(t))) }

// bnState is every parameter and buffer by name, as float64.
type bnState map[string][]float64

func stateOf(st *nn.Store) (bnState, error) {
	out := bnState{}
	s := torch.NewScope().WithGrad(torch.NoGrad)
	defer s.Close()
	for _, name := range st.Names() {
		v, err := s.Cast(st.Get(name), torch.Float64).Float64s()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = v
	}
	return out, s.Err()
}

// trainBN trains the net bnSteps steps with this rank's share of each global
// batch; broadcast calls BroadcastBuffers before each forward (DDP's default).
func trainBN(d *DataParallel, sync nn.BatchNormSync, broadcast bool) (*bnNet, error) {
	net, err := newBNNet()
	if err != nil {
		return nil, err
	}
	nn.ConvertSyncBatchNorm(net.store, sync)
	params := nn.Tensors(net.store.Trainable())
	opt, err := torch.NewSGD(params, torch.SGDOptions{LR: 0.2})
	if err != nil {
		return nil, err
	}
	all := make([]int, bnGlobalBatch)
	for i := range all {
		all[i] = i
	}
	mine := d.Sampler(all)
	var live int64
	for t := range bnSteps {
		if broadcast {
			if err := d.BroadcastBuffers(net.store); err != nil {
				return nil, err
			}
		}
		var xs, ys []float32
		for _, g := range mine {
			xs = append(xs, bnSample(t, g)...)
			ys = append(ys, bnTarget(t, g))
		}
		n := int64(len(mine))
		s := torch.NewScope()
		loss := s.MSELoss(net.forward(s, s.FromFloat32(xs, n, 3, bnSide, bnSide)), s.FromFloat32(ys, n, 1))
		if err := s.Err(); err != nil {
			s.Close()
			return nil, err
		}
		lv, _ := loss.Item()
		if err := loss.Backward(); err != nil {
			s.Close()
			return nil, err
		}
		s.Close()
		if _, err := d.AverageGradients(params, lv, len(mine)); err != nil {
			return nil, err
		}
		if err := opt.Step(); err != nil {
			return nil, err
		}
		if err := opt.ZeroGrad(); err != nil {
			return nil, err
		}
		if t == 0 {
			live = torch.LiveTensors()
		} else if now := torch.LiveTensors(); now != live {
			return nil, fmt.Errorf("step %d: %d live tensors, %d after step 0", t, now, live)
		}
	}
	return net, nil
}

// workerBatchNorm trains on its half and prints the state as JSON lines
// ("state" after training; for the per-rank mode also "after", once more
// after a buffer broadcast).
func workerBatchNorm(g *Group, sync bool) error {
	d := NewDataParallel(g)
	var bs nn.BatchNormSync
	if sync {
		bs = d.SyncBatchNorm()
	}
	net, err := trainBN(d, bs, true)
	if err != nil {
		return err
	}
	defer net.store.Close()
	emit := func(tag string) error {
		st, err := stateOf(net.store)
		if err != nil {
			return err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		fmt.Printf("%s %s\n", tag, b)
		return nil
	}
	if err := emit("state"); err != nil {
		return err
	}
	if !sync {
		if err := d.BroadcastBuffers(net.store); err != nil {
			return err
		}
		return emit("after")
	}
	return nil
}

func parseStates(t *testing.T, stdout string) map[string]bnState {
	t.Helper()
	out := map[string]bnState{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		tag, body, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var st bnState
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			continue
		}
		out[tag] = st
	}
	return out
}

// relErr is max|a−b| / max|b| per tensor (relative to the tensor's scale, so
// near-zero elements do not blow it up).
func relErr(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		m = math.Max(m, math.Abs(b[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

func referenceBN(t *testing.T, sync nn.BatchNormSync) bnState {
	t.Helper()
	net, err := trainBN(nil, sync, true)
	if err != nil {
		t.Fatal(err)
	}
	defer net.store.Close()
	st, err := stateOf(net.store)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func runBNRanks(t *testing.T, worker string) []map[string]bnState {
	t.Helper()
	res := spawn(t, worker, 2, "30s")
	out := make([]map[string]bnState, len(res))
	for r, rr := range res {
		if rr.code != 0 {
			t.Fatalf("rank %d: exit %d\nstderr: %s", r, rr.code, rr.stderr)
		}
		out[r] = parseStates(t, rr.stdout)
		if out[r]["state"] == nil {
			t.Fatalf("rank %d printed no state\nstdout: %s", r, rr.stdout)
		}
	}
	return out
}

// syncTolerance bounds the per-tensor relative difference between 2 ranks ×
// half batch with SyncBatchNorm and 1 process × full batch: float32 rounding
// of the split reductions, carried through 3 steps.
const syncTolerance = 1e-5

func TestSyncBatchNormLocalIsBatchNorm(t *testing.T) {
	plain := referenceBN(t, nil)
	local := referenceBN(t, NewSyncBatchNorm(Local()))
	for name, want := range plain {
		got := local[name]
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s[%d]: SyncBatchNorm on one process %v, BatchNorm2d %v", name, i, got[i], want[i])
			}
		}
	}
}

func TestSyncBatchNormMatchesFullBatch(t *testing.T) {
	needGloo(t)
	ref := referenceBN(t, nil)
	ranks := runBNRanks(t, "bn-sync")
	for r, got := range ranks {
		var worst float64
		var worstName string
		for name, want := range ref {
			e := relErr(got["state"][name], want)
			if e > worst {
				worst, worstName = e, name
			}
			if e > syncTolerance {
				t.Errorf("rank %d %s: relative error %.3g > %g\ngot  %v\nwant %v", r, name, e, syncTolerance, got["state"][name], want)
			}
		}
		t.Logf("rank %d: largest relative error %.3g (%s) over %d tensors", r, worst, worstName, len(ref))
	}
}

// TestBroadcastBuffersPerRank checks DDP's default: each rank normalises by
// its own half, and rank 0's buffers are broadcast before every step. bn0
// sees the raw data, so its running stats are computed here by hand.
func TestBroadcastBuffersPerRank(t *testing.T) {
	needGloo(t)
	ranks := runBNRanks(t, "bn-local")
	half := bnGlobalBatch / 2
	// Per-channel mean and unbiased variance of rank r's half at step t.
	stats := func(t, r int) (mean, uvar [3]float64) {
		n := float64(half * bnSide * bnSide)
		for c := range 3 {
			var sum, sq float64
			for g := r * half; g < (r+1)*half; g++ {
				v := bnSample(t, g)[c*bnSide*bnSide : (c+1)*bnSide*bnSide]
				for _, x := range v {
					sum += float64(x)
				}
			}
			mean[c] = sum / n
			for g := r * half; g < (r+1)*half; g++ {
				for _, x := range bnSample(t, g)[c*bnSide*bnSide : (c+1)*bnSide*bnSide] {
					sq += (float64(x) - mean[c]) * (float64(x) - mean[c])
				}
			}
			uvar[c] = sq / (n - 1)
		}
		return
	}
	// Rank 0's buffers after each step: its own chain; rank r's final
	// buffers: rank 0's after step 1 updated with r's own last batch.
	var rm0, rv0 [3]float64
	for c := range 3 {
		rv0[c] = 1
	}
	var prevM, prevV [3]float64
	for step := range bnSteps {
		prevM, prevV = rm0, rv0
		m, v := stats(step, 0)
		for c := range 3 {
			rm0[c] = (1-bnMomentum)*rm0[c] + bnMomentum*m[c]
			rv0[c] = (1-bnMomentum)*rv0[c] + bnMomentum*v[c]
		}
	}
	m1, v1 := stats(bnSteps-1, 1)
	var rm1, rv1 [3]float64
	for c := range 3 {
		rm1[c] = (1-bnMomentum)*prevM[c] + bnMomentum*m1[c]
		rv1[c] = (1-bnMomentum)*prevV[c] + bnMomentum*v1[c]
	}
	want := [][2][3]float64{{rm0, rv0}, {rm1, rv1}}
	const tol = 1e-5
	for r, st := range ranks {
		for k, name := range []string{"bn0.running_mean", "bn0.running_var"} {
			e := relErr(st["state"][name], want[r][k][:])
			t.Logf("rank %d %s: relative error %.3g vs the hand computation", r, name, e)
			if e > tol {
				t.Errorf("rank %d %s = %v, want %v (rel. error %.3g > %g)", r, name, st["state"][name], want[r][k], e, tol)
			}
		}
		if nb := st["state"]["bn1.num_batches_tracked"]; len(nb) != 1 || nb[0] != bnSteps {
			t.Errorf("rank %d num_batches_tracked = %v, want %d", r, nb, bnSteps)
		}
	}
	// The two halves differ, so the ranks' last updates differ …
	if e := relErr(ranks[1]["state"]["bn0.running_mean"], ranks[0]["state"]["bn0.running_mean"]); e < 1e-3 {
		t.Errorf("ranks' running means agree to %.3g: the per-rank statistics are not per rank", e)
	}
	// … gradients are averaged, so the weights agree, and a broadcast makes
	// every buffer rank 0's exactly.
	for name, v0 := range ranks[0]["after"] {
		v1 := ranks[1]["after"][name]
		for i := range v0 {
			if v0[i] != v1[i] {
				t.Errorf("after broadcast, %s[%d]: rank 1 %v, rank 0 %v", name, i, v1[i], v0[i])
				break
			}
		}
	}
	if len(ranks[0]["after"]) == 0 {
		t.Error("rank 0 printed no state after the broadcast")
	}
	// Per-rank statistics are not the full batch's: the test above can fail.
	ref := referenceBN(t, nil)
	if e := relErr(ranks[0]["state"]["bn1.running_var"], ref["bn1.running_var"]); e < 1e-3 {
		t.Errorf("per-rank running_var within %.3g of the full batch's: the data do not tell the modes apart", e)
	}
}
