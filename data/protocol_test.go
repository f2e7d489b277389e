package data

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// names returns the sample names of d as a set.
func names(d *Dataset) map[string]bool {
	out := map[string]bool{}
	if d != nil {
		for _, s := range d.Samples {
			out[s.Name] = true
		}
	}
	return out
}

// TestPlanProtocols: each protocol's partitions cover the data without
// overlap, keep groups on one side where promised, and match the split
// functions they are built from.
func TestPlanProtocols(t *testing.T) {
	all := toyDataset(100)
	fixed := toyDataset(10)
	for _, tc := range []struct {
		name    string
		p       Protocol
		fixed   *Dataset
		n       int
		val     bool
		grouped bool
	}{
		{"prompt-disjoint x3", Protocol{Name: ProtocolPromptDisjoint, Splits: 3, TestFraction: 0.2, ValFraction: 0.1, Seed: 7}, nil, 3, true, true},
		{"random x2", Protocol{Name: ProtocolRandom, Splits: 2, TestFraction: 0.2, ValFraction: 0.1, Seed: 7}, nil, 2, true, false},
		{"prompt-disjoint given test", Protocol{Name: ProtocolPromptDisjoint, Splits: 1, ValFraction: 0.2, Seed: 7}, fixed, 1, true, true},
		{"random given test", Protocol{Name: ProtocolRandom, Splits: 1, ValFraction: 0.2, Seed: 7}, fixed, 1, true, false},
		{"paper given test", Protocol{Name: ProtocolPaper, Splits: 1}, fixed, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := Plan(tc.p, all, tc.fixed)
			require.NoError(t, err)
			require.Len(t, parts, tc.n)
			for _, pt := range parts {
				tr, va, te := names(pt.Train), names(pt.Val), names(pt.Test)
				assert.Equal(t, tc.val, pt.Val != nil, "validation part")
				if tc.fixed != nil {
					assert.Same(t, tc.fixed, pt.Test)
					assert.Equal(t, all.Len(), len(tr)+len(va))
				} else {
					assert.Equal(t, all.Len(), len(tr)+len(va)+len(te))
					for n := range te {
						assert.False(t, tr[n] || va[n], "%s in test and another part", n)
					}
				}
				for n := range va {
					assert.False(t, tr[n], "%s in train and val", n)
				}
				if tc.grouped {
					side := map[string]string{}
					for part, d := range map[string]*Dataset{"train": pt.Train, "val": pt.Val} {
						for _, s := range d.Samples {
							if prev, ok := side[s.Group]; ok && prev != part {
								t.Errorf("group %s on %s and %s", s.Group, prev, part)
							}
							side[s.Group] = part
						}
					}
				}
			}
			again, err := Plan(tc.p, all, tc.fixed)
			require.NoError(t, err)
			assert.Equal(t, parts, again, "same seed, same partitions")
		})
	}
	// Random: built from RandomSplit with the documented seeds.
	parts, err := Plan(Protocol{Name: ProtocolRandom, Splits: 1, TestFraction: 0.2, ValFraction: 0.1, Seed: 3}, all, nil)
	require.NoError(t, err)
	rest, test, err := RandomSplit(all, 0.8, 3)
	require.NoError(t, err)
	train, val, err := RandomSplit(rest, 0.9, 4)
	require.NoError(t, err)
	assert.Equal(t, Partition{Name: "split0", Train: train, Val: val, Test: test}, parts[0])
}

func TestPlanErrors(t *testing.T) {
	all := toyDataset(20)
	for _, tc := range []struct {
		name  string
		p     Protocol
		fixed *Dataset
		want  string
	}{
		{"zero splits", Protocol{Name: ProtocolRandom, Splits: 0}, nil, "at least 1"},
		{"unknown", Protocol{Name: "leaky", Splits: 1}, nil, "want prompt-disjoint, paper or random"},
		{"paper many", Protocol{Name: ProtocolPaper, Splits: 2}, nil, "one fixed split"},
		{"paper not agiqa3k", Protocol{Name: ProtocolPaper, Splits: 1}, nil, "official AGIQA-3K split"},
		{"fixed many", Protocol{Name: ProtocolRandom, Splits: 2}, toyDataset(5), "test part is fixed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plan(tc.p, all, tc.fixed)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestOpenSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	tr := write("train.csv", "image,mos\na.png,1\nb.png,2\n")
	te := write("test.csv", "image,mos\nc.png,3\n")
	empty := write("empty.csv", "image,mos\n")

	all, fixed, err := Open(Source{Name: "CSV", TrainCSV: tr})
	require.NoError(t, err)
	assert.Nil(t, fixed)
	assert.Equal(t, []float64{1, 2}, all.MOS())
	assert.Equal(t, filepath.Join(dir, "a.png"), all.Samples[0].Path, "root defaults to the table's directory")

	all, fixed, err = Open(Source{Name: "csv", TrainCSV: tr, TestCSV: te})
	require.NoError(t, err)
	assert.Equal(t, 2, all.Len())
	assert.Equal(t, []float64{3}, fixed.MOS())

	for _, tc := range []struct {
		name string
		src  Source
		want string
	}{
		{"unknown", Source{Name: "imagenet", Root: dir}, "want agiqa3k, agiqa1k, aigciqa2023, csv"},
		{"no root", Source{Name: "agiqa3k"}, "image root"},
		{"csv without table", Source{Name: "csv"}, "training table"},
		{"empty", Source{Name: "csv", TrainCSV: empty}, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Open(tc.src)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestPlanIPIQAOfficial: the ipiqa-official protocol is the official folds
// (the same test images, fold by fold), without a validation part.
func TestPlanIPIQAOfficial(t *testing.T) {
	ds, err := LoadAGIQA3K("root", "testdata/agiqa3k/data.csv", TargetQuality)
	require.NoError(t, err)
	parts, err := Plan(Protocol{Name: ProtocolIPIQAOfficial, Splits: 3}, ds, nil)
	require.NoError(t, err)
	require.Len(t, parts, 3)
	for k, pt := range parts {
		assert.Equal(t, fmt.Sprintf("fold%d", k), pt.Name)
		assert.Nil(t, pt.Val)
		assert.Equal(t, officialTestNames(t, "agiqa3k", k), pt.Test.Names(), "fold %d test part", k)
		assert.Equal(t, ds.Len(), pt.Train.Len()+pt.Test.Len())
	}
	for _, tc := range []struct {
		name  string
		k     int
		fixed *Dataset
		want  string
	}{
		{"too many folds", 11, nil, "10 folds"},
		{"given test table", 1, toyDataset(5), "own test folds"},
	} {
		_, err := Plan(Protocol{Name: ProtocolIPIQAOfficial, Splits: tc.k}, ds, tc.fixed)
		assert.ErrorContains(t, err, tc.want, tc.name)
	}
	_, err = Plan(Protocol{Name: ProtocolIPIQAOfficial, Splits: 1}, toyDataset(20), nil)
	assert.ErrorContains(t, err, "only AGIQA-3K and AGIQA-1K")
}
