package main

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/internal/reffix"
	"github.com/clipagiqa/clipagiqa/torch/ptfile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runWithin runs the CLI like run, failing the test instead of hanging when
// the command blocks (a FIFO opened for reading waits for a writer forever).
func runWithin(t *testing.T, limit time.Duration, args ...string) (string, string, error) {
	t.Helper()
	type result struct {
		out, errOut string
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.out, r.errOut, r.err = run(t, args...)
		done <- r
	}()
	select {
	case r := <-done:
		return r.out, r.errOut, r.err
	case <-time.After(limit):
		t.Fatalf("clipagiqa %s: still running after %v (blocked on a FIFO?)", strings.Join(args, " "), limit)
		return "", "", nil
	}
}

func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skipf("mkfifo %s: %v", path, err)
	}
	return path
}

// Group 1: nothing that is not a regular file is opened, so nothing blocks;
// the message names the path. The command's error is its exit status 1.
func TestNonRegularFilesAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "pipe.png"))
	imgDir := filepath.Join(dir, "images")
	require.NoError(t, os.MkdirAll(imgDir, 0o755))
	data, err := os.ReadFile(fixtureImage(0))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(imgDir, "a.png"), data, 0o644))
	inDir := mkfifo(t, filepath.Join(imgDir, "b.png"))
	ckDir := filepath.Join(dir, "ck")
	require.NoError(t, os.MkdirAll(ckDir, 0o755))
	ckFIFO := mkfifo(t, filepath.Join(ckDir, "model.pt"))
	clipFIFO := mkfifo(t, filepath.Join(dir, "clip.pt"))
	official := reffix.Dir()

	cases := []struct {
		name  string
		args  []string
		names string // the path the message must name
		out   string // what must still be in stdout ("" for nothing)
	}{
		{"predict image", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", official, fixtureImage(1), fifo}, fifo, fixtureImage(1)},
		{"predict fifo in a directory", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", official, imgDir}, inDir, "a.png"},
		{"predict --clip", []string{"predict", "--clip", clipFIFO, "--checkpoint", official, fixtureImage(1)}, clipFIFO, ""},
		{"predict --checkpoint file", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", ckFIFO, fixtureImage(1)}, ckFIFO, ""},
		{"predict --checkpoint dir", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", ckDir, fixtureImage(1)}, ckFIFO, ""},
		{"embed image", []string{"embed", "--clip", tinyCLIPPath, fifo, fixtureImage(1)}, fifo, fixtureImage(1)},
		{"embed --clip", []string{"embed", "--clip", clipFIFO, fixtureImage(1)}, clipFIFO, ""},
		{"eval --clip", []string{"eval", "--clip", clipFIFO, "--method", "clipiqa", "--dataset", "csv", "--train-csv", fifo}, fifo, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, err := runWithin(t, 30*time.Second, c.args...)
			require.Error(t, err, "exit status must be non-zero")
			assert.Contains(t, err.Error()+stderr, c.names)
			assert.Contains(t, err.Error()+stderr, "not a regular file")
			if c.out != "" {
				assert.Contains(t, out, c.out, "the other inputs are still processed")
			}
		})
	}
}

// copyFile copies src to dst (tests corrupt their own copies).
func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.WriteFile(dst, b, 0o644))
	return dst
}

