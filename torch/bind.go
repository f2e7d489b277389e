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
// name.N) are walked; a struct pointer tagged ",optional" stays nil when no
// checkpoint name starts with its prefix. Bound tensors move out of sd, converted by conv (nil
// keeps them as they are); shape checks are the model's job.
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
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("torch")
		if !ok || tag == "-" {
			continue
		}
		optional := false
		if strings.HasSuffix(tag, ",optional") {
			optional = true
			tag = strings.TrimSuffix(tag, ",optional")
		}
		name := join(prefix, tag)
		fv := v.Field(i)
		switch {
		case f.Type == tensorPtrType:
			src, ok := sd.Tensors[name]
			if !ok {
				if !optional {
					rep.Missing = append(rep.Missing, name)
				}
				continue
			}
			used[name] = true
			out := src
			if conv != nil {
				var err error
				if out, err = conv(name, src); err != nil {
					return fmt.Errorf("bind %s: %w", name, err)
				}
			}
			if out != src {
				src.Close()
			}
			delete(sd.Tensors, name)
			fv.Set(reflect.ValueOf(out))
		case f.Type.Kind() == reflect.Struct:
			if err := bindValue(fv, sd, name, conv, rep, used); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			if optional && !hasPrefix(sd, name+".") {
				fv.Set(reflect.Zero(f.Type)) // an optional sub-module the checkpoint lacks stays nil
				continue
			}
			if fv.IsNil() {
				fv.Set(reflect.New(f.Type.Elem()))
			}
			if err := bindValue(fv.Elem(), sd, name, conv, rep, used); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Slice:
			for j := 0; j < fv.Len(); j++ {
				ev := fv.Index(j)
				if ev.Kind() == reflect.Pointer {
					if ev.IsNil() {
						ev.Set(reflect.New(ev.Type().Elem()))
					}
					ev = ev.Elem()
				}
				if err := bindValue(ev, sd, fmt.Sprintf("%s.%d", name, j), conv, rep, used); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("bind: field %s (%s) has a torch tag but is not a tensor, struct or slice", f.Name, f.Type)
		}
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
