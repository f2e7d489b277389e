package torch

import (
	"fmt"

	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

var toPT = map[DType]ptfile.DType{
	Float32: ptfile.Float32, Float16: ptfile.Float16, BFloat16: ptfile.BFloat16, Float64: ptfile.Float64,
	Int64: ptfile.Int64, Int32: ptfile.Int32, Int16: ptfile.Int16, Int8: ptfile.Int8, Uint8: ptfile.Uint8, Bool: ptfile.Bool,
}

func fromPTDType(d ptfile.DType) (DType, error) {
	for k, v := range toPT {
		if v == d {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unsupported dtype %v", d)
}

// FromRaw copies a raw checkpoint tensor into a libtorch CPU tensor.
func FromRaw(t *ptfile.Tensor) (*Tensor, error) {
	dt, err := fromPTDType(t.DType)
	if err != nil {
		return nil, err
	}
	return FromBytes(t.Data, dt, t.Shape, CPU)
}

// ToRaw copies a tensor to the host as a raw checkpoint tensor.
func ToRaw(t *Tensor) (*ptfile.Tensor, error) {
	dt := t.DType()
	pd, ok := toPT[dt]
	if !ok {
		return nil, fmt.Errorf("unsupported dtype %v", dt)
	}
	b, err := t.Bytes(dt)
	if err != nil {
		return nil, err
	}
	return ptfile.NewTensor(pd, t.Shape(), b)
}

// StateDictFromRaw converts named raw tensors into an owned StateDict.
func StateDictFromRaw(tensors map[string]*ptfile.Tensor, names []string) (*StateDict, error) {
	sd := NewStateDict()
	for _, n := range names {
		t, err := FromRaw(tensors[n])
		if err != nil {
			sd.Close()
			return nil, fmt.Errorf("tensor %s: %w", n, err)
		}
		sd.Set(n, t)
	}
	return sd, nil
}

// LoadStateDict reads a torch.save file (zip format) holding a dict of
// tensors, or a dict whose `state_dict` entry holds them. Other entries are
// skipped, even when they pickle Python classes that are not known here
// (optimizers, schedulers). fp16 tensors stay fp16; cast them as needed.
func LoadStateDict(path string) (*StateDict, error) {
	f, err := ptfile.Load(path)
	if err != nil {
		return nil, fmt.Errorf("load state dict: %w", err)
	}
	raw, names, err := ptfile.StateDict(f.Root)
	if err != nil {
		return nil, fmt.Errorf("load state dict %s: %w", path, err)
	}
	sd, err := StateDictFromRaw(raw, names)
	if err != nil {
		return nil, fmt.Errorf("load state dict %s: %w", path, err)
	}
	return sd, nil
}

// SaveStateDict writes the named tensors, in order, as a torch.save file that
// Python's torch.load reads back as a dict. The write is atomic.
func SaveStateDict(path string, names []string, tensors map[string]*Tensor) error {
	entries := make([]ptfile.NamedTensor, 0, len(names))
	for _, n := range names {
		t, ok := tensors[n]
		if !ok {
			return fmt.Errorf("save %s: no tensor named %s", path, n)
		}
		r, err := ToRaw(t)
		if err != nil {
			return fmt.Errorf("save %s: tensor %s: %w", path, n, err)
		}
		entries = append(entries, ptfile.NamedTensor{Name: n, Tensor: r})
	}
	if err := ptfile.SaveStateDict(path, entries); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