// largestRecord returns the zip directory entry of path's largest record.
func largestRecord(t *testing.T, path string) *zip.File {
	t.Helper()
	zr, err := zip.OpenReader(path)
	require.NoError(t, err)
	t.Cleanup(func() { zr.Close() })
	var big *zip.File
	for _, f := range zr.File {
		if big == nil || f.UncompressedSize64 > big.UncompressedSize64 {
			big = f
		}
	}
	return big
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[off] ^= 0x10
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// flipWeightByte flips a byte in the middle of path's largest record (a weight).
func flipWeightByte(t *testing.T, path string) {
	t.Helper()
	rec := largestRecord(t, path)
	off, err := rec.DataOffset()
	require.NoError(t, err)
	flipByte(t, path, off+int64(rec.UncompressedSize64/2))
}

// flipDirectorySize flips the high byte of the uncompressed size that the
// central directory records for path's largest record.
func flipDirectorySize(t *testing.T, path string) {
	t.Helper()
	name := largestRecord(t, path).Name
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	eocd := bytes.LastIndex(b, []byte("PK\x05\x06"))
	require.Positive(t, eocd)
	for p := int(binary.LittleEndian.Uint32(b[eocd+16:])); p+46 < len(b) && bytes.Equal(b[p:p+4], []byte("PK\x01\x02")); {
		nameLen := int(binary.LittleEndian.Uint16(b[p+28:]))
		extra := int(binary.LittleEndian.Uint16(b[p+30:]))
		comment := int(binary.LittleEndian.Uint16(b[p+32:]))
		if string(b[p+46:p+46+nameLen]) == name {
			flipByte(t, path, int64(p+24+3))
			return
		}
		p += 46 + nameLen + extra + comment
	}
	t.Fatalf("%s: no central directory entry for %s", path, name)
}

// Group 3: corrupt weights and absurd numbers are refused, naming the file.
func TestCorruptWeightsAndAbsurdNumbersAreRefused(t *testing.T) {
	dir := t.TempDir()
	flippedCLIP := copyFile(t, tinyCLIPPath, filepath.Join(dir, "flipped_clip.pt"))
	flipWeightByte(t, flippedCLIP)
	dirCLIP := copyFile(t, tinyCLIPPath, filepath.Join(dir, "dir_clip.pt"))
	flipDirectorySize(t, dirCLIP)
	flippedCk := filepath.Join(dir, "official")
	for _, sub := range []string{"prompt_learner", "regression"} {
		for _, f := range []string{"checkpoint", "model.pth.tar-100"} {
			copyFile(t, filepath.Join(reffix.Dir(), sub, f), filepath.Join(flippedCk, sub, f))
		}
	}
	flippedReg := filepath.Join(flippedCk, "regression", "model.pth.tar-100")
	flipWeightByte(t, flippedReg)

	// A checkpoint whose regressor outputs +Inf.
	ck, err := clipagiqa.ReadCheckpoint(reffix.Dir(), 0)
	require.NoError(t, err)
	inf, err := ptfile.FromFloat32s(ptfile.Float32, []int64{1}, []float32{float32(math.Inf(1))})
	require.NoError(t, err)
	ck.Params["regression.4.bias"] = inf
	infCk := filepath.Join(dir, "inf")
	require.NoError(t, ck.Save(infCk))

	// A table with an absurd MOS.
	imgs := filepath.Join(dir, "imgs")
	var rows strings.Builder
	rows.WriteString("image,mos\n")
	for i := range 8 {
		copyFile(t, fixtureImage(i), filepath.Join(imgs, fmt.Sprintf("%d.png", i)))
		mos := strconv.Itoa(i + 1)
		if i == 5 {
			mos = "1e308"
		}
		fmt.Fprintf(&rows, "%d.png,%s\n", i, mos)
	}
	absurd := filepath.Join(imgs, "absurd.csv")
	require.NoError(t, os.WriteFile(absurd, []byte(rows.String()), 0o644))

	cases := []struct {
		name  string
		args  []string
		names string
		want  string
	}{
		{"flipped weight in the CLIP file", []string{"embed", "--clip", flippedCLIP, fixtureImage(0)}, flippedCLIP, "CRC-32 mismatch"},
		{"flipped directory byte in the CLIP file", []string{"embed", "--clip", dirCLIP, fixtureImage(0)}, dirCLIP, "corrupt zip directory"},
		{"flipped weight in a checkpoint", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", flippedCk, fixtureImage(0)}, flippedReg, "CRC-32 mismatch"},
		{"MOS 1e308", []string{"eval", "--clip", tinyCLIPPath, "--method", "clipiqa", "--dataset", "csv", "--train-csv", absurd}, absurd, "1e308"},
		{"infinite predictions in eval", []string{"eval", "--clip", tinyCLIPPath, "--checkpoint", infCk, "--dataset", "csv", "--train-csv", filepath.Join(imgs, "finite.csv")}, "0.png", "+Inf"},
		{"infinite predictions in predict", []string{"predict", "--clip", tinyCLIPPath, "--checkpoint", infCk, fixtureImage(0)}, fixtureImage(0), "+Inf"},
	}
	require.NoError(t, os.WriteFile(filepath.Join(imgs, "finite.csv"), []byte(strings.Replace(rows.String(), "1e308", "6", 1)), 0o644))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, err := run(t, c.args...)
			require.Error(t, err, "exit status must be non-zero; stdout:\n%s", out)
			msg := err.Error() + stderr
			assert.Contains(t, msg, c.names)
			assert.Contains(t, msg, c.want)
			assert.NotContains(t, msg, "truncated file?")
		})
	}
}

