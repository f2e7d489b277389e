package torch

import (
	"fmt"
	"reflect"
	"strings"
)

// TaggedField is one *Tensor field found by WalkTagged.
type TaggedField struct {
	Name     string   // dotted checkpoint path: the tags joined under the prefix
	Ptr      **Tensor // the field itself, so callers can read or set it
	Optional bool     // tag option ",optional": the checkpoint may lack it
	Buffer   bool     // tag option ",buffer": a buffer (running stats), not a parameter
}

// WalkTagged calls fn, in field order, for every *Tensor field reachable from
// the struct dst points to through `torch:"name[,optional][,buffer]"` tags
// (the rules of Bind): nested structs and pointers to structs extend the path,
// slices of them are indexed as name.N. Nil struct pointers are skipped (an
// absent sub-module); a tag "-" or no tag skips a field.
func WalkTagged(dst any, prefix string, fn func(TaggedField) error) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("walk tagged tensors: want a pointer to a struct, got %T", dst)
	}
	return walkValue(v.Elem(), prefix, fn, func(ptr reflect.Value, _ string, _ bool) bool { return !ptr.IsNil() })
}

// structPtrPolicy decides whether the walk enters the struct pointer ptr
// named name; it may allocate or clear ptr first.
type structPtrPolicy func(ptr reflect.Value, name string, optional bool) bool

func parseTag(tag string) (name string, optional, buffer bool, err error) {
	parts := strings.Split(tag, ",")
	for _, o := range parts[1:] {
		switch o {
		case "optional":
			optional = true
		case "buffer":
			buffer = true
		default:
			return "", false, false, fmt.Errorf("unknown torch tag option %q in %q", o, tag)
		}
	}
	return parts[0], optional, buffer, nil
}

func walkValue(v reflect.Value, prefix string, fn func(TaggedField) error, enter structPtrPolicy) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("torch")
		if !ok || tag == "-" {
			continue
		}
		tagName, optional, buffer, err := parseTag(tag)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		name := join(prefix, tagName)
		fv := v.Field(i)
		switch {
		case f.Type == tensorPtrType:
			if err := fn(TaggedField{Name: name, Ptr: fv.Addr().Interface().(**Tensor), Optional: optional, Buffer: buffer}); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Struct:
			if err := walkValue(fv, name, fn, enter); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			if !enter(fv, name, optional) {
				continue
			}
			if err := walkValue(fv.Elem(), name, fn, enter); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Slice:
			for j := 0; j < fv.Len(); j++ {
				ev := fv.Index(j)
				en := fmt.Sprintf("%s.%d", name, j)
				if ev.Kind() == reflect.Pointer && ev.Type().Elem().Kind() == reflect.Struct {
					if !enter(ev, en, false) {
						continue
					}
					ev = ev.Elem()
				}
				if ev.Kind() != reflect.Struct {
					return fmt.Errorf("field %s (%s) has a torch tag but its elements are not structs", f.Name, f.Type)
				}
				if err := walkValue(ev, en, fn, enter); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("field %s (%s) has a torch tag but is not a tensor, struct or slice", f.Name, f.Type)
		}
	}
	return nil
}
