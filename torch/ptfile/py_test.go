package ptfile

import (
	"encoding/json"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fixtures written by testdata/gen/roundtrip.py with torch 1.13.

type pyTensor struct {
	DType  string    `json:"dtype"`
	Shape  []int64   `json:"shape"`
	Values []float64 `json:"values"`
}

type pyExpected struct {
	Files struct {
		Tensors struct {
			Tensors map[string]pyTensor `json:"tensors"`
			Order   []string            `json:"order"`
			Plain   struct {
				Big     string `json:"big"`
				Neg     int64  `json:"neg"`
				BytesJS []int  `json:"bytes"`
				Unicode string `json:"unicode"`
			} `json:"plain"`
		} `json:"py_tensors.pt"`
		Checkpoint struct {
			StateDict      map[string]pyTensor `json:"state_dict"`
			Order          []string            `json:"order"`
			Epoch          int64               `json:"epoch"`
			LR             float64             `json:"lr"`
			Momentum       map[string]pyTensor `json:"momentum_buffers"`
			SuccessorClass string              `json:"successor_class"`
			SuccessorTMax  float64             `json:"successor_T_max"`
		} `json:"py_checkpoint.pt"`
		Proto4 struct {
			W pyTensor `json:"w"`
			H pyTensor `json:"h"`
			N int64    `json:"n"`
		} `json:"py_proto4.pt"`
		Script struct {
			StateDict map[string]pyTensor `json:"state_dict"`
			Order     []string            `json:"order"`
		} `json:"py_script.pt"`
	} `json:"files"`
}

func loadPyExpected(t *testing.T) *pyExpected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "py_expected.json"))
	require.NoError(t, err)
	var e pyExpected
	require.NoError(t, json.Unmarshal(b, &e))
	return &e
}

