package tokenizer

import (
	"html"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// clean is simple_tokenizer's whitespace_clean(basic_clean(text)).lower(),
// with ftfy.fix_text as the identity.
func clean(text string) string {
	text = pyValidUTF8(text)
	text = pyUnescape(pyUnescape(text))
	text = strings.TrimFunc(text, isPySpace)
	text = collapseSpace(text)
	text = strings.TrimFunc(text, isPySpace)
	return pyLower(text)
}

// isPySpace is Python's str.isspace, used by str.strip: Unicode White_Space
// plus the separators U+001C–U+001F.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F)
}

// collapseSpace is re.sub(r'\s+', ' ', text) with the regex module, whose \s
// is Unicode White_Space (exactly unicode.IsSpace).
func collapseSpace(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && unicode.IsSpace(r) }) &&
		!strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	inRun := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !inRun {
				b.WriteByte(' ')
			}
			inRun = true
			continue
		}
		inRun = false
		b.WriteRune(r)
	}
	return b.String()
}

// pyUnescape is one pass of Python's html.unescape. Go's html.UnescapeString
// differs on numeric references ("&#x;" gives U+FFFD, one-digit references
// without ';' are kept, control code points are kept, huge numbers wrap), so
// numeric references follow Python's rules here. Named references agree with
// Python when Go is given exactly the span Python's pattern matches, so that
// span is handed to html.UnescapeString.
func pyUnescape(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		j := strings.IndexByte(s, '&')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:j])
		s = s[j:]
		n, repl := charRef(s)
		if n == 0 {
			b.WriteByte('&')
			s = s[1:]
			continue
		}
		b.WriteString(repl)
		s = s[n:]
	}
}

// charRef matches Python's pattern
// &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?) at the start of s
// (s[0] == '&') and returns the matched length (0: no match) and replacement.
func charRef(s string) (int, string) {
	if len(s) > 1 && s[1] == '#' {
		i, base := 2, 10
		if len(s) > 2 && (s[2] == 'x' || s[2] == 'X') {
			i, base = 3, 16
		}
		start := i
		v := 0
		for ; i < len(s); i++ {
			d, ok := digitVal(s[i], base)
			if !ok {
				break
			}
			if v <= unicode.MaxRune {
				v = v*base + d // saturates above MaxRune: all such values give U+FFFD
			}
		}
		if i == start {
			return 0, ""
		}
		if i < len(s) && s[i] == ';' {
			i++
		}
		return i, numericRef(v)
	}
	i, runes := 1, 0
	for i < len(s) && runes < 32 {
		r, size := utf8.DecodeRuneInString(s[i:])
		if strings.ContainsRune("\t\n\f <&#;", r) {
			break
		}
		i += size
		runes++
	}
	if runes == 0 {
		return 0, ""
	}
	if i < len(s) && s[i] == ';' {
		i++
	}
	if r, ok := wideEntities[s[1:i]]; ok {
		return i, r
	}
	return i, html.UnescapeString(s[:i])
}

// wideEntities are the HTML5 entities Go's html package leaves out because
// their replacement is longer than their name.
var wideEntities = map[string]string{"nLt;": "\u226A\u20D2", "nGt;": "\u226B\u20D2"}

func digitVal(c byte, base int) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case base == 16 && c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case base == 16 && c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// numericRef is Python's replacement of &#v; (html._replace_charref).
func numericRef(v int) string {
	switch {
	case v == 0:
		return "\uFFFD"
	case v == 0x0D:
		return "\r"
	case v >= 0x80 && v <= 0x9F:
		// Windows-1252, undefined bytes kept as C1 controls: Go's table is
		// the same as Python's _invalid_charrefs here.
		return html.UnescapeString("&#" + strconv.Itoa(v) + ";")
	case v >= 0xD800 && v <= 0xDFFF, v > unicode.MaxRune:
		return "\uFFFD"
	case v >= 0x01 && v <= 0x08, v == 0x0B, v >= 0x0E && v <= 0x1F, v == 0x7F,
		v >= 0xFDD0 && v <= 0xFDEF, v&0xFFFE == 0xFFFE:
		return "" // Python drops these code points
	}
	return string(rune(v))
}

// pyLower is Python's str.lower: simple lower-case mappings plus the two
// differences from Go's strings.ToLower, İ → "i̇" and the final sigma.
func pyLower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s) + 2)
	for i, r := range rs {
		switch r {
		case 'İ':
			b.WriteString("i\u0307")
		case 'Σ':
			if finalSigma(rs, i) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma is Unicode's Final_Sigma condition, as CPython tests it: a cased
// letter before (skipping case-ignorable ones) and none after.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && isCaseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !isCased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && isCaseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !isCased(rs[j])
}

// isCased is Unicode's derived property Cased.
func isCased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.In(r, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// isCaseIgnorable is Unicode's derived property Case_Ignorable: marks,
// format characters, modifiers and the Word_Break MidLetter, MidNumLet and
// Single_Quote characters.
func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyValidUTF8 replaces invalid UTF-8 in s like pyDecodeUTF8.
func pyValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return pyDecodeUTF8([]byte(s))
}

// pyDecodeUTF8 is Python's bytes.decode("utf-8", errors="replace"): each
// maximal invalid subpart becomes one U+FFFD (strings.ToValidUTF8 would
// merge a whole run of them into one).
func pyDecodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[i : i+size])
			i += size
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += invalidPrefixLen(b[i:])
	}
	return sb.String()
}

// invalidPrefixLen is the length of the maximal subpart of an ill-formed
// sequence at the start of b: a lead byte and the continuation bytes that
// still fit it.
func invalidPrefixLen(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	need := 0
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1
	}
	n := 1
	for n <= need && n < len(b) && b[n] >= lo && b[n] <= hi {
		lo, hi = 0x80, 0xBF
		n++
	}
	return n
}
