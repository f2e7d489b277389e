// Package shard splits a list of work items into N disjoint parts without any
// coordination: part I of N takes every N-th item (I, I+N, I+2N, ...) of a
// stable order, so N independent processes together cover every item once.
package shard

import (
	"fmt"
	"strconv"
	"strings"
)

// Spec is part Index of Count (0 <= Index < Count).
type Spec struct {
	Index int `json:"index"`
	Count int `json:"count"`
}

// Whole is the unsharded spec: part 0 of 1.
var Whole = Spec{Index: 0, Count: 1}

// Parse reads "I/N" (e.g. "0/4"); an empty string is Whole.
func Parse(s string) (Spec, error) {
	if s == "" {
		return Whole, nil
	}
	i, n, ok := strings.Cut(s, "/")
	if !ok {
		return Spec{}, fmt.Errorf("shard %q: want I/N, e.g. 0/4", s)
	}
	idx, err1 := strconv.Atoi(strings.TrimSpace(i))
	cnt, err2 := strconv.Atoi(strings.TrimSpace(n))
	if err1 != nil || err2 != nil {
		return Spec{}, fmt.Errorf("shard %q: I and N must be integers", s)
	}
	sp := Spec{Index: idx, Count: cnt}
	return sp, sp.Validate()
}

// Validate checks 0 <= Index < Count.
func (s Spec) Validate() error {
	if s.Count < 1 {
		return fmt.Errorf("shard %d/%d: N must be at least 1", s.Index, s.Count)
	}
	if s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("shard %d/%d: I must be in [0, %d)", s.Index, s.Count, s.Count)
	}
	return nil
}

// String formats the spec as "I/N".
func (s Spec) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Pick returns the positions in [0, n) that belong to this part.
func (s Spec) Pick(n int) []int {
	if s.Count < 1 || s.Index < 0 || s.Index >= s.Count {
		return nil
	}
	out := make([]int, 0, (n+s.Count-1)/s.Count)
	for i := s.Index; i < n; i += s.Count {
		out = append(out, i)
	}
	return out
}

// Size is the number of items this part gets out of n.
func (s Spec) Size(n int) int { return len(s.Pick(n)) }

// CheckComplete verifies that parts are exactly 0/N .. N-1/N, each once.
func CheckComplete(parts []Spec) error {
	if len(parts) == 0 {
		return fmt.Errorf("shard: no parts")
	}
	n := parts[0].Count
	seen := make([]bool, n)
	for _, p := range parts {
		if err := p.Validate(); err != nil {
			return err
		}
		if p.Count != n {
			return fmt.Errorf("shard: parts of different splits (%s and %s)", parts[0], p)
		}
		if seen[p.Index] {
			return fmt.Errorf("shard: part %s given twice", p)
		}
		seen[p.Index] = true
	}
	var missing []string
	for i, ok := range seen {
		if !ok {
			missing = append(missing, Spec{i, n}.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("shard: missing part(s) %s", strings.Join(missing, ", "))
	}
	return nil
}
