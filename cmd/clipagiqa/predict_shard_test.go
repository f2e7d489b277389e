package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Three --shard parts merged equal one unsharded run over the same inputs.
func TestPredictShardMerge(t *testing.T) {
	base := []string{"predict", "--clip", tinyCLIPPath, "--method", "clipiqa", "--batch-size", "2"}
	var imgs []string
	for _, i := range []int{6, 1, 4, 0, 7, 2, 5, 3} { // unsorted on purpose
		imgs = append(imgs, fixtureImage(i))
	}
	stdout, _, err := run(t, append(base, imgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	var whole predictOutput
	if err := json.Unmarshal([]byte(stdout), &whole); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var parts []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, "part"+strconv.Itoa(i)+".json")
		parts = append(parts, p)
		args := append(append([]string{}, base...), "--shard", strconv.Itoa(i)+"/3", "--output", p)
		if _, _, err := run(t, append(args, imgs...)...); err != nil {
			t.Fatal(err)
		}
		var part predictOutput
		data, _ := os.ReadFile(p)
		if err := json.Unmarshal(data, &part); err != nil {
			t.Fatal(err)
		}
		if part.Shard == nil || part.Shard.Index != i || part.Shard.Count != 3 || part.Shard.TotalInputs != 8 {
			t.Fatalf("part %d shard info %+v", i, part.Shard)
		}
		if want := []int{3, 3, 2}[i]; len(part.Results) != want {
			t.Fatalf("part %d has %d results, want %d", i, len(part.Results), want)
		}
	}
	merged := filepath.Join(dir, "all.json")
	// Parts in any order.
	if _, _, err := run(t, "predict", "--merge", "--output", merged, parts[2], parts[0], parts[1]); err != nil {
		t.Fatal(err)
	}
	var got predictOutput
	data, _ := os.ReadFile(merged)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != len(whole.Results) {
		t.Fatalf("merged %d results, whole run %d", len(got.Results), len(whole.Results))
	}
	byImage := map[string]float64{}
	for _, r := range whole.Results {
		byImage[r.Image] = r.Score
	}
	for k, r := range got.Results {
		if k > 0 && got.Results[k-1].Image >= r.Image {
			t.Errorf("merged results not sorted at %d", k)
		}
		want, ok := byImage[r.Image]
		// Batches differ between runs, so allow float32 rounding.
		if !ok || math.Abs(r.Score-want) > 1e-6 {
			t.Errorf("%s: merged %v, whole run %v (present %v)", r.Image, r.Score, want, ok)
		}
	}
	if !reflect.DeepEqual(got.Model, whole.Model) {
		t.Errorf("model %+v != %+v", got.Model, whole.Model)
	}

	for _, c := range []struct {
		name  string
		parts []string
		want  string
	}{
		{"missing part", parts[:2], "missing part(s) 2/3"},
		{"duplicate part", []string{parts[0], parts[1], parts[1], parts[2]}, "given twice"},
		{"not a part", []string{merged}, "no \"shard\" field"},
		{"no parts", nil, "give the part files"},
	} {
		_, _, err := run(t, append([]string{"predict", "--merge"}, c.parts...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want %q, got %v", c.name, c.want, err)
		}
	}
	if _, _, err := run(t, append(append([]string{}, base...), "--shard", "3/3", imgs[0])...); err == nil || !strings.Contains(err.Error(), "--shard") {
		t.Errorf("bad shard accepted: %v", err)
	}
}
