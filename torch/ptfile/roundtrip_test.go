package ptfile

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// must unwraps a constructor result in test set-up code.
func must(tn *Tensor, err error) *Tensor {
	if err != nil {
		panic(err)
	}
	return tn
}

// sampleEntries covers every dtype, a 0-dim and an empty tensor, and one
// tensor listed twice (it must become one shared storage).
func sampleEntries(t *testing.T) []NamedTensor {
	f32 := []float32{-1.5, 0, 0.1, 3e-8, 65504, -7, 1e30, 2.5, 9, 10, 11, 12}
	shared := must(FromFloat32s(Float32, []int64{3, 4}, f32))
	return []NamedTensor{
		{"w.f32", shared},
		{"w.f16", must(FromFloat32s(Float16, []int64{2, 3}, f32[:6]))},
		{"w.bf16", must(FromFloat32s(BFloat16, []int64{6}, f32[:6]))},
		{"w.f64", must(NewTensor(Float64, []int64{2}, f64Bytes(math.Pi, -1e-300)))},
		{"n.i64", must(FromInt64s([]int64{3}, []int64{-1, 1 << 40, 7}))},
		{"n.i32", must(NewTensor(Int32, []int64{2}, []byte{0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0}))},
		{"n.i16", must(NewTensor(Int16, []int64{1}, []byte{0x00, 0x80}))},
		{"n.i8", must(NewTensor(Int8, []int64{2}, []byte{0x80, 0x7f}))},
		{"n.u8", must(NewTensor(Uint8, []int64{3}, []byte{0, 128, 255}))},
		{"n.bool", must(NewTensor(Bool, []int64{2, 1}, []byte{1, 0}))},
		{"scalar", must(FromInt64s(nil, []int64{224}))},
		{"empty", must(FromFloat32s(Float32, []int64{0, 5}, nil))},
		{"alias", shared},
	}
}

func f64Bytes(vs ...float64) []byte {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		bits := math.Float64bits(v)
		for j := 0; j < 8; j++ {
			b[8*i+j] = byte(bits >> (8 * j))
		}
	}
	return b
}

func requireSameTensors(t *testing.T, want []NamedTensor, got map[string]*Tensor, names []string) {
	t.Helper()
	require.Len(t, names, len(want))
	for i, e := range want {
		require.Equal(t, e.Name, names[i])
		g := got[e.Name]
		assert.Equal(t, e.Tensor.DType, g.DType, e.Name)
		assert.Equal(t, e.Tensor.Shape, g.Shape, e.Name)
		assert.Equal(t, ContiguousStrides(e.Tensor.Shape), g.Strides, e.Name)
		assert.Equal(t, e.Tensor.Data, g.Data, e.Name)
	}
}

func TestSaveStateDictRoundTrip(t *testing.T) {
	entries := sampleEntries(t)
	p := filepath.Join(t.TempDir(), "sd.pt")
	require.NoError(t, SaveStateDict(p, entries))
	f, err := Load(p)
	require.NoError(t, err)
	assert.Equal(t, "3", f.Version)
	assert.Equal(t, "archive/", f.Prefix)
	assert.Equal(t, KindOrderedDict, f.Root.(*Dict).Kind)
	sd, names, err := StateDict(f.Root)
	require.NoError(t, err)
	requireSameTensors(t, entries, sd, names)
	// The aliased tensor was written once and comes back sharing memory.
	assert.Equal(t, &sd["w.f32"].Data[0], &sd["alias"].Data[0])

	// Save with nil meta is the same flat layout, byte for byte.
	p2 := filepath.Join(t.TempDir(), "sd2.pt")
	require.NoError(t, Save(p2, entries, nil))
	b1, _ := os.ReadFile(p)
	b2, _ := os.ReadFile(p2)
	assert.Equal(t, b1, b2)
}

