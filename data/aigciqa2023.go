package data

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// AIGCIQA2023 holds 2400 images, named "<i>.png" for i = 0..2399, made by 6
// models from 100 prompts with 4 images each; image i used prompt
// (i mod 400) / 4 (the layout of the database authors' transer.py).
const (
	aigciqaImages       = 2400
	aigciqaPerModel     = 400
	aigciqaPerPrompt    = 4
	aigciqaMOSVariable  = "MOSz"
	aigciqaGroupPattern = "prompt%02d"
)

// AIGCIQA2023MatFile returns the released MOS file name for a target:
// mosz1.mat (quality), mosz2.mat (authenticity), mosz3.mat
// (correspondence).
func AIGCIQA2023MatFile(target string) (string, error) {
	switch strings.ToLower(target) {
	case TargetQuality:
		return "mosz1.mat", nil
	case TargetAuthenticity:
		return "mosz2.mat", nil
	case TargetCorrespondence:
		return "mosz3.mat", nil
	}
	return "", fmt.Errorf("aigciqa2023: unknown target %q (want %s, %s or %s)",
		target, TargetQuality, TargetAuthenticity, TargetCorrespondence)
}

// AIGCIQA2023Prompt returns the prompt group of an image name "<i>.png"
// (see the layout above), or "" when the name does not follow it.
func AIGCIQA2023Prompt(name string) string {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	i, err := strconv.Atoi(base)
	if err != nil || i < 0 || i >= aigciqaImages {
		return ""
	}
	return fmt.Sprintf(aigciqaGroupPattern, (i%aigciqaPerModel)/aigciqaPerPrompt)
}

// LoadAIGCIQA2023Mat reads one of the released MOS files (mosz1.mat,
// mosz2.mat or mosz3.mat: a 2400×1 double "MOSz", or any single numeric
// vector) directly; element i is image "<i>.png" under imageRoot. Group
// is the prompt index.
func LoadAIGCIQA2023Mat(imageRoot, matPath string) (*Dataset, error) {
	vars, err := ReadMatFile(matPath)
	if err != nil {
		return nil, fmt.Errorf("aigciqa2023: %w", err)
	}
	name := ""
	for _, v := range vars {
		if v.Name == aigciqaMOSVariable {
			name = aigciqaMOSVariable
		}
	}
	mos, err := MatVector(vars, name)
	if err != nil {
		return nil, fmt.Errorf("aigciqa2023: %s: %w", matPath, err)
	}
	if len(mos) == 0 {
		return nil, fmt.Errorf("aigciqa2023: %s: empty MOS vector", matPath)
	}
	stem := strings.TrimSuffix(filepath.Base(matPath), filepath.Ext(matPath))
	ds := &Dataset{Name: "aigciqa2023-" + stem, Root: imageRoot}
	for i, m := range mos {
		if math.IsNaN(m) || math.IsInf(m, 0) {
			return nil, fmt.Errorf("aigciqa2023: %s: element %d is %v", matPath, i, m)
		}
		img := strconv.Itoa(i) + ".png"
		ds.Samples = append(ds.Samples, newSample(imageRoot, img, m, AIGCIQA2023Prompt(img)))
	}
	return ds, nil
}

// LoadAIGCIQA2023CSV reads an AIGCIQA2023 score table: either the name,mos
// files made by CLIP-AGIQA's mat2csv.py (target is then only a label), or
// a table with per-target columns such as quality_mos, authenticity_mos,
// correspondence_mos, from which target picks one. Group is the prompt
// column when present, else derived from the "<i>.png" name.
func LoadAIGCIQA2023CSV(imageRoot, csvPath, target string) (*Dataset, error) {
	target = strings.ToLower(target)
	if _, err := AIGCIQA2023MatFile(target); err != nil {
		return nil, err
	}
	t, err := readTableFile(csvPath)
	if err != nil {
		return nil, fmt.Errorf("aigciqa2023: %w", err)
	}
	cols, err := t.require("name|image", target+"_mos|mos")
	if err != nil {
		return nil, fmt.Errorf("aigciqa2023: %w", err)
	}
	promptCol, hasPrompt := t.col("prompt")
	stem := strings.TrimSuffix(filepath.Base(csvPath), filepath.Ext(csvPath))
	ds := &Dataset{Name: "aigciqa2023-" + stem, Root: imageRoot}
	seen := dupChecker{}
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("aigciqa2023: %w", err)
		}
		if err := seen.check(t, i, name); err != nil {
			return nil, fmt.Errorf("aigciqa2023: %w", err)
		}
		mos, err := t.float(i, cols[1])
		if err != nil {
			return nil, fmt.Errorf("aigciqa2023: %w", err)
		}
		group := AIGCIQA2023Prompt(name)
		if hasPrompt {
			group = strings.TrimSpace(t.rows[i][promptCol])
		}
		ds.Samples = append(ds.Samples, newSample(imageRoot, name, mos, group))
	}
	return ds, nil
}
