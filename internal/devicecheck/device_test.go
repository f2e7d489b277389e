package devicecheck

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/clip"
	"github.com/clipagiqa/clipagiqa/clipagiqa/demo"
	"github.com/clipagiqa/clipagiqa/clipagiqa/tokenizer"
	"github.com/clipagiqa/clipagiqa/data"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tolerances. fp32 is the CPU tests' (clip_test.go, model_test.go): features
// relative L2 1e-4, scores absolute 1e-6 (TF32 is turned off for these).
// Under autocast the matmuls run in half precision: features 1e-2 (fp16,
// 10-bit mantissa) and 4e-2 (bf16, 7-bit), scores 2e-3 / 1e-2 absolute
// (the official scores spread over 3.6e-4·N, so these are loose by
// necessity: half precision cannot reproduce them). Training on the device
// against the CPU, same initial weights, no dropout: parameters relative L2
// 1e-3 after the run, per-epoch train loss relative 1e-3.
const (
	featureRelTol   = 1e-4
	scoreAtol       = 1e-6
	fp16FeatureTol  = 1e-2
	bf16FeatureTol  = 4e-2
	fp16ScoreAtol   = 2e-3
	bf16ScoreAtol   = 1e-2
	trainParamTol   = 1e-3
	trainLossRelTol = 1e-3
)

// testDevice is the device under test, or a skip when it is absent.
func testDevice(t testing.TB) torch.Device {
	t.Helper()
	d, err := torch.ParseDevice(os.Getenv(DeviceEnv))
	require.NoError(t, err, DeviceEnv)
	if d.Type == torch.CUDA && !torch.CUDAAvailable() {
		t.Skipf("%s=%s but CUDA is not available", DeviceEnv, os.Getenv(DeviceEnv))
	}
	require.NoError(t, torch.CheckDevice(d))
	// fp32 parity: no TF32 anywhere (libtorch allows it for cuDNN by default).
	cublas, cudnn := torch.AllowTF32()
	require.NoError(t, torch.SetAllowTF32(false, false))
	t.Cleanup(func() { _ = torch.SetAllowTF32(cublas, cudnn) })
	return d
}

func isCUDA(d torch.Device) bool { return d.Type == torch.CUDA }

func loadCLIP(t testing.TB, d torch.Device, precision torch.DType) *clip.Model {
	t.Helper()
	m, err := clip.Load(reffix.Path("tiny_clip_vit_fp16.pt"), clip.Options{Device: d, Precision: precision})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func relErr64(got, want []float64) float64 {
	var num, den float64
	for i := range want {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func maxAbs(got []float32, want []float64) float64 {
	worst := 0.0
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i]))
	}
	return worst
}

// encodeBoth returns image and text features of the fixture on m, with the
// scope configured by mode.
func encodeBoth(t *testing.T, m *clip.Model, mode func(*torch.Scope) *torch.Scope) ([]float32, []float32) {
	t.Helper()
	exp, err := reffix.Load()
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	s := mode(torch.NewScope().WithGrad(torch.InferenceMode))
	defer s.Close()
	img := s.Cast(m.EncodeImage(s, s.FromFloat32(px.F32, px.Shape...)), torch.Float32)
	txt := s.Cast(m.EncodeText(s, exp.CLIPIQA.Tokenized), torch.Float32)
	require.NoError(t, s.Err())
	iv, err := img.Float32s()
	require.NoError(t, err)
	tv, err := txt.Float32s()
	require.NoError(t, err)
	return iv, tv
}

func TestCLIPFeatures(t *testing.T) {
	d := testDevice(t)
	exp, err := reffix.Load()
	require.NoError(t, err)
	wantImg := reffix.Flatten(exp.CLIPAGIQA.ImageFeaturesRaw)
	wantTxt := reffix.Flatten(exp.CLIPIQA.TextFeaturesRaw)
	type variant struct {
		name      string
		precision torch.DType
		autocast  torch.DType
		tol       float64
		cudaOnly  bool
	}
	variants := []variant{
		{name: "fp32", precision: torch.Float32, tol: featureRelTol},
		{name: "fp16 autocast", precision: torch.Float32, autocast: torch.Float16, tol: fp16FeatureTol, cudaOnly: true},
		{name: "bf16 autocast", precision: torch.Float32, autocast: torch.BFloat16, tol: bf16FeatureTol, cudaOnly: true},
		{name: "fp16 weights", precision: torch.Float16, tol: fp16FeatureTol, cudaOnly: true},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if v.cudaOnly && !isCUDA(d) {
				t.Skip("autocast and half-precision weights are CUDA-only")
			}
			m := loadCLIP(t, d, v.precision)
			mode := func(s *torch.Scope) *torch.Scope { return s }
			if v.autocast != torch.Float32 && v.autocast != 0 {
				mode = func(s *torch.Scope) *torch.Scope { return s.WithAutocast(v.autocast) }
			}
			iv, tv := encodeBoth(t, m, mode)
			ie, te := reffix.RelErr(iv, wantImg), reffix.RelErr(tv, wantTxt)
			t.Logf("REPORT parity %s on %s: image features rel L2 %.3g (max abs %.3g), text features rel L2 %.3g; tolerance %.0e",
				v.name, d, ie, maxAbs(iv, wantImg), te, v.tol)
			assert.Less(t, ie, v.tol)
			assert.Less(t, te, v.tol)
		})
	}
}