func TestSaveCheckpointRoundTrip(t *testing.T) {
	entries := sampleEntries(t)[:3]
	meta := map[string]any{
		"epoch":      100,
		"lr":         4.934396342684e-07,
		"classnames": []string{"terrible", "bad", "poor"},
		"prec":       "fp16",
		"val_result": nil,
		"flags":      []any{true, false, int64(-3), 2.5},
		"big":        new(big.Int).Lsh(big.NewInt(1), 70),
		"neg":        int64(-1) << 40,
		"nested":     map[string]any{"b": 2, "a": "x"},
		"raw":        []byte{0, 0xc8, 0xff},
		"momentum":   entries[1].Tensor,
	}
	p := filepath.Join(t.TempDir(), "ckpt.pt")
	require.NoError(t, Save(p, entries, meta))
	f, err := Load(p)
	require.NoError(t, err)
	root := f.Root.(*Dict)
	assert.Equal(t, KindDict, root.Kind)
	assert.Equal(t, []any{"state_dict", "big", "classnames", "epoch", "flags", "lr", "momentum", "neg", "nested", "prec", "raw", "val_result"}, root.Keys)
	sd, names, err := StateDict(f.Root)
	require.NoError(t, err)
	requireSameTensors(t, entries, sd, names)

	epoch, err := GetInt(f.Root, "epoch")
	require.NoError(t, err)
	assert.Equal(t, int64(100), epoch)
	lr, err := GetFloat(f.Root, "lr")
	require.NoError(t, err)
	assert.Equal(t, 4.934396342684e-07, lr)
	assert.Equal(t, []any{"terrible", "bad", "poor"}, mustGet(t, f.Root, "classnames").(*List).Items)
	assert.Equal(t, []any{true, false, int64(-3), 2.5}, mustGet(t, f.Root, "flags").(*List).Items)
	assert.Equal(t, 0, meta["big"].(*big.Int).Cmp(mustGet(t, f.Root, "big").(*big.Int)))
	assert.Equal(t, int64(-1)<<40, mustGet(t, f.Root, "neg"))
	assert.Equal(t, []any{"a", "b"}, mustGet(t, f.Root, "nested").(*Dict).Keys)
	assert.Equal(t, []byte{0, 0xc8, 0xff}, mustGet(t, f.Root, "raw"))
	assert.Nil(t, mustGet(t, f.Root, "val_result"))
	s, err := GetString(f.Root, "prec")
	require.NoError(t, err)
	assert.Equal(t, "fp16", s)
	// The momentum tensor is the state-dict tensor: one storage.
	mb, err := GetTensor(f.Root, "momentum")
	require.NoError(t, err)
	assert.Equal(t, &sd["w.f16"].Data[0], &mb.Data[0])
}

func TestWriteLayout(t *testing.T) {
	var buf bytes.Buffer
	d := NewDict(KindOrderedDict)
	for _, e := range sampleEntries(t) {
		d.Set(e.Name, e.Tensor)
	}
	require.NoError(t, Write(&buf, d))
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		assert.Equal(t, zip.Store, f.Method, f.Name)
		off, err := f.DataOffset()
		require.NoError(t, err)
		assert.Zero(t, off%64, "%s data at offset %d", f.Name, off)
	}
	want := []string{"archive/data.pkl", "archive/byteorder"}
	for i := 0; i < 12; i++ { // 13 entries, one aliased
		want = append(want, "archive/data/"+strconv.Itoa(i))
	}
	want = append(want, "archive/version")
	assert.Equal(t, want, names)
	rc, err := zr.File[len(zr.File)-1].Open()
	require.NoError(t, err)
	v := make([]byte, 8)
	n, _ := rc.Read(v)
	assert.Equal(t, "3\n", string(v[:n]))
}

func TestSaveErrorsLeaveTargetUntouched(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keep.pt")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o644))
	good := sampleEntries(t)[0].Tensor
	bad := &Tensor{DType: Float32, Shape: []int64{2}, Data: []byte{1, 2, 3}}
	tests := []struct {
		name string
		save func() error
		msg  string
	}{
		{"nil tensor", func() error { return SaveStateDict(p, []NamedTensor{{"a", nil}}) }, "nil"},
		{"duplicate", func() error { return SaveStateDict(p, []NamedTensor{{"a", good}, {"a", good}}) }, "duplicate"},
		{"bad data length", func() error { return SaveStateDict(p, []NamedTensor{{"a", bad}}) }, "3 data bytes"},
		{"bad dtype", func() error {
			return SaveStateDict(p, []NamedTensor{{"a", &Tensor{DType: DType(99), Shape: []int64{1}, Data: []byte{0}}}})
		}, "unsupported dtype"},
		{"meta type", func() error { return SaveCheckpoint(p, nil, map[string]any{"x": struct{}{}}) }, "cannot pickle"},
		{"meta state_dict", func() error { return SaveCheckpoint(p, nil, map[string]any{"state_dict": 1}) }, "state_dict"},
		{"bad utf8", func() error { return SaveCheckpoint(p, nil, map[string]any{"x": "\xff"}) }, "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.save()
			require.Error(t, err)
			assert.Contains(t, err.Error(), p)
			assert.Contains(t, err.Error(), tc.msg)
			b, _ := os.ReadFile(p)
			assert.Equal(t, "old", string(b))
		})
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 1)

	err = SaveStateDict(filepath.Join(dir, "no", "such", "dir.pt"), []NamedTensor{{"a", good}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no/such/dir.pt")

	// A cyclic tree is an error, not a hang.
	cyc := &List{}
	cyc.Items = append(cyc.Items, cyc)
	require.Error(t, SaveValue(filepath.Join(dir, "cyc.pt"), cyc))
}

// TestReadLoadsOwnFiles re-reads Go-written files from Read(io.ReaderAt).
func TestReadFromReaderAt(t *testing.T) {
	var buf bytes.Buffer
	d := NewDict(KindOrderedDict)
	e := sampleEntries(t)[0]
	d.Set(e.Name, e.Tensor)
	require.NoError(t, Write(&buf, d))
	f, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)
	sd, _, err := StateDict(f.Root)
	require.NoError(t, err)
	assert.Equal(t, e.Tensor.Data, sd[e.Name].Data)
}

