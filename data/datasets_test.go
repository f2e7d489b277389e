package data

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tables under testdata/ are copies of /work/shared/datasets; expected
// counts and values below were read off those files by hand (head/grep)
// or with Python's csv module.

func groupCounts(ds *Dataset) map[string]int {
	m := map[string]int{}
	for _, s := range ds.Samples {
		m[s.Group]++
	}
	return m
}

func sampleByName(t *testing.T, ds *Dataset, name string) Sample {
	t.Helper()
	for _, s := range ds.Samples {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("%s not in %s", name, ds.Name)
	return Sample{}
}

func TestLoadAGIQA3K(t *testing.T) {
	q, err := LoadAGIQA3K("/imgs/agiqa3k", "testdata/agiqa3k/data.csv", TargetQuality)
	require.NoError(t, err)
	a, err := LoadAGIQA3K("/imgs/agiqa3k", "testdata/agiqa3k/data.csv", "Alignment")
	require.NoError(t, err)
	assert.Equal(t, 2982, q.Len())
	assert.Equal(t, 2982, a.Len())
	assert.Equal(t, "agiqa3k-quality", q.Name)
	assert.Equal(t, "agiqa3k-alignment", a.Name)

	first := q.Samples[0]
	assert.Equal(t, Sample{Name: "AttnGAN_normal_000.jpg", Path: "/imgs/agiqa3k/AttnGAN_normal_000.jpg",
		MOS: 0.965602553, Group: "statue of a man", Prompt: "statue of a man",
		Ratings: map[string]float64{TargetQuality: 0.965602553, TargetAlignment: 0.40889324}}, first)
	assert.Equal(t, 0.40889324, a.Samples[0].MOS)
	assert.Equal(t, first.Ratings, a.Samples[0].Ratings, "both targets' datasets carry both ratings")
	// A prompt with a comma inside quotes.
	s := sampleByName(t, q, "AttnGAN_normal_060.jpg")
	assert.Equal(t, "artwork with only triangles, anime style", s.Group)
	assert.Equal(t, 0.919776796, s.MOS)
	assert.Equal(t, 0.850496237, sampleByName(t, a, "AttnGAN_normal_060.jpg").MOS)

	// 300 prompts: 287 with 10 images, 9 with 9, 3 with 8, 1 with 7.
	sizes := map[int]int{}
	for _, n := range groupCounts(q) {
		sizes[n]++
	}
	assert.Equal(t, map[int]int{10: 287, 9: 9, 8: 3, 7: 1}, sizes)

	_, err = LoadAGIQA3K("/imgs", "testdata/agiqa3k/data.csv", "authenticity")
	assert.ErrorContains(t, err, `unknown target "authenticity"`)
	_, err = LoadAGIQA3K("testdata/nowhere", "", TargetQuality)
	assert.ErrorContains(t, err, filepath.Join("testdata/nowhere", "data.csv"))
}

func TestPaperSplit(t *testing.T) {
	trainNames, testNames, err := PaperSplitNames()
	require.NoError(t, err)
	assert.Len(t, trainNames, 2385)
	assert.Len(t, testNames, 597)
	assert.Equal(t, "sd1.5_lowcorr_210.jpg", trainNames[0])
	assert.Equal(t, "sd1.5_normal_027.jpg", testNames[0])

	q, err := LoadAGIQA3K("/imgs", "testdata/agiqa3k/data.csv", TargetQuality)
	require.NoError(t, err)
	train, test, err := PaperSplit(q)
	require.NoError(t, err)
	assert.Equal(t, 2385, train.Len())
	assert.Equal(t, 597, test.Len())
	assert.Equal(t, trainNames, train.Names())
	assert.Equal(t, testNames, test.Names())
	assert.Equal(t, "agiqa3k-quality/train", train.Name)
	// Values from the split files: sd1.5_normal_027.jpg 1.678769845,
	// midjourney_normal_066.jpg 3.561501185.
	assert.Equal(t, 1.678769845, test.Samples[0].MOS)
	assert.Equal(t, 3.561501185, train.Samples[2].MOS)

	// Disjoint and covering all 2982 images.
	seen := map[string]bool{}
	for _, n := range append(train.Names(), test.Names()...) {
		require.False(t, seen[n], n)
		seen[n] = true
	}
	assert.Len(t, seen, 2982)

	// The paper's split is per image: 267 of the 300 prompts occur on both
	// sides (counted with Python), so it is not prompt-disjoint.
	trainG := groupCounts(train)
	both := 0
	for g := range groupCounts(test) {
		if trainG[g] > 0 {
			both++
		}
	}
	assert.Equal(t, 267, both)

	// Missing names are listed, first 20 and a count (2 of the 3 kept
	// images, AttnGAN_normal_001/002, are train images).
	small := q.Subset("head", []int{0, 1, 2})
	_, _, err = PaperSplit(small)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "train: 2383 of 2385 names absent from agiqa3k-quality/head: sd1.5_lowcorr_210.jpg, sd1.5_lowcorr_002.jpg")
	assert.Contains(t, err.Error(), "… and 2363 more")
}