func officialModel(t *testing.T, c *clip.Model) *clipagiqa.Model {
	t.Helper()
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	ck, err := clipagiqa.ReadCheckpoint(reffix.Dir(), 0)
	require.NoError(t, err)
	cfg := ck.Config
	cfg.Dropout = 0
	ck.Config = cfg
	m, err := clipagiqa.FromCheckpoint(c, tok, ck)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func TestAGIQAScores(t *testing.T) {
	d := testDevice(t)
	exp, err := reffix.Load()
	require.NoError(t, err)
	px, err := reffix.Pixels()
	require.NoError(t, err)
	for _, v := range []struct {
		name     string
		autocast torch.DType
		atol     float64
	}{{"fp32", 0, scoreAtol}, {"fp16 autocast", torch.Float16, fp16ScoreAtol}, {"bf16 autocast", torch.BFloat16, bf16ScoreAtol}} {
		t.Run(v.name, func(t *testing.T) {
			if v.autocast != 0 && !isCUDA(d) {
				t.Skip("autocast is CUDA-only")
			}
			m := officialModel(t, loadCLIP(t, d, torch.Float32))
			s := torch.NewScope().WithGrad(torch.InferenceMode)
			if v.autocast != 0 {
				s = s.WithAutocast(v.autocast)
			}
			defer s.Close()
			got, err := s.Cast(m.Forward(s, s.FromFloat32(px.F32, px.Shape...), false), torch.Float32).Float32s()
			require.NoError(t, err)
			require.NoError(t, s.Err())
			worst := maxAbs(got, exp.CLIPAGIQA.Scores)
			t.Logf("REPORT CLIP-AGIQA scores %s on %s vs the official checkpoints: max abs error %.3g; tolerance %.0e", v.name, d, worst, v.atol)
			assert.LessOrEqual(t, worst, v.atol)
		})
	}
}

// demoSets writes a small demo data set (the `clipagiqa demo` generator).
func demoSets(t *testing.T) clipagiqa.Datasets { return demoSetsB(t) }

func demoSetsB(t testing.TB) clipagiqa.Datasets {
	t.Helper()
	dir := t.TempDir()
	train, test, err := demo.Generate(dir, demo.Options{Seed: 3, Bases: 6, Size: 224})
	require.NoError(t, err)
	tr, te, err := data.LoadTrainTestCSV(dir, train, test)
	require.NoError(t, err)
	return clipagiqa.Datasets{Train: tr, Test: te}
}

func trainOn(t *testing.T, d torch.Device, init *clipagiqa.Checkpoint, ds clipagiqa.Datasets, epochs int) ([]float64, [][]float32) {
	t.Helper()
	c := loadCLIP(t, d, torch.Float32)
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	m, err := clipagiqa.FromCheckpoint(c, tok, init)
	require.NoError(t, err)
	defer m.Close()
	cfg := clipagiqa.DefaultTrainConfig()
	cfg.Epochs, cfg.BatchSize, cfg.LR, cfg.WarmupEpochs, cfg.Seed = epochs, 16, 0.01, 0, 7
	cfg.FeatureCache = clipagiqa.CacheCenter
	cfg.OutDir = t.TempDir()
	live := torch.LiveTensors()
	res, err := clipagiqa.Train(context.Background(), m, ds, cfg, clipagiqa.Callbacks{})
	require.NoError(t, err)
	assert.Equal(t, live, torch.LiveTensors(), "training on %s leaked tensors", d)
	var losses []float64
	for _, h := range res.History {
		losses = append(losses, h.TrainLoss)
	}
	var params [][]float32
	for _, p := range m.Params() {
		v, err := p.Float32s()
		require.NoError(t, err)
		params = append(params, v)
	}
	return losses, params
}

func TestTrainingMatchesCPU(t *testing.T) {
	d := testDevice(t)
	ds := demoSets(t)
	// The same initial weights on both sides, dropout off: the runs differ
	// only by the devices' arithmetic.
	require.NoError(t, torch.ManualSeed(5))
	c := loadCLIP(t, torch.CPU, torch.Float32)
	tok, err := tokenizer.Default()
	require.NoError(t, err)
	cfg := clipagiqa.DefaultConfig()
	cfg.Dropout = 0
	m0, err := clipagiqa.New(c, tok, cfg)
	require.NoError(t, err)
	init, err := m0.Checkpoint(nil, 0, "")
	require.NoError(t, err)
	m0.Close()

	const epochs = 4
	cpuLoss, cpuParams := trainOn(t, torch.CPU, init, ds, epochs)
	devLoss, devParams := trainOn(t, d, init, ds, epochs)
	require.Len(t, devLoss, epochs)
	worstLoss := 0.0
	for i := range cpuLoss {
		worstLoss = math.Max(worstLoss, math.Abs(devLoss[i]-cpuLoss[i])/math.Abs(cpuLoss[i]))
	}
	worstParam := 0.0
	for i := range cpuParams {
		worstParam = math.Max(worstParam, relErr64(toF64(devParams[i]), toF64(cpuParams[i])))
	}
	t.Logf("REPORT training %d epochs on %d demo images, %s vs cpu: train loss %v vs %v (worst rel %.3g), parameters rel L2 %.3g; tolerances %.0e / %.0e",
		epochs, ds.Train.Len(), d, fmtLosses(devLoss), fmtLosses(cpuLoss), worstLoss, worstParam, trainLossRelTol, trainParamTol)
	assert.Less(t, worstLoss, trainLossRelTol)
	assert.Less(t, worstParam, trainParamTol)
	assert.Less(t, devLoss[epochs-1], devLoss[0], "the loss falls")
}

func fmtLosses(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'g', 5, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// cudaMemoryMiB is this process's GPU memory as nvidia-smi reports it (the
// caching allocator's reservation), or -1 when that cannot be read.
func cudaMemoryMiB() int {
	out, err := exec.Command("nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return -1
	}
	pid := strconv.Itoa(os.Getpid())
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) == 2 && strings.TrimSpace(f[0]) == pid {
			n, err := strconv.Atoi(strings.TrimSpace(f[1]))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func TestMemoryFlat(t *testing.T) {
	d := testDevice(t)
	m := officialModel(t, loadCLIP(t, d, torch.Float32))
	px, err := reffix.Pixels()
	require.NoError(t, err)
	step := func() {
		s := torch.NewScope().WithGrad(torch.InferenceMode)
		defer s.Close()
		m.Forward(s, s.FromFloat32(px.F32, px.Shape...), false)
		require.NoError(t, s.Err())
		require.NoError(t, torch.Synchronize(d))
	}
	for range 5 { // warm-up: the caching allocator reaches its working set
		step()
	}
	live, mem := torch.LiveTensors(), -1
	if isCUDA(d) {
		mem = cudaMemoryMiB()
	}
	for range 50 {
		step()
	}
	assert.Equal(t, live, torch.LiveTensors(), "LiveTensors grew over 50 scoring steps")
	if isCUDA(d) {
		after := cudaMemoryMiB()
		t.Logf("REPORT memory over 50 scoring steps on %s: LiveTensors %d → %d, GPU memory of this process %d → %d MiB (nvidia-smi)",
			d, live, torch.LiveTensors(), mem, after)
		if mem >= 0 && after >= 0 {
			assert.Equal(t, mem, after, "GPU memory grew")
		}
	} else {
		t.Logf("REPORT memory over 50 scoring steps on %s: LiveTensors %d → %d", d, live, torch.LiveTensors())
	}
}

// TestReportRuntime states what the checks ran against.
func TestReportRuntime(t *testing.T) {
	d := testDevice(t)
	name := "cpu"
	if isCUDA(d) {
		name = fmt.Sprintf("CUDA, %d device(s)", torch.CUDADeviceCount())
	}
	t.Logf("REPORT runtime: libtorch %s (shim %s), device %s (%s), fixtures %s", torch.TorchVersion(), torch.NativeShimVersion(),
		d, name, filepath.Clean(reffix.Dir()))
	require.NoError(t, torch.CheckRuntime())
}
