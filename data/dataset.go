// Package data loads image-quality datasets as lists of (image, MOS)
// samples below an image root: AGIQA-3K, AGIQA-1K, AIGCIQA2023 (from CSV
// or the original MATLAB .mat MOS files) and a generic CSV format, and
// splits them randomly, by prompt group, or with the CLIP-AGIQA paper's
// AGIQA-3K split (embedded, so only the images are needed on disk).
//
// The package only handles tables and file names; decoding images is left
// to the caller. It is pure Go (no cgo).
package data

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sample is one rated image.
type Sample struct {
	// Name is the image file name relative to the dataset root, as it
	// appears in the score table.
	Name string
	// Path is Root joined with Name.
	Path string
	// MOS is the mean opinion score for the dataset's chosen target.
	MOS float64
	// Group identifies images that must stay on the same side of a split:
	// the prompt for the AGIQA sets and AIGCIQA2023. Empty means the
	// sample forms a group of its own.
	Group string
	// Prompt is the text the image was generated from, when the table
	// gives it (AGIQA-3K's data.csv, AGIQA-1K, a csv "prompt" column);
	// prompt-aware methods (IP-IQA) score the image with it.
	Prompt string
	// Ratings holds every opinion score the table gives the image, by
	// target name (AGIQA-3K: quality and alignment; MOS is the chosen
	// target's); nil when the table rates one thing.
	Ratings map[string]float64
}

// Dataset is a named list of samples whose images live under Root.
type Dataset struct {
	Name    string
	Root    string
	Samples []Sample
	// Notes says what loading left out of the table and why (e.g. the
	// repeated row of AGIQA-1K's AIGC_MOS_Zscore table), for the user.
	Notes []string
}

// Len returns the number of samples.
func (d *Dataset) Len() int { return len(d.Samples) }

// MOS returns the scores in sample order.
func (d *Dataset) MOS() []float64 {
	out := make([]float64, len(d.Samples))
	for i, s := range d.Samples {
		out[i] = s.MOS
	}
	return out
}

// Names returns the image names in sample order.
func (d *Dataset) Names() []string {
	out := make([]string, len(d.Samples))
	for i, s := range d.Samples {
		out[i] = s.Name
	}
	return out
}

// Subset returns a dataset holding the samples at idx (in that order), named
// Name+"/"+part. The samples are copied; the notes are shared.
func (d *Dataset) Subset(part string, idx []int) *Dataset {
	out := &Dataset{Name: d.Name + "/" + part, Root: d.Root, Samples: make([]Sample, len(idx)), Notes: d.Notes}
	for i, k := range idx {
		out.Samples[i] = d.Samples[k]
	}
	return out
}

// maxListed bounds how many missing files an error message names.
const maxListed = 20

// MissingFilesError lists the image files of a dataset that are absent, so
// that a user can fix them all at once before a long training run.
type MissingFilesError struct {
	Dataset string
	Root    string
	// RootMissing is set when Root itself does not exist.
	RootMissing bool
	// Missing holds every missing name, in sample order.
	Missing []string
	// Total is the number of samples checked.
	Total int
}

// Error names the first few missing files and counts the rest.
func (e *MissingFilesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d image files missing under %s", e.Dataset, len(e.Missing), e.Total, e.Root)
	if e.RootMissing {
		b.WriteString(" (the directory does not exist)")
	}
	n := min(len(e.Missing), maxListed)
	b.WriteString(": ")
	b.WriteString(strings.Join(e.Missing[:n], ", "))
	if len(e.Missing) > n {
		fmt.Fprintf(&b, " … and %d more", len(e.Missing)-n)
	}
	return b.String()
}

// CheckFiles verifies that every sample's image exists as a regular file
// and reports all missing ones in a single *MissingFilesError.
func (d *Dataset) CheckFiles() error {
	e := &MissingFilesError{Dataset: d.Name, Root: d.Root, Total: len(d.Samples)}
	if st, err := os.Stat(d.Root); err != nil || !st.IsDir() {
		e.RootMissing = true
	}
	for _, s := range d.Samples {
		st, err := os.Stat(s.Path)
		if err != nil || !st.Mode().IsRegular() {
			e.Missing = append(e.Missing, s.Name)
		}
	}
	if len(e.Missing) > 0 {
		return e
	}
	return nil
}

// newSample fills Path from the root.
func newSample(root, name string, mos float64, group string) Sample {
	return Sample{Name: name, Path: filepath.Join(root, filepath.FromSlash(name)), MOS: mos, Group: group}
}
