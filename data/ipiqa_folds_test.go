package data

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// rngReference is testdata/ipiqa-rng.json (testdata/gen/ipiqa_rng.py).
type rngReference struct {
	Numpy []struct {
		Seed          uint32           `json:"seed"`
		StateHead     []uint32         `json:"state_head"`
		Uint32        []uint32         `json:"uint32"`
		PermOrder     []int            `json:"permutations_in_order"`
		Permutations  map[string][]int `json:"permutations"`
		Bounded2Pow40 []uint64         `json:"bounded_2pow40"`
	} `json:"numpy"`
	Python []struct {
		Seed        uint64   `json:"seed"`
		Random      []string `json:"random"`
		GetRandBits []uint32 `json:"getrandbits32"`
	} `json:"python"`
}

func loadRNGReference(t *testing.T) rngReference {
	t.Helper()
	raw, err := os.ReadFile("testdata/ipiqa-rng.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref rngReference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Numpy) == 0 || len(ref.Python) == 0 {
		t.Fatal("empty reference")
	}
	return ref
}

func TestMT19937MatchesNumpyLegacy(t *testing.T) {
	for _, c := range loadRNGReference(t).Numpy {
		t.Run(fmt.Sprint(c.Seed), func(t *testing.T) {
			var r mt19937
			r.seedInt(c.Seed)
			for i, want := range c.StateHead {
				if r.mt[i] != want {
					t.Fatalf("state[%d] = %d, numpy %d", i, r.mt[i], want)
				}
			}
			for i, want := range c.Uint32 {
				if got := r.uint32(); got != want {
					t.Fatalf("uint32 #%d = %d, numpy %d", i, got, want)
				}
			}
			for _, n := range c.PermOrder {
				want := c.Permutations[strconv.Itoa(n)]
				got := r.npPermutation(n)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("permutation(%d) = %v, numpy %v", n, head(got), head(want))
				}
			}
			for i, want := range c.Bounded2Pow40 {
				if got := r.randomInterval(1 << 40); got != want {
					t.Fatalf("randint(0, 2**40+1) #%d = %d, numpy %d", i, got, want)
				}
			}
		})
	}
}

func head(p []int) []int {
	if len(p) > 12 {
		return p[:12]
	}
	return p
}

func TestMT19937MatchesCPythonRandom(t *testing.T) {
	for _, c := range loadRNGReference(t).Python {
		t.Run(fmt.Sprint(c.Seed), func(t *testing.T) {
			var r mt19937
			r.pySeed(c.Seed)
			for i, s := range c.Random {
				want, err := strconv.ParseFloat(s, 64)
				if err != nil {
					t.Fatal(err)
				}
				if got := r.pyRandom(); got != want {
					t.Fatalf("random() #%d = %v, python %v", i, got, want)
				}
			}
			for i, want := range c.GetRandBits {
				if got := r.uint32(); got != want {
					t.Fatalf("getrandbits(32) #%d = %d, python %d", i, got, want)
				}
			}
		})
	}
}

// officialFoldFile reads testdata/ipiqa-splits/<prefix>_seed42_fold<k>.txt
// (the official split functions' test names, one per line, table order).
func officialFoldFile(t *testing.T, prefix string, k int) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata/ipiqa-splits", fmt.Sprintf("%s_seed42_fold%d.txt", prefix, k)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func officialTestNames(t *testing.T, prefix string, k int) []string {
	return strings.Fields(officialFoldFile(t, prefix, k))
}