func TestSelectNames(t *testing.T) {
	ds := &Dataset{Name: "d", Samples: []Sample{{Name: "a"}, {Name: "b"}, {Name: "c"}}}
	sub, err := SelectNames(ds, "x", []string{"c", "a"})
	require.NoError(t, err)
	assert.Equal(t, []string{"c", "a"}, sub.Names())
	_, err = SelectNames(ds, "x", []string{"a", "a"})
	assert.ErrorContains(t, err, `name "a" listed twice`)
	_, err = SelectNames(ds, "x", []string{"a", "zz", "yy"})
	assert.EqualError(t, err, "x: 2 of 3 names absent from d: zz, yy")
}

func TestLoadAGIQA1K(t *testing.T) {
	ds, err := LoadAGIQA1K("/imgs/1k", "testdata/agiqa1k/AIGC_all.csv")
	require.NoError(t, err)
	assert.Equal(t, 1080, ds.Len())
	// dreamStudio numbers main 6 as 7 (man) and second 2 as 7 (playing
	// football): AIGC_MOS_Zscore.csv line 971 gives this image the prompt
	// "man, playing football, city, realistic style".
	assert.Equal(t, Sample{Name: "dreamStudio_6_2_0_1.jpg", Path: "/imgs/1k/dreamStudio_6_2_0_1.jpg",
		MOS: 1.818181818, Group: "man playing football", Prompt: "man, playing football, city, realistic style"}, ds.Samples[0])
	// main 9 = alien, second 6 = playing baseball (database README).
	assert.Equal(t, "alien playing baseball", ds.Samples[1].Group)
	assert.Equal(t, "alien, playing baseball, city, realistic style", ds.Samples[1].Prompt)
	assert.Equal(t, 2.818181818, ds.Samples[1].MOS)
	// The released name with an empty style field still gets its subject,
	// but no prompt (its style is unknown).
	odd := sampleByName(t, ds, "dreamStudio_8_9_1_.jpg")
	assert.Equal(t, "alien wearing shirt", odd.Group)
	assert.Equal(t, "", odd.Prompt)
	assert.Equal(t, 2.045454545, odd.MOS)
	assert.Empty(t, ds.Notes)
	// The last row ends with CRLF.
	assert.Equal(t, 3.045454545, ds.Samples[ds.Len()-1].MOS)

	// 12 x 15 subjects; 90 with 4 images, 90 with 8 (counted with awk).
	sizes := map[int]int{}
	for _, n := range groupCounts(ds) {
		sizes[n]++
	}
	assert.Equal(t, map[int]int{4: 90, 8: 90}, sizes)

	for _, bad := range []string{"deepai_12_0_0_0.jpg", "deepai_0_15_0_0.jpg", "deepai_x_0_0_0.jpg", "deepai_0_0.jpg",
		"dreamStudio_11_0_0_0.jpg", "dreamStudio_0_10_0_0.jpg"} {
		_, err := AGIQA1KSubject(bad)
		assert.Error(t, err, bad)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, AGIQA1KTable)
	require.NoError(t, os.WriteFile(p, []byte("Image,Score\ndeepai_0_0_0_0.jpg,1\nfoo.jpg,2\n"), 0o644))
	_, err = LoadAGIQA1K(dir, "")
	assert.ErrorContains(t, err, AGIQA1KTable+":3: image name \"foo.jpg\"")
}

