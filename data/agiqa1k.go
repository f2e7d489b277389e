package data

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// AGIQA-1K ships two score tables.
const (
	// AGIQA1KTable (Image, Score) is the default: the MOS on the
	// database's 1-5 scale.
	AGIQA1KTable = "AIGC_all.csv"
	// AGIQA1KPromptTable (Image, Prompt, MOS) is AIGC_MOS_Zscore.xlsx as
	// CSV: the prompts and z-score MOS that the official IP-IQA code reads
	// (ipiqa/projects/agiqa1k/ipiqa.yaml's data_path).
	AGIQA1KPromptTable = "AIGC_MOS_Zscore.csv"
)

// AGIQA-1K image names are model_main_second_place_style.jpg; the
// database's README gives the words behind each index, and the prompt is
// "main, second, place, style" (checked against every row of
// AGIQA1KPromptTable). dreamStudio images number main and second from
// another list: main indices above 5 are one higher in agiqa1kMain, second
// indices five higher (the official IP-IQA split applies the same shift).
var (
	agiqa1kMain = []string{"bird", "cat", "dog", "batman", "snoppy", "teddy bear",
		"kid", "man", "woman", "alien", "demon", "witch"}
	agiqa1kSecond = []string{"driving aircraft", "driving bike", "driving car",
		"having hamburger", "having icecream", "having pizza",
		"playing baseball", "playing football", "playing yoga",
		"using CD", "using laptop", "using phone",
		"wearing coat", "wearing hat", "wearing shirt"}
	agiqa1kPlace = []string{"city", "wild"}
	agiqa1kStyle = []string{"anime style", "realistic style"}
)

// LoadAGIQA1K reads an AGIQA-1K score table with images under root:
// AIGC_all.csv (columns Image, Score) or AIGC_MOS_Zscore.csv (Image,
// Prompt, MOS: the official IP-IQA table); csvPath "" means
// root/AIGC_all.csv.
//
// Prompt is the table's Prompt column; without one it is decoded from the
// name (AGIQA1KPrompt), which gives the same text for every row of the
// official table, and stays empty for the one released name whose style
// field is empty (dreamStudio_8_9_1_.jpg).
//
// Group is the prompt's subject, "<main object> <second object>" (e.g.
// "alien playing baseball" for deepai_9_6_0_1.jpg), decoded from the name.
// It deliberately ignores the place and style words: splitting on the
// subject keeps every prompt, and all its place/style variants, on one
// side, as the official IP-IQA split does (it draws per subject code).
// That gives 180 groups of 4 or 8 images.
//
// Repeated names: the official AIGC_MOS_Zscore table lists
// dreamStudio_8_9_1_1.jpg twice with the same prompt and different MOS
// (0.441 and 2.084); the official code trains on both rows. One image has
// one score here (splits, predictions and metrics key on the name), so a
// name repeated with the same prompt keeps its first row, drops the later
// ones and says so in Dataset.Notes; averaging would invent a score
// neither row holds. A name repeated with another prompt, or in a table
// without prompts, is an error.
func LoadAGIQA1K(root, csvPath string) (*Dataset, error) {
	if csvPath == "" {
		csvPath = filepath.Join(root, AGIQA1KTable)
	}
	t, err := readTableFile(csvPath)
	if err != nil {
		return nil, fmt.Errorf("agiqa1k: %w", err)
	}
	cols, err := t.require("image|name", "score|mos")
	if err != nil {
		return nil, fmt.Errorf("agiqa1k: %w", err)
	}
	promptCol, hasPrompt := t.col("prompt")
	ds := &Dataset{Name: "agiqa1k", Root: root}
	first := map[string]int{} // name -> index of its kept row in t.rows
	for i := range t.rows {
		name, err := t.name(i, cols[0])
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %w", err)
		}
		mos, err := t.float(i, cols[1])
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %w", err)
		}
		group, err := AGIQA1KSubject(name)
		if err != nil {
			return nil, fmt.Errorf("agiqa1k: %s:%d: %w", t.src, t.lines[i], err)
		}
		var prompt string
		if hasPrompt {
			prompt = t.rows[i][promptCol] // verbatim, as AGIQA-3K's
		} else if prompt, err = AGIQA1KPrompt(name); err != nil {
			prompt = "" // only the style-less name: its prompt is unknown
		}
		if k, ok := first[name]; ok {
			if !hasPrompt || t.rows[k][promptCol] != prompt {
				return nil, fmt.Errorf("agiqa1k: %s:%d: duplicate image name %q (first on line %d)", t.src, t.lines[i], name, t.lines[k])
			}
			ds.Notes = append(ds.Notes, fmt.Sprintf("%s:%d: %s repeats line %d with the same prompt (MOS %s there, %s here): kept line %d's row, left this one out",
				t.src, t.lines[i], name, t.lines[k], strings.TrimSpace(t.rows[k][cols[1]]), strings.TrimSpace(t.rows[i][cols[1]]), t.lines[k]))
			continue
		}
		first[name] = i
		smp := newSample(root, name, mos, group)
		smp.Prompt = prompt
		ds.Samples = append(ds.Samples, smp)
	}
	return ds, nil
}