const pythonPath = "/usr/bin/python3"

// TestPythonReadsSavedFiles is optional: it runs only where Debian's
// python3-torch is installed and checks that torch.load (and
// load_state_dict) accept what Save writes.
func TestPythonReadsSavedFiles(t *testing.T) {
	if err := exec.Command(pythonPath, "-c", "import torch").Run(); err != nil {
		t.Skip("python3 with torch not available")
	}
	dir := t.TempDir()
	entries := sampleEntries(t)
	ck := filepath.Join(dir, "ckpt.pt")
	meta := map[string]any{"epoch": 7, "lr": 0.002, "names": []string{"a", "b"}, "big": int64(1) << 40}
	require.NoError(t, SaveCheckpoint(ck, entries, meta))

	lin := filepath.Join(dir, "linear.pt")
	w := must(FromFloat32s(Float32, []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}))
	b := must(FromFloat32s(Float32, []int64{2}, []float32{-1, 1}))
	require.NoError(t, SaveStateDict(lin, []NamedTensor{{"weight", w}, {"bias", b}}))

	script := `
import json, sys, collections, torch
d = torch.load(sys.argv[1])
out = {"type": type(d).__name__, "keys": list(d), "sd_type": type(d["state_dict"]).__name__, "tensors": {}}
for k, v in d["state_dict"].items():
    vals = v.reshape(-1).tolist()
    if v.dtype == torch.bool: vals = [int(x) for x in vals]
    if v.dtype == torch.float64: vals = [x.hex() for x in vals]
    out["tensors"][k] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "values": vals}
out["alias_shares_storage"] = d["state_dict"]["alias"].data_ptr() == d["state_dict"]["w.f32"].data_ptr()
out["meta"] = {k: d[k] for k in d if k != "state_dict"}
lin = torch.nn.Linear(3, 2)
sd = torch.load(sys.argv[2])
out["lin_type"] = type(sd).__name__
lin.load_state_dict(sd)
out["lin"] = lin(torch.tensor([[1.0, 0.0, -1.0]])).reshape(-1).tolist()
print(json.dumps(out))
`
	cmd := exec.Command(pythonPath, "-c", script, ck, lin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var got struct {
		Type    string   `json:"type"`
		Keys    []string `json:"keys"`
		SDType  string   `json:"sd_type"`
		Tensors map[string]struct {
			DType  string          `json:"dtype"`
			Shape  []int64         `json:"shape"`
			Values json.RawMessage `json:"values"`
		} `json:"tensors"`
		Alias   bool           `json:"alias_shares_storage"`
		Meta    map[string]any `json:"meta"`
		LinType string         `json:"lin_type"`
		Lin     []float64      `json:"lin"`
	}
	require.NoError(t, json.Unmarshal(outb, &got))
	assert.Equal(t, "dict", got.Type)
	assert.Equal(t, []string{"state_dict", "big", "epoch", "lr", "names"}, got.Keys)
	assert.Equal(t, "OrderedDict", got.SDType)
	assert.True(t, got.Alias)
	assert.Equal(t, map[string]any{"epoch": 7.0, "lr": 0.002, "names": []any{"a", "b"}, "big": float64(int64(1) << 40)}, got.Meta)
	assert.Equal(t, "OrderedDict", got.LinType)
	// weight·[1,0,-1] + bias = [1-3-1, 4-6+1]
	assert.Equal(t, []float64{-3, -1}, got.Lin)
	for _, e := range entries {
		g, ok := got.Tensors[e.Name]
		require.True(t, ok, e.Name)
		assert.Equal(t, e.Tensor.DType.String(), g.DType, e.Name)
		assert.Equal(t, len(e.Tensor.Shape), len(g.Shape), e.Name)
		if len(e.Tensor.Shape) > 0 {
			assert.Equal(t, e.Tensor.Shape, g.Shape, e.Name)
		}
		switch {
		case e.Tensor.DType == Float64:
			var hexes []string
			require.NoError(t, json.Unmarshal(g.Values, &hexes))
			assert.Equal(t, []string{"0x1.921fb54442d18p+1", "-0x1.56e1fc2f8f359p-997"}, hexes)
		case e.Tensor.DType.IsFloat():
			var vals []float64
			require.NoError(t, json.Unmarshal(g.Values, &vals))
			want, err := e.Tensor.Float32s()
			require.NoError(t, err)
			requireExactF32(t, vals, want, e.Name)
		default:
			var vals []int64
			require.NoError(t, json.Unmarshal(g.Values, &vals))
			want, err := e.Tensor.Int64s()
			require.NoError(t, err)
			assert.Equal(t, want, vals, e.Name)
		}
	}
}
