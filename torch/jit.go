package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/clipagiqa/clipagiqa/internal/regularfile"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
)

// StateDict is a set of named tensors in checkpoint order. It owns its tensors.
type StateDict struct {
	Names   []string
	Tensors map[string]*Tensor
}

// NewStateDict returns an empty state dict.
func NewStateDict() *StateDict { return &StateDict{Tensors: map[string]*Tensor{}} }

// Set adds or replaces a tensor, taking ownership of it.
func (d *StateDict) Set(name string, t *Tensor) {
	if old, ok := d.Tensors[name]; ok {
		if old != t {
			old.Close()
		}
	} else {
		d.Names = append(d.Names, name)
	}
	d.Tensors[name] = t
}

// Get returns the named tensor or nil.
func (d *StateDict) Get(name string) *Tensor { return d.Tensors[name] }

// Close frees every tensor.
func (d *StateDict) Close() {
	if d == nil {
		return
	}
	for _, t := range d.Tensors {
		t.Close()
	}
	d.Tensors = map[string]*Tensor{}
	d.Names = nil
}

// Module is a loaded TorchScript module, kept for running its own methods
// (used to check our models against traced graphs).
type Module struct {
	h    unsafe.Pointer
	path string
}

// statReadable refuses what libtorch cannot read or would block on (a FIFO),
// and verifies every record's CRC-32, which libtorch's zip reader skips.
func statReadable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	if err := regularfile.Check(path); err != nil {
		return err
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	return ptfile.VerifyArchive(path)
}

// LoadModule loads a TorchScript archive onto the CPU.
func LoadModule(path string) (*Module, error) {
	if err := CheckRuntime(); err != nil {
		return nil, err
	}
	if err := statReadable(path); err != nil {
		return nil, fmt.Errorf("load torchscript: %w", err)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h C.ct_module
	if err := cErr(C.ct_jit_load(cpath, &h)); err != nil {
		return nil, fmt.Errorf("load torchscript %s: not a readable TorchScript archive: %w", path, err)
	}
	return &Module{h: unsafe.Pointer(h), path: path}, nil
}

// handle is the module's libtorch handle, read atomically (Close swaps it
// out), or an error once closed. Close must still not run while a method
// does: it frees what the method uses.
func (m *Module) handle() (C.ct_module, error) {
	if m == nil {
		return nil, fmt.Errorf("module is nil")
	}
	h := atomic.LoadPointer(&m.h)
	if h == nil {
		return nil, fmt.Errorf("module is closed")
	}
	return C.ct_module(h), nil
}

// Close frees the module; closing twice is harmless.
func (m *Module) Close() {
	if m == nil {
		return
	}
	if h := atomic.SwapPointer(&m.h, nil); h != nil {
		C.ct_module_free(C.ct_module(h))
	}
}

// NamedTensors returns the module's parameters and buffers by dotted name.
func (m *Module) NamedTensors() (*StateDict, error) {
	h, err := m.handle()
	if err != nil {
		return nil, err
	}
	var names **C.char
	var ts *C.ct_tensor
	var n C.int64_t
	if err := cErr(C.ct_module_named_tensors(h, &names, &ts, &n)); err != nil {
		return nil, fmt.Errorf("tensors of %s: %w", m.path, err)
	}
	defer C.free(unsafe.Pointer(names))
	defer C.free(unsafe.Pointer(ts))
	nameSlice := unsafe.Slice(names, int(n))
	tSlice := unsafe.Slice(ts, int(n))
	sd := NewStateDict()
	for i := range nameSlice {
		name := C.GoString(nameSlice[i])
		C.ct_free_string(nameSlice[i])
		sd.Set(name, wrap(tSlice[i]))
	}
	return sd, nil
}

// RunMethod runs one of the module's methods (e.g. "encode_image") on tensor
// inputs without grad and returns its tensor result, owned by the caller.
func (m *Module) RunMethod(method string, inputs ...*Tensor) (*Tensor, error) {
	mh, err := m.handle()
	if err != nil {
		return nil, err
	}
	hs := make([]C.ct_tensor, len(inputs))
	for i, t := range inputs {
		h, err := t.handle()
		if err != nil {
			return nil, fmt.Errorf("%s input %d: %w", method, i, err)
		}
		hs[i] = h
	}
	cm := C.CString(method)
	defer C.free(unsafe.Pointer(cm))
	var p *C.ct_tensor
	if len(hs) > 0 {
		p = &hs[0]
	}
	var out C.ct_tensor
	if err := cErr(C.ct_module_run_method(mh, cm, p, C.int64_t(len(hs)), &out)); err != nil {
		return nil, fmt.Errorf("%s.%s(%s): %w", m.path, method, describe(inputs), err)
	}
	return wrap(out), nil
}

// LoadTorchScript reads a TorchScript archive (such as OpenAI's released CLIP
// .pt files) and returns its parameters and buffers by dotted name.
func LoadTorchScript(path string) (*StateDict, error) {
	m, err := LoadModule(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.NamedTensors()
}
