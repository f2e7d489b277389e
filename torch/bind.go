package torch

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Convert transforms a checkpoint tensor while binding (cast, move). It
// returns the tensor to store; returning the input keeps it as is.
type Convert func(name string, t *Tensor) (*Tensor, error)

// BindReport lists checkpoint names that did not match the model.
type BindReport struct {
	Missing    []string // model tensors absent from the checkpoint
	Unexpected []string // checkpoint tensors the model has no place for
}

// Err returns an error describing missing tensors, or nil.
func (r BindReport) Err() error {
	if len(r.Missing) == 0 {
		return nil
	}
	list := r.Missing
	more := ""
	if len(list) > 10 {
		more = fmt.Sprintf(" and %d more", len(list)-10)
		list = list[:10]
	}
	return fmt.Errorf("checkpoint lacks %d tensor(s): %s%s", len(r.Missing), strings.Join(list, ", "), more)
}

var tensorPtrType = reflect.TypeOf((*Tensor)(nil))

// Bind fills the *Tensor fields of the struct dst points to from sd, by the
// checkpoint names in their `torch:"..."` tags joined with dots under prefix.
// Nested structs (and slices of them, pre-sized by the caller, indexed as
// name.N) are walked (see WalkTagged for the tag syntax). Nil struct pointers
// are allocated, except that one tagged ",optional" is left nil when no
// checkpoint name starts with its prefix (an absent sub-module). Bound
// tensors move out of sd, converted by conv (nil keeps them as they are);
// shape checks are the model's job.
func Bind(dst any, sd *StateDict, prefix string, conv Convert) (BindReport, error) {
	var rep BindReport
	used := map[string]bool{}
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return rep, fmt.Errorf("bind: want a pointer to a struct, got %T", dst)
	}
	if err := bindValue(v.Elem(), sd, prefix, conv, &rep, used); err != nil {
		return rep, err
	}
	for _, n := range sd.Names {
		if !used[n] && strings.HasPrefix(n, prefix) {
			rep.Unexpected = append(rep.Unexpected, n)
		}
	}
	sort.Strings(rep.Missing)
	return rep, nil
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	if name == "" {
		return prefix
	}
	return prefix + "." + name
}

func bindValue(v reflect.Value, sd *StateDict, prefix string, conv Convert, rep *BindReport, used map[string]bool) error {
	enter := func(ptr reflect.Value, name string, optional bool) bool {
		if optional && !hasPrefix(sd, name+".") {
			ptr.Set(reflect.Zero(ptr.Type()))
			return false
		}
		if ptr.IsNil() {
			ptr.Set(reflect.New(ptr.Type().Elem()))
		}
		return true
	}
	err := walkValue(v, prefix, func(f TaggedField) error {
		src, ok := sd.Tensors[f.Name]
		if !ok {
			if !f.Optional {
				rep.Missing = append(rep.Missing, f.Name)
			}
			return nil
		}
		used[f.Name] = true
		out := src
		if conv != nil {
			var err error
			if out, err = conv(f.Name, src); err != nil {
				return fmt.Errorf("convert %s: %w", f.Name, err)
			}
		}
		if out != src {
			src.Close()
		}
		delete(sd.Tensors, f.Name)
		*f.Ptr = out
		return nil
	}, enter)
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

func hasPrefix(sd *StateDict, prefix string) bool {
	for n := range sd.Tensors {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// CloseAll closes every *Tensor field reachable from the struct dst points to.
func CloseAll(dst any) {
	v := reflect.ValueOf(dst)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	closeValue(v)
}

func closeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if v.Type() == tensorPtrType {
			v.Interface().(*Tensor).Close()
			return
		}
		closeValue(v.Elem())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				closeValue(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			closeValue(v.Index(i))
		}
	}
}
