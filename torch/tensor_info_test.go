package torch

import (
	"reflect"
	"testing"
)

// TestTensorInfoErrors: metadata of a valid tensor is right; a nil or closed
// tensor gives an error from Info and sentinels (never CPU, never a real
// dtype, never one element) from the one-value accessors.
func TestTensorInfoErrors(t *testing.T) {
	x, err := FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	info, err := x.Info()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Shape: []int64{2, 3}, DType: Float32, Device: CPU}); !reflect.DeepEqual(info, want) {
		t.Fatalf("Info = %+v, want %+v", info, want)
	}
	if x.Numel() != 6 || x.Dim() != 2 {
		t.Fatalf("Numel %d Dim %d, want 6 2", x.Numel(), x.Dim())
	}
	x.Close()
	for name, bad := range map[string]*Tensor{"closed": x, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			if _, err := bad.Info(); err == nil {
				t.Error("Info: no error")
			}
			if s := bad.Shape(); s != nil {
				t.Errorf("Shape = %v, want nil", s)
			}
			if d := bad.DType(); d != InvalidDType {
				t.Errorf("DType = %v, want InvalidDType", d)
			}
			if d := bad.Device(); d != InvalidDevice || d == CPU {
				t.Errorf("Device = %v, want InvalidDevice", d)
			}
			if n := bad.Numel(); n != 0 {
				t.Errorf("Numel = %d, want 0", n)
			}
		})
	}
}

// Version follows PyTorch's Tensor._version: 0 when made, +1 for an
// in-place copy (python3-torch 1.13: 0 then 1); -1 for inference tensors
// (PyTorch refuses to read theirs) and for closed ones.
func TestTensorVersion(t *testing.T) {
	x, err := FromFloat32([]float32{1, 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	y, err := FromFloat32([]float32{3, 4}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	if v := x.Version(); v != 0 {
		t.Errorf("new tensor: version %d, want 0", v)
	}
	if err := x.CopyFrom(y); err != nil {
		t.Fatal(err)
	}
	if v := x.Version(); v != 1 {
		t.Errorf("after CopyFrom: version %d, want 1", v)
	}
	s := NewScope().WithGrad(InferenceMode)
	defer s.Close()
	if v := s.MulScalar(x, 2).Version(); v != -1 {
		t.Errorf("inference tensor: version %d, want -1", v)
	}
	z, err := FromFloat32([]float32{1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	z.Close()
	if v := z.Version(); v != -1 {
		t.Errorf("closed tensor: version %d, want -1", v)
	}
}
