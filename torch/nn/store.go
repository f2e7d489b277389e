package nn

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/clipagiqa/clipagiqa/torch"
)

// Kind says whether a stored tensor is a parameter or a buffer.
type Kind int

// Kinds of stored tensors.
const (
	Parameter Kind = iota // learnable; yielded by Parameters and, unless frozen, Trainable
	Buffer                // state that is saved but not learned (BatchNorm running stats)
)

func (k Kind) String() string {
	if k == Buffer {
		return "buffer"
	}
	return "parameter"
}

type entry struct {
	name      string
	t         *torch.Tensor
	kind      Kind
	trainable bool
	optional  bool // LoadStateDict tolerates its absence (keeps the current value)
}

// Store owns the named parameters and buffers of a model, as a PyTorch
// nn.Module tree does: every tensor has its dotted state_dict path
// ("visual.layer1.0.bn1.running_mean"), names keep registration order (the
// order of named_parameters and state_dict when modules register their own
// tensors before their children's), and each sub-tree has a train/eval mode.
//
// Registration errors (a duplicate name, a failed init) are sticky, as a
// torch.Scope's: the failing call returns nil and Err reports the first one.
// A Store is not safe for concurrent mutation; Close frees every tensor.
type Store struct {
	entries  []*entry
	index    map[string]*entry
	training bool
	modes    map[string]bool // sub-tree prefix → training, set by Path.Train
	pinned   map[string]bool // sub-tree prefixes kept in eval mode
	device   torch.Device
	err      error
	// batchNormSync, when set by ConvertSyncBatchNorm, computes BatchNorm2d's
	// training-mode statistics over a process group.
	batchNormSync BatchNormSync
}

// NewStore returns an empty store in training mode (as a fresh nn.Module)
// whose new tensors live on the CPU.
func NewStore() *Store { return NewStoreOn(torch.CPU) }

// NewStoreOn is NewStore with new tensors created on device d.
func NewStoreOn(d torch.Device) *Store {
	return &Store{index: map[string]*entry{}, training: true, modes: map[string]bool{}, pinned: map[string]bool{}, device: d}
}

// Device is where the store creates new tensors.
func (s *Store) Device() torch.Device { return s.device }

// Root is the path of the whole tree (empty prefix).
func (s *Store) Root() Path { return Path{store: s} }

// Sub is Root().Sub(name).
func (s *Store) Sub(name string) Path { return s.Root().Sub(name) }

// Err is the first registration error.
func (s *Store) Err() error { return s.err }

func (s *Store) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// Close frees every stored tensor; the store is empty afterwards.
func (s *Store) Close() {
	for _, e := range s.entries {
		e.t.Close()
	}
	s.entries = nil
	s.index = map[string]*entry{}
}

// Len is the number of stored tensors (parameters and buffers).
func (s *Store) Len() int { return len(s.entries) }

// Names lists every stored name in registration order: the keys of StateDict.
func (s *Store) Names() []string { return s.Root().Names() }

// Get returns the named tensor (owned by the store) or nil.
func (s *Store) Get(name string) *torch.Tensor {
	if e, ok := s.index[name]; ok {
		return e.t
	}
	return nil
}

// KindOf reports whether name is a parameter or a buffer; ok is false when
// the store has no such name.
func (s *Store) KindOf(name string) (k Kind, ok bool) {
	e, ok := s.index[name]
	if !ok {
		return 0, false
	}
	return e.kind, true
}

// Parameters returns every parameter, trainable or frozen, in registration
// order (PyTorch's named_parameters()).
func (s *Store) Parameters() []NamedParam { return s.Root().Parameters() }

// Trainable returns the parameters that are not frozen, in registration
// order: what an optimizer updates.
func (s *Store) Trainable() []NamedParam { return s.Root().Trainable() }

// Buffers returns every buffer in registration order (named_buffers()).
func (s *Store) Buffers() []NamedParam { return s.Root().Buffers() }

// Train sets the mode of the whole tree, like module.train(on): sub-tree
// modes set by Path.Train are cleared; pinned sub-trees stay in eval mode.
func (s *Store) Train(on bool) { s.Root().Train(on) }

// Training is the mode of the root.
func (s *Store) Training() bool { return s.Root().Training() }

// under reports whether name lies in the sub-tree at prefix.
func under(name, prefix string) bool {
	return prefix == "" || name == prefix || strings.HasPrefix(name, prefix+".")
}

func (s *Store) trainingAt(prefix string) bool {
	for p := range s.pinned {
		if under(prefix, p) {
			return false
		}
	}
	mode, best := s.training, -1
	for p, on := range s.modes {
		if under(prefix, p) && len(p) > best {
			mode, best = on, len(p)
		}
	}
	return mode
}

