package torch

import (
	"bufio"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// neededLibs returns the DT_NEEDED entries of the ELF file at path.
func neededLibs(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: NEEDED: %v", path, err)
	}
	return libs
}

// loadedLibrary is the path this process mapped a shared library from.
func loadedLibrary(t *testing.T, base string) string {
	t.Helper()
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	defer maps.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if p := fields[len(fields)-1]; filepath.Base(p) == base {
			return p
		}
	}
	t.Fatalf("%s is not mapped into this process", base)
	return ""
}

func anyHasPrefix(libs []string, prefix string) bool {
	for _, l := range libs {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// Go binaries must link only our two native libraries, which carry libtorch
// themselves: then a binary built once runs against whichever libtorch those
// two were built with, found by their RUNPATH or LD_LIBRARY_PATH.
func TestBinaryLinksOnlyOurNativeLibraries(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		path        string
		mustHave    []string
		mustNotHave []string
	}{
		{"test binary", exe,
			[]string{"libclipagiqa_shim.so", "libcgotorch.so"},
			[]string{"libtorch", "libc10", "libtorch_cpu", "libtorch_cuda", "libc10_cuda"}},
		{"shim", loadedLibrary(t, "libclipagiqa_shim.so"),
			[]string{"libtorch_cpu.so", "libc10.so"}, nil},
		{"cgotorch", loadedLibrary(t, "libcgotorch.so"),
			[]string{"libtorch_cpu.so", "libc10.so"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			libs := neededLibs(t, tc.path)
			for _, want := range tc.mustHave {
				if !anyHasPrefix(libs, want) {
					t.Errorf("%s: NEEDED %v lacks %s*", tc.path, libs, want)
				}
			}
			for _, bad := range tc.mustNotHave {
				if anyHasPrefix(libs, bad) {
					t.Errorf("%s: NEEDED %v has %s*: it must reach libtorch only through our libraries", tc.path, libs, bad)
				}
			}
		})
	}
}
