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
