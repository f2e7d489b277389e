package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Alternatives of CLIP's pattern that are literals, in the pattern's order.
var (
	specialTokens = []string{sotText, eotText}
	contractions  = []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}
)

// pretokenize calls emit for each match of CLIP's pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// (re.IGNORECASE, Python's regex module) in s, as regex.findall does.
// Characters no alternative matches (spaces, U+0345) are skipped. A hand
// scanner rather than Go's regexp because the two engines fold case into
// character classes differently (U+0345).
func pretokenize(s string, emit func(string)) {
	for i := 0; i < len(s); {
		if n := matchLiterals(s[i:]); n > 0 {
			emit(s[i : i+n])
			i += n
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch classOf(r) {
		case classLetter:
			j := runEnd(s, i+size, classLetter)
			emit(s[i:j])
			i = j
		case classNumber: // [\p{N}] matches one character only
			emit(s[i : i+size])
			i += size
		case classOther:
			j := runEnd(s, i+size, classOther)
			emit(s[i:j])
			i = j
		default:
			i += size
		}
	}
}

// runEnd is the end of the run of class c starting at i.
func runEnd(s string, i int, c charClass) int {
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if classOf(r) != c {
			break
		}
		i += size
	}
	return i
}

// matchLiterals is the length of the special token or contraction at the
// start of s, 0 if none.
func matchLiterals(s string) int {
	var lits []string
	switch {
	case s == "":
		return 0
	case s[0] == '<':
		lits = specialTokens
	case s[0] == '\'':
		lits = contractions
	default:
		return 0
	}
	for _, lit := range lits {
		if n := prefixFold(s, lit); n > 0 {
			return n
		}
	}
	return 0
}

// prefixFold is the length of the prefix of s equal to lit under simple case
// folding (so "'ſ" matches 's, as with re.IGNORECASE), 0 if none.
func prefixFold(s, lit string) int {
	n := 0
	for _, lr := range lit {
		if n >= len(s) {
			return 0
		}
		r, size := utf8.DecodeRuneInString(s[n:])
		if !foldEqual(r, lr) {
			return 0
		}
		n += size
	}
	return n
}

// foldEqual reports whether a and b are in the same simple case-folding orbit.
func foldEqual(a, b rune) bool {
	if a == b {
		return true
	}
	for x := unicode.SimpleFold(b); x != b; x = unicode.SimpleFold(x) {
		if x == a {
			return true
		}
	}
	return false
}

// charClass is which class of CLIP's pattern a character belongs to.
type charClass uint8

const (
	classNone   charClass = iota // \s, or matched by no class
	classLetter                  // [\p{L}]
	classNumber                  // [\p{N}]
	classOther                   // [^\s\p{L}\p{N}]
)

// asciiClass caches classOf for ASCII.
var asciiClass = func() (t [utf8.RuneSelf]charClass) {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		t[r] = slowClassOf(r)
	}
	return t
}()

func classOf(r rune) charClass {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return slowClassOf(r)
}

// slowClassOf gives the classes the regex module uses with IGNORECASE:
// [\p{L}] and [\p{N}] match the character's own category, while the negated
// class also excludes characters whose case-fold orbit touches a letter or
// number (only U+0345 in Unicode 15), so those match no alternative.
func slowClassOf(r rune) charClass {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r), orbitHas(r, unicode.IsLetter), orbitHas(r, unicode.IsNumber):
		return classNone
	}
	return classOther
}

// orbitHas reports whether another member of r's case-fold orbit satisfies f.
func orbitHas(r rune, f func(rune) bool) bool {
	for x := unicode.SimpleFold(r); x != r; x = unicode.SimpleFold(x) {
		if f(x) {
			return true
		}
	}
	return false
}