// firstImage returns the first image name of a demo CSV and its path.
func firstImage(t *testing.T, csvPath string) (string, string) {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(mustRead(t, csvPath))).ReadAll()
	require.NoError(t, err)
	require.Greater(t, len(recs), 1)
	return recs[1][0], filepath.Join(filepath.Dir(csvPath), filepath.FromSlash(recs[1][0]))
}

// Group 2: every image a training run cannot use is counted and named in
// stdout, summary.json and the exit status; --skip-bad-images makes the
// exit status 0 but still prints the count and the list file. Paths that
// leave the image root are refused when the table is read.
func TestTrainNamesEveryUnusableImage(t *testing.T) {
	_, trainCSV, testCSV := smallSet(t)
	name, path := firstImage(t, testCSV)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, raw[:len(raw)/2], 0o644)) // truncated
	escape := filepath.Join(filepath.Dir(trainCSV), "escape.csv")
	require.NoError(t, os.WriteFile(escape, []byte(mustRead(t, trainCSV)+"../../../../etc/passwd,3,x,blur,1\n"), 0o644))
	base := []string{"train", "--clip", tinyCLIPPath, "--dataset", "csv", "--epochs", "1", "--val-fraction", "0.25"}

	cases := []struct {
		name     string
		args     []string
		ok       bool     // exit status 0
		inOutput []string // in stdout+error
		listed   bool     // summary.json and the list file name the image
	}{
		{"truncated test image", []string{"--train-csv", trainCSV, "--test-csv", testCSV}, false, []string{name, "test"}, true},
		{"truncated test image, skipped", []string{"--train-csv", trainCSV, "--test-csv", testCSV, "--skip-bad-images"}, true,
			[]string{"1 image(s) could not be used", name, skippedFile}, true},
		{"path outside the root", []string{"--train-csv", escape, "--test-csv", testCSV}, false, []string{escape, "../../../../etc/passwd", "outside the image root"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			stdout, stderr, err := run(t, append(append(append([]string{}, base...), c.args...), "--out", out)...)
			msg := stdout + stderr
			if err != nil {
				msg += err.Error()
			}
			if c.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err, "exit status must be non-zero; stdout:\n%s", stdout)
			}
			for _, w := range c.inOutput {
				assert.Contains(t, msg, w)
			}
			if !c.listed {
				return
			}
			var sum struct {
				Splits []splitOutcome `json:"splits"`
			}
			require.NoError(t, json.Unmarshal([]byte(mustRead(t, filepath.Join(out, summaryFile))), &sum))
			require.Len(t, sum.Splits, 1)
			require.Len(t, sum.Splits[0].Unusable, 1)
			assert.Equal(t, unusableImage{Part: "test", Image: name, Error: sum.Splits[0].Unusable[0].Error}, sum.Splits[0].Unusable[0])
			assert.Contains(t, mustRead(t, filepath.Join(out, skippedFile)), name)
		})
	}
}

