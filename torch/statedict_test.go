package torch

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// py_tensors.pt was written by Python's torch.save (ptfile/testdata/gen/roundtrip.py);
// py_expected.json holds the values Python saw.
func TestLoadStateDictFromPython(t *testing.T) {
	var exp struct {
		Files map[string]struct {
			Tensors map[string]struct {
				DType  string    `json:"dtype"`
				Shape  []int64   `json:"shape"`
				Values []float64 `json:"values"`
			} `json:"tensors"`
		} `json:"files"`
	}
	b, err := os.ReadFile("ptfile/testdata/py_expected.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &exp))
	// The file nests its tensors under "tensors" (LoadStateDict wants them at
	// the top or under "state_dict"), so pick them out with ptfile.
	f, err := ptfile.Load("ptfile/testdata/py_tensors.pt")
	require.NoError(t, err)
	inner, err := ptfile.Get(f.Root, "tensors")
	require.NoError(t, err)
	raw, names, err := ptfile.StateDict(inner)
	require.NoError(t, err)
	sd, err := StateDictFromRaw(raw, names)
	require.NoError(t, err)
	defer sd.Close()
	_, err = LoadStateDict("ptfile/testdata/py_tensors.pt")
	require.ErrorContains(t, err, "no tensors", "nested tensors are not a state dict")
	want := exp.Files["py_tensors.pt"].Tensors
	require.NotEmpty(t, want)
	checked := 0
	for name, w := range want {
		got := sd.Get(name)
		require.NotNil(t, got, name)
		assert.Equal(t, w.DType, got.DType().String(), name)
		if len(w.Shape) > 0 {
			assert.Equal(t, w.Shape, got.Shape(), name)
		}
		if got.DType() == Bool || len(w.Values) == 0 {
			continue
		}
		v, err := got.Float64s() // fp16/bf16 upcast exactly
		require.NoError(t, err, name)
		require.Len(t, v, len(w.Values), name)
		for i := range v {
			assert.InDelta(t, w.Values[i], v[i], 1e-12*(1+abs(w.Values[i])), "%s[%d]", name, i)
		}
		checked++
	}
	assert.Greater(t, checked, 5)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.Randn(Float32, 3, 4)
	h := s.Cast(s.Randn(Float32, 5), Float16)
	ids := s.FromInt64([]int64{1, -2, 1 << 40}, 3)
	require.NoError(t, s.Err())
	path := filepath.Join(t.TempDir(), "sd.pt")
	names := []string{"w", "half", "ids"}
	require.NoError(t, SaveStateDict(path, names, map[string]*Tensor{"w": a, "half": h, "ids": ids}))
	sd, err := LoadStateDict(path)
	require.NoError(t, err)
	defer sd.Close()
	assert.Equal(t, names, sd.Names)
	for _, n := range names {
		orig := map[string]*Tensor{"w": a, "half": h, "ids": ids}[n]
		assert.Equal(t, orig.DType(), sd.Get(n).DType(), n)
		x, err := orig.Float64s()
		require.NoError(t, err)
		y, err := sd.Get(n).Float64s()
		require.NoError(t, err)
		assert.Equal(t, x, y, n)
	}
	// Python's torch.load reads what we wrote.
	if exec.Command("/usr/bin/python3", "-c", "import torch").Run() != nil {
		t.Log("python3-torch not installed: skipping the torch.load check")
		return
	}
	out, err := exec.Command("/usr/bin/python3", "-c",
		`import sys,torch; d=torch.load(sys.argv[1]); print(list(d.keys()), d["half"].dtype, d["ids"].tolist(), float(d["w"].sum()))`, path).CombinedOutput()
	require.NoError(t, err, string(out))
	wsum, err := s.Sum(a, false).Item()
	require.NoError(t, err)
	assert.Contains(t, string(out), "['w', 'half', 'ids'] torch.float16 [1, -2, 1099511627776]")
	fields := strings.Fields(strings.TrimSpace(string(out)))
	assert.InDelta(t, wsum, mustFloat(t, fields[len(fields)-1]), 1e-5)
}

func mustFloat(t *testing.T, s string) float64 {
	var f float64
	require.NoError(t, json.Unmarshal([]byte(s), &f))
	return f
}

func TestLoadStateDictErrors(t *testing.T) {
	dir := t.TempDir()
	trunc := filepath.Join(dir, "trunc.pt")
	full, err := os.ReadFile("../testdata/clip-agiqa-ref/prompt_learner/model.pth.tar-100")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(trunc, full[:len(full)/2], 0o644))
	text := filepath.Join(dir, "text.pt")
	require.NoError(t, os.WriteFile(text, []byte("hello world"), 0o644))
	for _, p := range []string{filepath.Join(dir, "missing.pt"), trunc, text} {
		_, err := LoadStateDict(p)
		require.Error(t, err, p)
		assert.Contains(t, err.Error(), p)
	}
	// An official Dassl checkpoint (pickles SGD/scheduler objects) loads its state_dict.
	sd, err := LoadStateDict("../testdata/clip-agiqa-ref/prompt_learner/model.pth.tar-100")
	require.NoError(t, err)
	defer sd.Close()
	assert.ElementsMatch(t, []string{"ctx", "token_prefix", "token_suffix"}, sd.Names)
	sd16, err := LoadStateDict("../testdata/clip-agiqa-ref/fp16_prec/prompt_learner/model.pth.tar-100")
	require.NoError(t, err)
	defer sd16.Close()
	assert.Equal(t, Float16, sd16.Get("ctx").DType())
}
