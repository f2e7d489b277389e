package shard

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    Spec
		wantErr string
	}{
		{"", Whole, ""},
		{"0/1", Spec{0, 1}, ""},
		{"3/4", Spec{3, 4}, ""},
		{"4/4", Spec{}, "I must be in"},
		{"-1/4", Spec{}, "I must be in"},
		{"0/0", Spec{}, "N must be at least 1"},
		{"1", Spec{}, "want I/N"},
		{"a/b", Spec{}, "integers"},
	}
	for _, c := range cases {
		got, err := Parse(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Parse(%q): want error %q, got %v", c.in, c.wantErr, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// Every item lands in exactly one part, for sizes around multiples of N.
func TestPickPartitions(t *testing.T) {
	for n := 0; n < 13; n++ {
		for count := 1; count <= 5; count++ {
			hits := make([]int, n)
			total := 0
			for i := 0; i < count; i++ {
				p := Spec{i, count}.Pick(n)
				total += len(p)
				for k, pos := range p {
					hits[pos]++
					if pos%count != i || (k > 0 && pos <= p[k-1]) {
						t.Fatalf("n=%d %d/%d picked %v", n, i, count, p)
					}
				}
			}
			for pos, h := range hits {
				if h != 1 {
					t.Fatalf("n=%d N=%d: item %d in %d parts", n, count, pos, h)
				}
			}
			if total != n {
				t.Fatalf("total %d != %d", total, n)
			}
		}
	}
}

func TestCheckComplete(t *testing.T) {
	if err := CheckComplete([]Spec{{1, 3}, {0, 3}, {2, 3}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		parts []Spec
		want  string
	}{
		{nil, "no parts"},
		{[]Spec{{0, 3}, {2, 3}}, "missing part(s) 1/3"},
		{[]Spec{{0, 2}, {0, 2}, {1, 2}}, "given twice"},
		{[]Spec{{0, 2}, {1, 3}}, "different splits"},
	} {
		if err := CheckComplete(c.parts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q, got %v", c.parts, c.want, err)
		}
	}
}