// checkPyTensor compares a tensor with Python's dtype, shape and exact
// values (floats are compared after rounding to the tensor's type, which is
// exact because Python printed them from that type).
func checkPyTensor(t *testing.T, want pyTensor, got *Tensor, what string) {
	t.Helper()
	require.NotNil(t, got, what)
	require.Equal(t, want.DType, got.DType.String(), what)
	require.Equal(t, want.Shape, got.Shape, what)
	require.Equal(t, ContiguousStrides(want.Shape), got.Strides, what)
	require.Len(t, got.Data, len(want.Values)*got.DType.Size(), what)
	if got.DType.IsFloat() {
		if got.DType == Float64 {
			for i, w := range want.Values {
				g := math.Float64frombits(leUint64(got.Data[8*i:]))
				require.Equal(t, w, g, "%s[%d]", what, i)
			}
			return
		}
		v, err := got.Float32s()
		require.NoError(t, err)
		requireExactF32(t, want.Values, v, what)
		return
	}
	v, err := got.Int64s()
	require.NoError(t, err)
	for i, w := range want.Values {
		require.Equal(t, int64(w), v[i], "%s[%d]", what, i)
	}
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func loadTestdata(t *testing.T, name string) *File {
	t.Helper()
	f, err := Load(filepath.Join("testdata", name))
	require.NoError(t, err)
	return f
}

func TestPyTensorsAllDTypesAndViews(t *testing.T) {
	exp := loadPyExpected(t).Files.Tensors
	f := loadTestdata(t, "py_tensors.pt")
	assert.Equal(t, "3", f.Version)
	sd, names, err := StateDict(mustGet(t, f.Root, "tensors"))
	require.NoError(t, err)
	assert.Equal(t, exp.Order, names)
	for _, n := range names {
		checkPyTensor(t, exp.Tensors[n], sd[n], n)
	}
	// "sliced" is a view into "grid": same storage, materialised separately.
	gridVals, _ := sd["grid"].Float32s()
	sliced, _ := sd["sliced"].Float32s()
	for r := 0; r < 2; r++ {
		for c := 0; c < 3; c++ {
			assert.Equal(t, gridVals[(1+r)*6+2+c], sliced[r*3+c])
		}
	}
	d, err := Get(f.Root, "tensors")
	require.NoError(t, err)
	assert.Equal(t, KindOrderedDict, d.(*Dict).Kind)

	// Plain Python values.
	plain := mustGet(t, f.Root, "plain")
	l := mustGet(t, plain, "list").(*List)
	assert.Equal(t, []any{int64(1), 2.5, "x", nil, true}, l.Items)
	assert.Equal(t, Tuple{int64(1), Tuple{int64(2), int64(3)}}, mustGet(t, plain, "tuple"))
	bigWant, ok := new(big.Int).SetString(exp.Plain.Big, 10)
	require.True(t, ok)
	bigGot, ok := mustGet(t, plain, "big").(*big.Int)
	require.True(t, ok)
	assert.Equal(t, 0, bigWant.Cmp(bigGot))
	assert.Equal(t, exp.Plain.Neg, mustGet(t, plain, "neg"))
	var wantBytes []byte
	for _, b := range exp.Plain.BytesJS {
		wantBytes = append(wantBytes, byte(b))
	}
	assert.Equal(t, wantBytes, mustGet(t, plain, "bytes"))
	s, err := GetString(plain, "unicode")
	require.NoError(t, err)
	assert.Equal(t, exp.Plain.Unicode, s)
}

func mustGet(t *testing.T, v any, path ...any) any {
	t.Helper()
	x, err := Get(v, path...)
	require.NoError(t, err)
	return x
}

func TestPyCheckpoint(t *testing.T) {
	exp := loadPyExpected(t).Files.Checkpoint
	f := loadTestdata(t, "py_checkpoint.pt")
	sd, names, err := StateDict(f.Root)
	require.NoError(t, err)
	assert.Equal(t, exp.Order, names)
	for _, n := range names {
		checkPyTensor(t, exp.StateDict[n], sd[n], n)
	}
	// module.state_dict() carries _metadata as an OrderedDict attribute.
	md, err := Get(f.Root, "state_dict", "_metadata")
	require.NoError(t, err)
	assert.IsType(t, &Dict{}, md)

	epoch, err := GetInt(f.Root, "epoch")
	require.NoError(t, err)
	assert.Equal(t, exp.Epoch, epoch)
	lr, err := GetFloat(f.Root, "optimizer", "param_groups", 0, "lr")
	require.NoError(t, err)
	assert.Equal(t, exp.LR, lr)
	require.Len(t, exp.Momentum, 4)
	for k, want := range exp.Momentum {
		var idx int
		require.NoError(t, json.Unmarshal([]byte(k), &idx))
		mb, err := GetTensor(f.Root, "optimizer", "state", idx, "momentum_buffer")
		require.NoError(t, err)
		checkPyTensor(t, want, mb, "momentum "+k)
	}
	succ := mustGet(t, f.Root, "scheduler", "successor")
	require.IsType(t, &Object{}, succ)
	assert.Equal(t, exp.SuccessorClass, succ.(*Object).Class.String())
	tmax, err := GetFloat(succ, "T_max")
	require.NoError(t, err)
	assert.Equal(t, exp.SuccessorTMax, tmax)
	// The live SGD inside pickles its Parameters; they share storage with
	// the state dict, so their values match.
	p0, err := GetTensor(succ, "optimizer", "param_groups", 0, "params", 0)
	require.NoError(t, err)
	checkPyTensor(t, exp.StateDict[names[0]], p0, "live param 0")
}

func TestPyProtocol4(t *testing.T) {
	exp := loadPyExpected(t).Files.Proto4
	f := loadTestdata(t, "py_proto4.pt")
	checkPyTensor(t, exp.W, mustGet(t, f.Root, "w").(*Tensor), "w")
	checkPyTensor(t, exp.H, mustGet(t, f.Root, "h").(*Tensor), "h")
	n, err := GetInt(f.Root, "n")
	require.NoError(t, err)
	assert.Equal(t, exp.N, n)
	_, names, err := StateDict(f.Root)
	require.NoError(t, err)
	assert.Equal(t, []string{"w", "h"}, names) // the int entry is skipped
}

func TestPyTorchScript(t *testing.T) {
	exp := loadPyExpected(t).Files.Script
	f := loadTestdata(t, "py_script.pt")
	assert.True(t, f.TorchScript)
	tensors, names, err := ModuleTensors(f.Root)
	require.NoError(t, err)
	assert.Equal(t, exp.Order, names)
	for _, n := range names {
		checkPyTensor(t, exp.StateDict[n], tensors[n], n)
	}
}

// TestTorchScriptWithoutConstants drops constants.pkl and code/ from an
// archive: only data.pkl is needed.
func TestTorchScriptWithoutConstants(t *testing.T) {
	exp := loadPyExpected(t).Files.Script
	src := filepath.Join("testdata", "py_script.pt")
	out := filepath.Join(t.TempDir(), "stripped.pt")
	rewriteZip(t, src, out, func(name string) bool {
		base := filepath.Base(name)
		return base != "constants.pkl" && !strings.Contains(name, "/code/") && !strings.Contains(name, "/constants/")
	})
	f, err := Load(out)
	require.NoError(t, err)
	assert.False(t, f.TorchScript)
	_, names, err := ModuleTensors(f.Root)
	require.NoError(t, err)
	assert.Equal(t, exp.Order, names)
}
