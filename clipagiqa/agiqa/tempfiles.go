package agiqa

import (
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Our atomic writes create ".NAME.tmp…" next to NAME and rename it; a write
// killed midway leaves the temporary behind. These are the patterns, per
// directory kind, that removeOrphanTemps may delete: nothing else.
var (
	runTempRe   = regexp.MustCompile(`^\.(metrics\.jsonl|metrics\.csv)\.tmp[0-9]*$`)
	modelTempRe = regexp.MustCompile(`^\.model\.pt\.tmp-[0-9]+$`)
	cacheTempRe = regexp.MustCompile(`^\.(features-[0-9a-z=-]+\.bin|clip-weights-sha256\.json)\.tmp[0-9]*$`)
)

// cacheTempAge is how old a temporary in the shared feature cache must be
// before it counts as orphaned: another run may be writing a young one.
const cacheTempAge = 10 * time.Minute

// removeOrphanTemps deletes the temporaries left by killed writes in a
// training run's directories (OutDir, its last/ and best/, the cache dir)
// and returns their paths. Only our own names are touched.
func removeOrphanTemps(outDir, cacheDir string, now time.Time) []string {
	var removed []string
	sweep := func(dir string, re *regexp.Regexp, minAge time.Duration) {
		if dir == "" {
			return
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || !re.MatchString(e.Name()) {
				continue
			}
			if info, err := e.Info(); err != nil || now.Sub(info.ModTime()) < minAge {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if os.Remove(p) == nil {
				removed = append(removed, p)
			}
		}
	}
	if outDir != "" {
		sweep(outDir, runTempRe, 0)
		sweep(filepath.Join(outDir, LastDir), modelTempRe, 0)
		sweep(filepath.Join(outDir, BestDir), modelTempRe, 0)
	}
	sweep(cacheDir, cacheTempRe, cacheTempAge)
	return removed
}
