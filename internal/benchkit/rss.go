package benchkit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ResetPeakRSS restarts the kernel's peak-RSS counter (VmHWM) of this
// process at its current RSS, so a later PeakRSSKB covers only what follows.
// It reports whether the kernel allowed it (/proc/self/clear_refs, Linux ≥ 4.0).
func ResetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// PeakRSSKB is this process's peak resident set (VmHWM) in KiB.
func PeakRSSKB() (int64, error) { return statusKB("VmHWM") }

// RSSKB is this process's current resident set (VmRSS) in KiB.
func RSSKB() (int64, error) { return statusKB("VmRSS") }

func statusKB(field string) (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", field, err)
	}
	defer f.Close()
	return parseStatusKB(bufio.NewScanner(f), field)
}

// parseStatusKB finds "field:   123 kB" in /proc/<pid>/status text.
func parseStatusKB(sc *bufio.Scanner, field string) (int64, error) {
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		parts := strings.Fields(rest)
		if len(parts) != 2 || parts[1] != "kB" {
			return 0, fmt.Errorf("status line %q: want \"%s: N kB\"", sc.Text(), field)
		}
		return strconv.ParseInt(parts[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s line in /proc/self/status", field)
}
