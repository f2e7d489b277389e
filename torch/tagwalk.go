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
// (the rules of Bind): nested structs and pointers to structs (allocated when
// nil; left nil and skipped when tagged ",optional", an absent sub-module)
// extend the path, slices of them are indexed as name.N. A tag "-" or no
// tag skips a field.
func WalkTagged(dst any, prefix string, fn func(TaggedField) error) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("walk tagged tensors: want a pointer to a struct, got %T", dst)
	}
	return walkValue(v.Elem(), prefix, fn)
}

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

func walkValue(v reflect.Value, prefix string, fn func(TaggedField) error) error {
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
			if err := walkValue(fv, name, fn); err != nil {
				return err
			}
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			if fv.IsNil() {
				if optional {
					continue // an absent optional sub-module (e.g. a ResNet block without a shortcut projection)
				}
				fv.Set(reflect.New(f.Type.Elem()))
			}
			if err := walkValue(fv.Elem(), name, fn); err != nil {
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
				if ev.Kind() != reflect.Struct {
					return fmt.Errorf("field %s (%s) has a torch tag but its elements are not structs", f.Name, f.Type)
				}
				if err := walkValue(ev, fmt.Sprintf("%s.%d", name, j), fn); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("field %s (%s) has a torch tag but is not a tensor, struct or slice", f.Name, f.Type)
		}
	}
	return nil
}