// The official IP-IQA table: prompts from its Prompt column, z-score MOS,
// and its repeated row kept once (values read off the file with grep).
func TestLoadAGIQA1KPromptTable(t *testing.T) {
	ds, err := LoadAGIQA1K("/imgs/1k", "testdata/agiqa1k/"+AGIQA1KPromptTable)
	require.NoError(t, err)
	assert.Equal(t, 1079, ds.Len()) // 1080 rows, dreamStudio_8_9_1_1.jpg twice
	assert.Equal(t, Sample{Name: "deepai_0_0_0_0.jpg", Path: "/imgs/1k/deepai_0_0_0_0.jpg", MOS: 2.7934105045636524,
		Group: "bird driving aircraft", Prompt: "bird, driving aircraft, city, anime style"}, ds.Samples[0])
	dup := sampleByName(t, ds, "dreamStudio_8_9_1_1.jpg")
	assert.Equal(t, 0.4414155439958131, dup.MOS, "the first of the repeated rows (line 1080) is kept")
	assert.Equal(t, "alien, wearing shirt, wild, realistic style", dup.Prompt)
	require.Len(t, ds.Notes, 1)
	assert.Contains(t, ds.Notes[0], "AIGC_MOS_Zscore.csv:1081: dreamStudio_8_9_1_1.jpg repeats line 1080")
	assert.Contains(t, ds.Notes[0], "MOS 0.4414155439958131 there, 2.084115711537598 here")

	// Every prompt decoded from a name is the table's.
	for _, s := range ds.Samples {
		p, err := AGIQA1KPrompt(s.Name)
		require.NoError(t, err, s.Name)
		require.Equal(t, s.Prompt, p, s.Name)
		sub, err := AGIQA1KSubject(s.Name)
		require.NoError(t, err)
		words := strings.Split(s.Prompt, ", ")
		require.Equal(t, words[0]+" "+words[1], sub, s.Name)
	}
	// 180 subjects, as with AIGC_all.csv; the one missing image
	// (dreamStudio_8_5_0_0.jpg) leaves one subject with 7.
	sizes := map[int]int{}
	for _, n := range groupCounts(ds) {
		sizes[n]++
	}
	assert.Equal(t, map[int]int{4: 90, 8: 89, 7: 1}, sizes)

	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, AGIQA1KPromptTable)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	// A repeat with another prompt, or in a table without prompts, is an error.
	_, err = LoadAGIQA1K(dir, write("Image,Prompt,MOS\ndeepai_0_0_0_0.jpg,a,1\ndeepai_0_0_0_0.jpg,b,2\n"))
	assert.ErrorContains(t, err, `:3: duplicate image name "deepai_0_0_0_0.jpg" (first on line 2)`)
	_, err = LoadAGIQA1K(dir, write("Image,Score\ndeepai_0_0_0_0.jpg,1\ndeepai_0_0_0_0.jpg,1\n"))
	assert.ErrorContains(t, err, `:3: duplicate image name "deepai_0_0_0_0.jpg" (first on line 2)`)
}