// Group 6 and issue 12 item 7: messages say what was looked for and what is
// wrong, naming the file.
func TestMessagesNameWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	official := func(name string, subs ...string) string {
		d := filepath.Join(dir, name)
		for _, sub := range subs {
			for _, f := range []string{"checkpoint", "model.pth.tar-100"} {
				copyFile(t, filepath.Join(reffix.Dir(), sub, f), filepath.Join(d, sub, f))
			}
		}
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	noReg := official("no_regression", "prompt_learner")
	noPL := official("no_prompt_learner", "regression")
	empty := official("empty")
	both := official("both", "prompt_learner", "regression")
	ck, err := clipagiqa.ReadCheckpoint(reffix.Dir(), 0)
	require.NoError(t, err)
	require.NoError(t, ck.Save(both))
	ours := filepath.Join(dir, "ours")
	require.NoError(t, ck.Save(ours))
	flipDirectorySize(t, filepath.Join(ours, "model.pt"))
	truncated := copyFile(t, fixtureImage(2), filepath.Join(dir, "truncated.png"))
	raw, err := os.ReadFile(truncated)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(truncated, raw[:len(raw)*2/3], 0o644))
	missingCLIP := filepath.Join(dir, "missing.pt")

	predict := func(ck string, extra ...string) []string {
		return append(append([]string{"predict", "--clip", tinyCLIPPath, "--checkpoint", ck}, extra...), fixtureImage(0))
	}
	cases := []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{"official without regression/", predict(noReg), []string{noReg, "regression/ is missing", "model.pt", "prompt_learner"}, []string{"no such file"}},
		{"official without prompt_learner/", predict(noPL), []string{noPL, "prompt_learner/ is missing"}, []string{"no such file"}},
		{"neither layout", predict(empty), []string{empty, "neither", filepath.Join(empty, "model.pt"), filepath.Join(empty, "prompt_learner")}, nil},
		{"both layouts", predict(both), []string{both, "both layouts", filepath.Join(both, "model.pt")}, nil},
		{"negative epoch", predict(reffix.Dir(), "--epoch", "-1"), []string{"-1", "negative"}, nil},
		{"our epoch is not the asked one", predict(ours, "--epoch", "7"), []string{ours}, nil},
		{"flipped directory byte in a checkpoint", predict(ours), []string{filepath.Join(ours, "model.pt"), "corrupt zip directory"}, []string{"truncated"}},
		{"missing CLIP file", []string{"embed", "--clip", missingCLIP, fixtureImage(0)}, []string{missingCLIP, "no such file"}, []string{"zip"}},
		{"missing CLIP file, predict", []string{"predict", "--method", "clipiqa", "--clip", missingCLIP, fixtureImage(0)}, []string{missingCLIP, "no such file"}, []string{"zip"}},
		{"truncated PNG", []string{"embed", "--clip", tinyCLIPPath, truncated}, []string{truncated, "png"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, err := run(t, c.args...)
			require.Error(t, err, "exit status must be non-zero; stdout:\n%s", out)
			msg := err.Error() + "\n" + stderr
			for _, w := range c.want {
				assert.Contains(t, msg, w)
			}
			for _, w := range c.not {
				assert.NotContains(t, msg, w)
			}
			assert.LessOrEqual(t, strings.Count(strings.ToLower(msg), " png:"), 1, "png: said twice: %s", msg)
		})
	}
}

// Group 5: a score does not depend on which images share its batch or on
// their order: bit-identical with the fused CPU encoder (the default), within
// the documented 1e-5 relative bound op by op (--no-fused).
func TestPredictScoresDoNotDependOnTheBatch(t *testing.T) {
	var images []string
	for i := range 8 {
		images = append(images, fixtureImage(i))
	}
	reversed := make([]string, len(images))
	for i, p := range images {
		reversed[len(images)-1-i] = p
	}
	shuffled := []string{images[5], images[2], images[7], images[0], images[3], images[6], images[1], images[4]}
	score := func(t *testing.T, method string, noFused bool, batch int, imgs []string) map[string]float64 {
		args := []string{"predict", "--clip", tinyCLIPPath, "--method", method, "--batch-size", strconv.Itoa(batch)}
		if method == clipagiqa.MethodAGIQA {
			args = append(args, "--checkpoint", reffix.Dir())
		}
		if noFused {
			args = append([]string{"--no-fused"}, args...)
		}
		out, _, err := run(t, append(args, imgs...)...)
		require.NoError(t, err)
		var got predictOutput
		require.NoError(t, json.Unmarshal([]byte(out), &got))
		require.Len(t, got.Results, len(imgs))
		m := map[string]float64{}
		for _, r := range got.Results {
			m[r.Image] = r.Score
		}
		return m
	}
	for _, method := range []string{clipagiqa.MethodAGIQA, clipagiqa.MethodCLIPIQA} {
		for _, noFused := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/no-fused=%v", method, noFused), func(t *testing.T) {
				ref := map[string]float64{}
				for _, p := range images { // each image alone
					for k, v := range score(t, method, noFused, 1, []string{p}) {
						ref[k] = v
					}
				}
				for _, run := range []struct {
					batch int
					imgs  []string
				}{{8, images}, {8, reversed}, {3, shuffled}, {32, append(append([]string{}, shuffled...), images...)}} {
					got := score(t, method, noFused, run.batch, run.imgs)
					for _, p := range images {
						if noFused {
							assert.InDelta(t, ref[p], got[p], 1e-5*math.Abs(ref[p]), "%s batch %d", p, run.batch)
						} else {
							assert.Equal(t, ref[p], got[p], "%s in a batch of %d differs from its score alone", p, run.batch)
						}
					}
				}
			})
		}
	}
}