func (s *Store) add(name string, t *torch.Tensor, kind Kind) *torch.Tensor {
	if s.err != nil {
		t.Close()
		return nil
	}
	switch {
	case !t.Valid():
		s.fail(fmt.Errorf("register %s %s: tensor is nil or closed", kind, name))
		return nil
	case name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, ".."):
		t.Close()
		s.fail(fmt.Errorf("register %s: bad name %q", kind, name))
		return nil
	case s.index[name] != nil:
		t.Close()
		s.fail(fmt.Errorf("register %s %s: the name is taken", kind, name))
		return nil
	}
	if kind == Parameter {
		if err := t.SetRequiresGrad(true); err != nil {
			t.Close()
			s.fail(fmt.Errorf("register parameter %s: %w", name, err))
			return nil
		}
	}
	e := &entry{name: name, t: t, kind: kind, trainable: kind == Parameter}
	s.entries = append(s.entries, e)
	s.index[name] = e
	return t
}

// StateDict returns every parameter and buffer under its name, in
// registration order, as new detached handles sharing the store's storage
// (PyTorch's state_dict()); the caller closes it.
func (s *Store) StateDict() (*torch.StateDict, error) {
	sd := torch.NewStateDict()
	for _, e := range s.entries {
		d, err := e.t.Detach()
		if err != nil {
			sd.Close()
			return nil, fmt.Errorf("state dict: %s: %w", e.name, err)
		}
		sd.Set(e.name, d)
	}
	return sd, nil
}

// LoadReport lists the names on which a state dict and the store disagree.
type LoadReport struct {
	Missing    []string // store tensors the state dict lacks (optional ones excluded)
	Unexpected []string // state dict tensors the store has no place for
}

// Empty reports whether both lists are empty.
func (r LoadReport) Empty() bool { return len(r.Missing) == 0 && len(r.Unexpected) == 0 }

func (r LoadReport) String() string {
	var parts []string
	if len(r.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("missing %d: %s", len(r.Missing), clip(r.Missing)))
	}
	if len(r.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("unexpected %d: %s", len(r.Unexpected), clip(r.Unexpected)))
	}
	return strings.Join(parts, "; ")
}

func clip(names []string) string {
	if len(names) <= 10 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
}

// LoadStateDict copies the values of sd into the stored tensors with the same
// names (casting dtype, outside autograd), as load_state_dict does. It checks
// everything first: a shape mismatch, or with strict any missing or
// unexpected name, is an error and leaves the store unchanged. Without strict
// the matching tensors are loaded and the report says what was skipped. sd is
// not modified; the caller still owns it.
func (s *Store) LoadStateDict(sd *torch.StateDict, strict bool) (LoadReport, error) {
	var rep LoadReport
	var shapeErrs []string
	for _, e := range s.entries {
		src, ok := sd.Tensors[e.name]
		if !ok {
			if !e.optional {
				rep.Missing = append(rep.Missing, e.name)
			}
			continue
		}
		if !sameShape(src.Shape(), e.t.Shape()) {
			shapeErrs = append(shapeErrs, fmt.Sprintf("%s: checkpoint %v, model %v", e.name, src.Shape(), e.t.Shape()))
		}
	}
	for _, n := range sd.Names {
		if _, ok := sd.Tensors[n]; ok && s.index[n] == nil {
			rep.Unexpected = append(rep.Unexpected, n)
		}
	}
	sort.Strings(rep.Unexpected)
	if len(shapeErrs) > 0 {
		return rep, fmt.Errorf("load state dict: size mismatch for %s", strings.Join(shapeErrs, "; "))
	}
	if strict && !rep.Empty() {
		return rep, fmt.Errorf("load state dict (strict): %s", rep)
	}
	for _, e := range s.entries {
		if src, ok := sd.Tensors[e.name]; ok {
			if err := e.t.CopyFrom(src); err != nil {
				return rep, fmt.Errorf("load state dict: %s: %w", e.name, err)
			}
		}
	}
	return rep, nil
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Save writes StateDict to path as a torch.save file that torch.load reads
// back as a dict (atomically).
func (s *Store) Save(path string) error {
	sd, err := s.StateDict()
	if err != nil {
		return err
	}
	defer sd.Close()
	return torch.SaveStateDict(path, sd.Names, sd.Tensors)
}

// Load reads a torch.save state dict from path and loads it (see
// LoadStateDict).
func (s *Store) Load(path string, strict bool) (LoadReport, error) {
	sd, err := torch.LoadStateDict(path)
	if err != nil {
		return LoadReport{}, err
	}
	defer sd.Close()
	rep, err := s.LoadStateDict(sd, strict)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	return rep, nil
}

// errStore is returned by constructors given a zero Path.
var errStore = errors.New("nn: path has no store (use Store.Root or Store.Sub)")
