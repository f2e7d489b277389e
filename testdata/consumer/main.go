// Command clipagiqa-consumer scores the fixture images with the clipagiqa
// library and checks the scores against the reference (expected.json from
// testdata/clip-agiqa-ref), that its own ELF file links only clipagiqa's two
// native libraries, and optionally that the CLI's `predict` JSON agrees.
// It prints one JSON report and exits 1 on any failed check.
package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	agiqa "github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/torch"
)

// scoreAtol is the fixture README's tolerance for CLIP-AGIQA scores.
const scoreAtol = 1e-6

type report struct {
	Torch     string             `json:"torch"`
	Shim      string             `json:"shim"`
	Needed    []string           `json:"needed"`
	ShimPath  string             `json:"shim_path"`
	Scores    map[string]float64 `json:"scores"`
	MaxAbsErr float64            `json:"max_abs_err"`
	CLIMaxErr *float64           `json:"cli_max_abs_err,omitempty"`
	Failures  []string           `json:"failures"`
}

func main() {
	clipPath := flag.String("clip", "", "CLIP weights `FILE` (tiny_clip_vit.pt)")
	ckpt := flag.String("checkpoint", "", "CLIP-AGIQA checkpoint `DIR`")
	expectedPath := flag.String("expected", "", "reference `FILE` (expected.json)")
	cliJSON := flag.String("cli-json", "", "optional `FILE`: `clipagiqa predict` JSON output to check too")
	flag.Parse()
	if *clipPath == "" || *ckpt == "" || *expectedPath == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: clipagiqa-consumer -clip FILE -checkpoint DIR -expected FILE [-cli-json FILE] img_N.png...")
		os.Exit(2)
	}
	rep, err := run(*clipPath, *ckpt, *expectedPath, *cliJSON, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "clipagiqa-consumer:", err)
		os.Exit(1)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(out))
	if len(rep.Failures) > 0 {
		os.Exit(1)
	}
}

func run(clipPath, ckpt, expectedPath, cliJSON string, images []string) (*report, error) {
	expected, err := loadExpected(expectedPath)
	if err != nil {
		return nil, err
	}
	rep := &report{Torch: torch.TorchVersion(), Shim: torch.NativeShimVersion(), Scores: map[string]float64{}, Failures: []string{}}
	if err := torch.CheckRuntime(); err != nil {
		rep.Failures = append(rep.Failures, err.Error())
	}
	if rep.Needed, err = ownNeeded(); err != nil {
		return nil, err
	}
	rep.ShimPath = mappedPath("libclipagiqa_shim.so")
	for _, lib := range rep.Needed {
		if strings.HasPrefix(lib, "libtorch") || strings.HasPrefix(lib, "libc10") {
			rep.Failures = append(rep.Failures, "binary links "+lib+" directly")
		}
	}

	scorer, err := agiqa.LoadScorer(clipPath, ckpt)
	if err != nil {
		return nil, err
	}
	defer scorer.Close()
	for _, img := range images {
		want, err := expectedFor(expected, img)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(img)
		if err != nil {
			return nil, err
		}
		got, err := scorer.ScoreBytes(context.Background(), data)
		if err != nil {
			return nil, fmt.Errorf("score %s: %w", img, err)
		}
		rep.Scores[filepath.Base(img)] = got
		rep.MaxAbsErr = math.Max(rep.MaxAbsErr, math.Abs(got-want))
	}
	if rep.MaxAbsErr > scoreAtol {
		rep.Failures = append(rep.Failures, fmt.Sprintf("library scores differ from the reference by %.3g > %g", rep.MaxAbsErr, scoreAtol))
	}

	if cliJSON != "" {
		worst, n, err := checkCLI(cliJSON, expected)
		if err != nil {
			return nil, err
		}
		rep.CLIMaxErr = &worst
		if n != len(images) || worst > scoreAtol {
			rep.Failures = append(rep.Failures, fmt.Sprintf("CLI: %d results (want %d), max abs err %.3g (tolerance %g)", n, len(images), worst, scoreAtol))
		}
	}
	return rep, nil
}

// loadExpected reads clip_agiqa.scores (img_0 … img_7) from expected.json.
func loadExpected(path string) ([]float64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		CLIPAGIQA struct {
			Scores []float64 `json:"scores"`
		} `json:"clip_agiqa"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.CLIPAGIQA.Scores) == 0 {
		return nil, fmt.Errorf("%s: no clip_agiqa.scores", path)
	}
	return doc.CLIPAGIQA.Scores, nil
}

var imageIndex = regexp.MustCompile(`^img_(\d+)\.png$`)

func expectedFor(scores []float64, img string) (float64, error) {
	m := imageIndex.FindStringSubmatch(filepath.Base(img))
	if m == nil {
		return 0, fmt.Errorf("%s: not a fixture image (img_N.png)", img)
	}
	i, _ := strconv.Atoi(m[1])
	if i >= len(scores) {
		return 0, fmt.Errorf("%s: no reference score", img)
	}
	return scores[i], nil
}

func checkCLI(path string, expected []float64) (worst float64, n int, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var out struct {
		Results []struct {
			Image string  `json:"image"`
			Score float64 `json:"score"`
		} `json:"results"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	for _, r := range out.Results {
		want, err := expectedFor(expected, r.Image)
		if err != nil {
			return 0, 0, err
		}
		worst = math.Max(worst, math.Abs(r.Score-want))
	}
	return worst, len(out.Results), nil
}

// ownNeeded is the DT_NEEDED list of this executable.
func ownNeeded() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := elf.Open(exe)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ImportedLibraries()
}

// mappedPath is where this process loaded the shared library base from.
func mappedPath(base string) string {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(maps), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && filepath.Base(fields[len(fields)-1]) == base {
			return fields[len(fields)-1]
		}
	}
	return ""
}