func checkOfficialFolds(t *testing.T, ds *Dataset, prefix string) {
	t.Helper()
	splits, err := IPIQAOfficialSplits(ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(splits) != IPIQAOfficialNumFolds {
		t.Fatalf("%d folds, want %d", len(splits), IPIQAOfficialNumFolds)
	}
	for k, s := range splits {
		want := officialFoldFile(t, prefix, k)
		if got := strings.Join(s.Test.Names(), "\n") + "\n"; got != want {
			t.Errorf("fold %d: test part (%d images) differs from the official one (%d images)",
				k, s.Test.Len(), len(strings.Fields(want)))
		}
		if s.Train.Len()+s.Test.Len() != ds.Len() || s.Val.Len() != 0 {
			t.Errorf("fold %d: %d train + %d test + %d val != %d", k, s.Train.Len(), s.Test.Len(), s.Val.Len(), ds.Len())
		}
	}
}

func TestIPIQAOfficialSplitsAGIQA3K(t *testing.T) {
	ds, err := LoadAGIQA3K("root", "testdata/agiqa3k/data.csv", TargetQuality)
	if err != nil {
		t.Fatal(err)
	}
	checkOfficialFolds(t, ds, "agiqa3k")
}

// loadZscoreTable reads the official AIGC_MOS_Zscore table in its row order,
// keeping its duplicate row as the official code does.
func loadZscoreTable(t *testing.T) *Dataset {
	t.Helper()
	tab, err := readTableFile("testdata/agiqa1k/AIGC_MOS_Zscore.csv")
	if err != nil {
		t.Fatal(err)
	}
	cols, err := tab.require("image", "mos")
	if err != nil {
		t.Fatal(err)
	}
	ds := &Dataset{Name: "agiqa1k"}
	for i := range tab.rows {
		name, err := tab.name(i, cols[0])
		if err != nil {
			t.Fatal(err)
		}
		ds.Samples = append(ds.Samples, Sample{Name: name})
	}
	if ds.Len() != 1080 {
		t.Fatalf("%d rows, want 1080", ds.Len())
	}
	return ds
}

func TestIPIQAOfficialSplitsAGIQA1KOfficialTable(t *testing.T) {
	checkOfficialFolds(t, loadZscoreTable(t), "agiqa1k")
}

// LoadAGIQA1K on the official table keeps one row of the repeated
// dreamStudio_8_9_1_1.jpg; that image trains in every official fold, so the
// test parts are exactly the official ones.
func TestIPIQAOfficialSplitsAGIQA1KLoader(t *testing.T) {
	ds, err := LoadAGIQA1K("root", "testdata/agiqa1k/"+AGIQA1KPromptTable)
	if err != nil {
		t.Fatal(err)
	}
	checkOfficialFolds(t, ds, "agiqa1k")
}

// The shipped AIGC_all.csv lists the rows in another order (and differs by
// two names); the folds follow the prompt codes, so its test parts hold the
// same names as the official ones, up to those two.
func TestIPIQAOfficialSplitsAGIQA1KOtherTable(t *testing.T) {
	ds, err := LoadAGIQA1K("root", "testdata/agiqa1k/AIGC_all.csv")
	if err != nil {
		t.Fatal(err)
	}
	splits, err := IPIQAOfficialSplits(ds)
	if err != nil {
		t.Fatal(err)
	}
	onlyInAll := map[string]bool{"dreamStudio_8_5_0_0.jpg": true, "dreamStudio_8_9_1_.jpg": true}
	for k, s := range splits {
		want := map[string]bool{}
		for _, n := range officialTestNames(t, "agiqa1k", k) {
			want[n] = true
		}
		got := map[string]bool{}
		for _, n := range s.Test.Names() {
			if !onlyInAll[n] {
				got[n] = true
			}
		}
		if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(sortedKeys(want)) {
			t.Errorf("fold %d: %d test names, official %d", k, len(got), len(want))
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The embedded code order must be the one the official table gives.
func TestIPIQACodeOrderMatchesOfficialTable(t *testing.T) {
	var order []string
	seen := map[string]bool{}
	for _, s := range loadZscoreTable(t).Samples {
		c, err := AGIQA1KPromptCode(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !seen[c] {
			seen[c] = true
			order = append(order, c)
		}
	}
	if got := strings.Fields(ipiqaCodeOrder); strings.Join(got, " ") != strings.Join(order, " ") {
		t.Fatalf("embedded code order (%d codes) differs from the table's (%d codes)", len(got), len(order))
	}
}

func TestIPIQANameRules(t *testing.T) {
	cases := []struct {
		name, code string
		bad        bool
	}{
		{name: "deepai_9_6_0_1.jpg", code: "9_6"},
		{name: "dreamStudio_6_2_0_1.jpg", code: "7_7"},
		{name: "dreamStudio_5_2_0_1.jpg", code: "5_7"},
		{name: "dreamStudio_8_9_1_.jpg", code: "9_14"},
		{name: "deepai_x_1_0_0.jpg", bad: true},
		{name: "deepai.jpg", bad: true},
	}
	for _, c := range cases {
		got, err := AGIQA1KPromptCode(c.name)
		if (err != nil) != c.bad || got != c.code {
			t.Errorf("AGIQA1KPromptCode(%q) = %q, %v; want %q (error %v)", c.name, got, err, c.code, c.bad)
		}
	}
	prompts := []struct {
		name   string
		prompt int
		bad    bool
	}{
		{name: "AttnGAN_normal_000.jpg", prompt: 0},
		{name: "midjourney_lowstep_299.jpg", prompt: 299},
		{name: "sd1.5_highcorr_300.jpg", bad: true},
		{name: "x_abc.jpg", bad: true},
	}
	for _, c := range prompts {
		got, err := AGIQA3KPromptIndex(c.name)
		if (err != nil) != c.bad || got != c.prompt {
			t.Errorf("AGIQA3KPromptIndex(%q) = %d, %v; want %d (error %v)", c.name, got, err, c.prompt, c.bad)
		}
	}
}

func TestIPIQAOfficialSplitsErrors(t *testing.T) {
	cases := []*Dataset{
		{Name: "aigciqa2023-quality", Samples: []Sample{{Name: "a.png"}}},
		{Name: "agiqa3k-quality", Samples: []Sample{{Name: "AttnGAN_normal_abc.jpg"}}},
		{Name: "agiqa1k", Samples: []Sample{{Name: "deepai_99_99_0_0.jpg"}}},
		{Name: "agiqa3k-quality", Samples: []Sample{{Name: "AttnGAN_normal_000.jpg"}}}, // one prompt: a part is empty
	}
	for _, ds := range cases {
		if _, err := IPIQAOfficialSplits(ds); err == nil {
			t.Errorf("%s %v: no error", ds.Name, ds.Samples)
		} else if !strings.Contains(err.Error(), ds.Name) {
			t.Errorf("error %q does not name %s", err, ds.Name)
		}
	}
}

func TestIPIQAOfficialFold(t *testing.T) {
	ds := loadZscoreTable(t)
	for _, k := range []int{0, 3, 9} {
		s, err := IPIQAOfficialFold(ds, k)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(s.Test.Names(), "\n")+"\n", officialFoldFile(t, "agiqa1k", k); got != want {
			t.Errorf("fold %d differs from the official one", k)
		}
		if !strings.HasPrefix(s.Test.Name, fmt.Sprintf("agiqa1k/fold%d/", k)) {
			t.Errorf("fold %d test part named %q", k, s.Test.Name)
		}
	}
	for _, k := range []int{-1, 10} {
		if _, err := IPIQAOfficialFold(ds, k); err == nil {
			t.Errorf("fold %d: no error", k)
		}
	}
}
