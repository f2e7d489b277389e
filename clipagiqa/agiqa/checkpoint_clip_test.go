package agiqa

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

var tinyShapes = map[string][]int64{"prompt_learner.ctx": {4, 8}, "regression.1.weight": {3, 8},
	"regression.1.bias": {3}, "regression.4.weight": {1, 3}, "regression.4.bias": {1}}

func zeroTensor(shape ...int64) *ptfile.Tensor {
	n := int64(1)
	strides := make([]int64, len(shape))
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = n
		n *= shape[i]
	}
	return &ptfile.Tensor{DType: ptfile.Float32, Shape: shape, Strides: strides, Data: make([]byte, 4*n)}
}

// TestReadCheckpointCLIPConfig: a "clip" entry that is not JSON is an error
// naming it, while a missing one (older files) or a valid one loads.
func TestReadCheckpointCLIPConfig(t *testing.T) {
	write := func(t *testing.T, clipJSON *string) string {
		var sd []ptfile.NamedTensor
		for _, n := range paramNames {
			sd = append(sd, ptfile.NamedTensor{Name: n, Tensor: zeroTensor(tinyShapes[n]...)})
		}
		meta := map[string]any{"format": FormatVersion, "config": "{}", "epoch": int64(1), "extra": ""}
		if clipJSON != nil {
			meta["clip"] = *clipJSON
		}
		path := filepath.Join(t.TempDir(), ModelFile)
		if err := ptfile.SaveCheckpoint(path, sd, meta); err != nil {
			t.Fatal(err)
		}
		return path
	}
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name    string
		clip    *string
		wantErr string
	}{
		{"missing", nil, ""},
		{"valid", str(`{"embed_dim":8}`), ""},
		{"truncated", str(`{"embed_dim":`), "clip config"},
		{"wrong type", str(`[1,2]`), "clip config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, tc.clip)
			_, err := ReadCheckpoint(path, 0)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ReadCheckpoint: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path)):
				t.Fatalf("ReadCheckpoint error %v, want one naming %s and %q", err, path, tc.wantErr)
			}
		})
	}
}

// sgdStateDict is a torch.optim.SGD state dict with one group over n params.
func sgdStateDict(n int, lr, momentum, decay, initial float64) *ptfile.Dict {
	g := ptfile.NewDict(ptfile.KindDict)
	idx := make([]any, n)
	for i := range idx {
		idx[i] = int64(i)
	}
	for _, kv := range []struct {
		k string
		v any
	}{{"lr", lr}, {"momentum", momentum}, {"dampening", 0.0}, {"weight_decay", decay}, {"nesterov", false},
		{"initial_lr", initial}, {"params", idx}} {
		g.Set(kv.k, kv.v)
	}
	sd := ptfile.NewDict(ptfile.KindDict)
	sd.Set("state", ptfile.NewDict(ptfile.KindDict))
	sd.Set("param_groups", []any{g})
	return sd
}

// TestExportOfficialHyperParameters: the exported optimizer groups carry the
// run's momentum, weight decay and initial lr (from the saved optimizer state,
// else the schedule in Extra, else the defaults), and lr as given; the
// optimizer state also survives our Save/Read.
func TestExportOfficialHyperParameters(t *testing.T) {
	params := map[string]*ptfile.Tensor{}
	for n, s := range tinyShapes {
		params[n] = zeroTensor(s...)
	}
	withOpt := &Checkpoint{Epoch: 3, Params: params, Momentum: map[string]*ptfile.Tensor{}, Optimizer: map[string]*ptfile.Dict{
		"prompt_learner": sgdStateDict(1, 0.1, 0.5, 1e-3, 0.01), "regression": sgdStateDict(4, 0.1, 0.5, 1e-3, 0.01)}}
	// Our file keeps the optimizer state.
	dir := t.TempDir()
	if err := withOpt.Save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := ReadCheckpoint(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if back.Optimizer == nil {
		t.Fatal("Optimizer state lost by Save/ReadCheckpoint")
	}
	withExtra := &Checkpoint{Epoch: 3, Params: params, Momentum: map[string]*ptfile.Tensor{},
		Extra: `{"lr":0.03,"has_schedule":true,"momentum":0.7,"weight_decay":0.002}`}
	old := &Checkpoint{Epoch: 3, Params: params, Momentum: map[string]*ptfile.Tensor{}}
	for _, tc := range []struct {
		name                     string
		ck                       *Checkpoint
		momentum, decay, initial float64
	}{
		{"optimizer state", back, 0.5, 1e-3, 0.01},
		{"schedule in extra", withExtra, 0.7, 0.002, 0.03},
		{"defaults", old, 0.9, 5e-4, 0.002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			if err := tc.ck.ExportOfficial(out, nil, nil, 0.0042); err != nil {
				t.Fatal(err)
			}
			for _, sub := range []string{"prompt_learner", "regression"} {
				f, err := ptfile.Load(filepath.Join(out, sub, "model.pth.tar-3"))
				if err != nil {
					t.Fatal(err)
				}
				v, err := ptfile.Get(f.Root, "optimizer")
				if err != nil {
					t.Fatal(err)
				}
				g, err := singleGroup(v.(*ptfile.Dict))
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]any{}
				for _, k := range []string{"lr", "momentum", "weight_decay", "initial_lr"} {
					got[k], _ = g.Get(k)
				}
				want := map[string]any{"lr": 0.0042, "momentum": tc.momentum, "weight_decay": tc.decay, "initial_lr": tc.initial}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s param_groups[0] = %v, want %v", sub, got, want)
				}
			}
		})
	}
}