func TestLoadAIGCIQA2023(t *testing.T) {
	matQ, err := LoadAIGCIQA2023Mat("/imgs/2023", "testdata/aigciqa2023/mosz1.mat")
	require.NoError(t, err)
	matA, err := LoadAIGCIQA2023Mat("/imgs/2023", "testdata/aigciqa2023/mosz2.mat") // uncompressed
	require.NoError(t, err)
	assert.Equal(t, 2400, matQ.Len())
	assert.Equal(t, 2400, matA.Len())
	assert.Equal(t, "aigciqa2023-mosz1", matQ.Name)
	assert.Equal(t, "/imgs/2023/120.png", matQ.Samples[120].Path)
	// From quality_train.csv / authenticity_train.csv line 2: 120.png.
	assert.Equal(t, 56.302012529390446, matQ.Samples[120].MOS)
	assert.Equal(t, 52.50184188480195, matA.Samples[120].MOS)

	// Every MOS read from the .mat equals the CSV value for that name
	// (the .mat was rebuilt from the CSVs by the generator).
	for _, tc := range []struct {
		target string
		mat    *Dataset
	}{{TargetQuality, matQ}, {TargetAuthenticity, matA}} {
		total := 0
		for _, part := range []string{"train", "test"} {
			ds, err := LoadAIGCIQA2023CSV("/imgs/2023", fmt.Sprintf("testdata/aigciqa2023/%s_%s.csv", tc.target, part), tc.target)
			require.NoError(t, err)
			total += ds.Len()
			for _, s := range ds.Samples {
				var idx int
				_, err := fmt.Sscanf(s.Name, "%d.png", &idx)
				require.NoError(t, err)
				require.Equal(t, tc.mat.Samples[idx].MOS, s.MOS, s.Name)
				require.Equal(t, tc.mat.Samples[idx].Group, s.Group, s.Name)
			}
			want := map[string]int{"train": 1920, "test": 480}[part]
			assert.Equal(t, want, ds.Len(), part)
		}
		assert.Equal(t, 2400, total)
	}

	// 100 prompts x 6 models x 4 images.
	counts := groupCounts(matQ)
	assert.Len(t, counts, 100)
	for g, n := range counts {
		assert.Equal(t, 24, n, g)
	}
	// Image 405 = model 1, prompt 1, image 1; image 2399 = prompt 99.
	assert.Equal(t, "prompt01", matQ.Samples[405].Group)
	assert.Equal(t, "prompt99", matQ.Samples[2399].Group)
	assert.Equal(t, "", AIGCIQA2023Prompt("2400.png"))

	for target, file := range map[string]string{"quality": "mosz1.mat", "Authenticity": "mosz2.mat", "correspondence": "mosz3.mat"} {
		got, err := AIGCIQA2023MatFile(target)
		require.NoError(t, err)
		assert.Equal(t, file, got)
	}
	_, err = AIGCIQA2023MatFile("alignment")
	assert.Error(t, err)

	// A table with one column per target, as in the database's own CSV.
	dir := t.TempDir()
	p := filepath.Join(dir, "AIGCIQA2023.csv")
	require.NoError(t, os.WriteFile(p, []byte(
		",name,prompt,quality_mos,authenticity_mos,correspondence_mos\n"+
			"0,0.png,a cat,10,20,30\n1,1.png,a cat,11,21,31\n2,4.png,a dog,12,22,32\n"), 0o644))
	c, err := LoadAIGCIQA2023CSV(dir, p, TargetCorrespondence)
	require.NoError(t, err)
	assert.Equal(t, []float64{30, 31, 32}, c.MOS())
	assert.Equal(t, "a dog", c.Samples[2].Group)
	_, err = LoadAIGCIQA2023CSV(dir, p, "bogus")
	assert.Error(t, err)

	_, err = LoadAIGCIQA2023Mat(dir, "testdata/mat/vars_plain.mat")
	require.NoError(t, err, "falls back to the MOSz variable among many")
	_, err = LoadAIGCIQA2023Mat(dir, filepath.Join(dir, "missing.mat"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func writeCSV(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "scores.csv")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func TestLoadCSV(t *testing.T) {
	ds, err := LoadCSV("/r", writeCSV(t, "\xef\xbb\xbfIMAGE, MOS ,extra\na.png,1.5,x\nsub/b.png,2,y\n"))
	require.NoError(t, err)
	assert.Equal(t, "scores", ds.Name)
	assert.Equal(t, []Sample{
		{Name: "a.png", Path: "/r/a.png", MOS: 1.5},
		{Name: "sub/b.png", Path: "/r/sub/b.png", MOS: 2},
	}, ds.Samples)

	ds, err = LoadCSV("/r", writeCSV(t, "Name,mos,Prompt\na.png,1,cat\nb.png,2,cat\nc.png,3,dog\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"cat": 2, "dog": 1}, groupCounts(ds))

	tests := []struct {
		name, body, want string
	}{
		{"empty file", "", "empty file (no header line)"},
		{"header only", "image,mos\n", "no data rows after the header"},
		{"missing columns", "file,score\na,1\n", "missing column(s) image or name, mos (header has: file, score)"},
		{"not a number", "image,mos\na,1\nb,2\nc,abc\n", `scores.csv:4: mos "abc" is not a number`},
		{"nan", "image,mos\na,NaN\n", `scores.csv:2: mos "NaN" is not a finite number`},
		{"duplicate", "image,mos\na,1\nb,2\na,3\n", `scores.csv:4: duplicate image name "a" (first on line 2)`},
		{"empty name", "image,mos\n ,1\n", "scores.csv:2: empty image"},
		{"field count", "image,mos\na,1\nb,2,3\n", "wrong number of fields"},
		{"duplicate header", "image,MOS,mos\na,1,2\n", `column "mos" appears twice`},
		// Row a spans lines 2-3 (quoted newline), so row b is on line 4.
		{"multi-line field", "image,mos,note\na,1,\"x\ny\"\nb,zz,n\n", `scores.csv:4: mos "zz"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCSV("/r", writeCSV(t, tc.body))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadTrainTestCSV(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "train.csv")
	te := filepath.Join(dir, "test.csv")
	require.NoError(t, os.WriteFile(tr, []byte("image,mos\na,1\nb,2\n"), 0o644))
	require.NoError(t, os.WriteFile(te, []byte("image,mos\nc,3\n"), 0o644))
	train, test, err := LoadTrainTestCSV("/r", tr, te)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, train.Names())
	assert.Equal(t, []float64{3}, test.MOS())

	require.NoError(t, os.WriteFile(te, []byte("image,mos\nb,3\nc,1\n"), 0o644))
	_, _, err = LoadTrainTestCSV("/r", tr, te)
	assert.EqualError(t, err, "train/test overlap: 1 images are in both train and test: b")

	// The shared AIGCIQA2023 split files load as a generic pair.
	train, test, err = LoadTrainTestCSV("/r", "testdata/aigciqa2023/quality_train.csv", "testdata/aigciqa2023/quality_test.csv")
	require.NoError(t, err)
	assert.Equal(t, 1920, train.Len())
	assert.Equal(t, 480, test.Len())
}

func TestCheckFiles(t *testing.T) {
	root := t.TempDir()
	var samples []Sample
	for i := 0; i < 30; i++ {
		name := fmt.Sprintf("img%02d.png", i)
		if i%6 == 0 { // 5 present
			require.NoError(t, os.WriteFile(filepath.Join(root, name), []byte("x"), 0o644))
		}
		samples = append(samples, newSample(root, name, 1, ""))
	}
	// A directory where an image should be counts as missing.
	require.NoError(t, os.Mkdir(filepath.Join(root, "dir.png"), 0o755))
	samples = append(samples, newSample(root, "dir.png", 1, ""))

	ds := &Dataset{Name: "toy", Root: root, Samples: samples}
	err := ds.CheckFiles()
	var mf *MissingFilesError
	require.ErrorAs(t, err, &mf)
	assert.Len(t, mf.Missing, 26)
	assert.Equal(t, 31, mf.Total)
	assert.False(t, mf.RootMissing)
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "toy: 26 of 31 image files missing under "+root+": img01.png, img02.png"), msg)
	assert.Contains(t, msg, "… and 6 more")
	assert.Equal(t, 20, strings.Count(msg, ".png"))

	present := &Dataset{Name: "ok", Root: root, Samples: []Sample{samples[0], samples[6]}}
	assert.NoError(t, present.CheckFiles())

	gone := &Dataset{Name: "gone", Root: filepath.Join(root, "nope"), Samples: []Sample{newSample(filepath.Join(root, "nope"), "a.png", 1, "")}}
	err = gone.CheckFiles()
	require.ErrorAs(t, err, &mf)
	assert.True(t, mf.RootMissing)
	assert.Contains(t, err.Error(), "(the directory does not exist): a.png")
}