// agiqa1kWords decodes an AGIQA-1K image name into its four prompt words;
// place and style are "" when their field is empty.
func agiqa1kWords(name string) (main, second, place, style string, err error) {
	base := strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	f := strings.Split(base, "_")
	if len(f) != 5 {
		return "", "", "", "", fmt.Errorf("image name %q: want model_main_second_place_style", name)
	}
	m, err1 := strconv.Atoi(f[1])
	s, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return "", "", "", "", fmt.Errorf("image name %q: main and second fields must be integers", name)
	}
	if f[0] == "dreamStudio" {
		if m > 5 {
			m++
		}
		s += 5
	}
	if m < 0 || m >= len(agiqa1kMain) || s < 0 || s >= len(agiqa1kSecond) {
		return "", "", "", "", fmt.Errorf("image name %q: object indices out of range (main 0-%d, second 0-%d; dreamStudio main 0-%d, second 0-%d)",
			name, len(agiqa1kMain)-1, len(agiqa1kSecond)-1, len(agiqa1kMain)-2, len(agiqa1kSecond)-6)
	}
	word := func(field string, words []string) (string, error) {
		if field == "" {
			return "", nil
		}
		k, err := strconv.Atoi(field)
		if err != nil || k < 0 || k >= len(words) {
			return "", fmt.Errorf("image name %q: place and style fields must be 0 or 1", name)
		}
		return words[k], nil
	}
	if place, err = word(f[3], agiqa1kPlace); err != nil {
		return "", "", "", "", err
	}
	if style, err = word(f[4], agiqa1kStyle); err != nil {
		return "", "", "", "", err
	}
	return agiqa1kMain[m], agiqa1kSecond[s], place, style, nil
}

// AGIQA1KSubject decodes the prompt subject ("<main> <second>") from an
// AGIQA-1K image name such as "deepai_9_6_0_1.jpg" ("alien playing
// baseball") or "dreamStudio_8_9_1_1.jpg" ("alien wearing shirt").
func AGIQA1KSubject(name string) (string, error) {
	m, s, _, _, err := agiqa1kWords(name)
	if err != nil {
		return "", err
	}
	return m + " " + s, nil
}

// AGIQA1KPrompt decodes the full prompt from an AGIQA-1K image name, as
// AIGC_MOS_Zscore's Prompt column writes it: "alien, playing baseball,
// city, realistic style" for "deepai_9_6_0_1.jpg". A name with an empty
// place or style field has no known prompt (an error).
func AGIQA1KPrompt(name string) (string, error) {
	m, s, place, style, err := agiqa1kWords(name)
	if err != nil {
		return "", err
	}
	if place == "" || style == "" {
		return "", fmt.Errorf("image name %q: empty place or style field, so its prompt is unknown", name)
	}
	return m + ", " + s + ", " + place + ", " + style, nil
}
