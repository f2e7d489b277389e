"""Regenerates testdata/python_ref.json: reference data from OpenAI CLIP's own
simple_tokenizer (run, not copied) and from the Python pieces it relies on
(html.unescape, str.strip, str.lower, the regex module).

Usage (Debian's /usr/bin/python3 with python3-regex):

    git clone https://github.com/openai/CLIP /tmp/CLIP
    /usr/bin/python3 testdata/gen/make_python_ref.py /tmp/CLIP > testdata/python_ref.json

The committed file came from openai/CLIP commit d05afc4 (`git archive HEAD clip`),
Python 3.11.2, python3-regex 0.1.20221031 (Debian 12). The random texts use a
fixed seed, so a rerun gives the same file.

ftfy is replaced by a stub whose fix_text is the identity, as in this package.
"""
import html
import html.entities
import importlib.util
import json
import random
import sys
import types
import unicodedata

import regex

clip_dir = sys.argv[1]

ftfy = types.ModuleType("ftfy")
ftfy.fix_text = lambda s: s
sys.modules["ftfy"] = ftfy
spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", clip_dir + "/clip/simple_tokenizer.py")
st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(st)
tok = st.SimpleTokenizer(clip_dir + "/clip/bpe_simple_vocab_16e6.txt.gz")

MAX = 0x110000


def code_points():
    for cp in range(MAX):
        if not 0xD800 <= cp <= 0xDFFF:
            yield cp


def ranges(pred):
    """Inclusive [lo, hi] ranges of code points satisfying pred."""
    out = []
    for cp in code_points():
        if pred(cp):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


pat = tok.pat
one = lambda r: regex.compile(r, regex.IGNORECASE)
cls_l, cls_n, cls_o = one(r"[\p{L}]"), one(r"[\p{N}]"), one(r"[^\s\p{L}\p{N}]")
ws = regex.compile(r"\s")

# Final sigma: "A"+c+"Σ" ends in ς iff c is case-ignorable or cased, "AΣ"+c
# keeps ς iff c is case-ignorable or not cased, c+"Σ" ends in ς iff c is
# cased and not case-ignorable.
def ignorable(cp):
    c = chr(cp)
    return ("A" + c + "Σ").lower().endswith("ς") and ("AΣ" + c).lower()[1] == "ς"


def cased_not_ignorable(cp):
    return (chr(cp) + "Σ").lower().endswith("ς")


classes = {
    "letter": ranges(lambda cp: cls_l.match(chr(cp)) is not None),
    "number": ranges(lambda cp: cls_n.match(chr(cp)) is not None),
    "other": ranges(lambda cp: cls_o.match(chr(cp)) is not None),
    "regex_space": ranges(lambda cp: ws.match(chr(cp)) is not None),
    "isspace": ranges(lambda cp: chr(cp).isspace()),
    "case_ignorable": ranges(ignorable),
    "cased_not_ignorable": ranges(cased_not_ignorable),
    # str.lower uses unicodedata's Unicode version (14.0 in Python 3.11), the
    # regex module its own (15.0, as Go): characters this Python does not know
    # are left out of the case-property comparison.
    "unicodedata_assigned": ranges(lambda cp: unicodedata.category(chr(cp)) != "Cn"),
}
lower_map = [[cp, chr(cp).lower()] for cp in code_points() if chr(cp).lower() != chr(cp)]

# One pass of html.unescape over every entity name in several contexts, and
# numeric references around the special cases.
unescape_in = []
for name in sorted(html.entities.html5):
    bare = name.rstrip(";")
    unescape_in += ["&" + name + "z", "&" + bare + ".x", "&" + bare + "é;"]
for num in list(range(0, 0x30)) + list(range(0x70, 0xA2)) + [0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFDCF, 0xFDD0,
                                                                0xFDEF, 0xFDF0, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000,
                                                                0x1FFFE, 0x10FFFD, 0x10FFFF, 0x110000, 10**30]:
    unescape_in += ["&#%d;" % num, "&#%d" % num, "&#x%X;" % num, "&#x%xq" % num, "&#00%d;" % num]
unescape_in += ["&#;", "&#x;", "&#X", "&#", "&", "&&amp;", "&;", "& amp;", "&#1", "&#9x", "&#65&#66",
                "&ampamp;", "&amp;amp;", "&#38;amp;", "&" + "a" * 40 + ";", "&notit;", "&notin;", "&copy2021",
                "&AMP;&AMP", "&lt&gt", "&\u00e9;", "&amp\r", "&amp\v;", "&ampé", "&frac12x"]
unescape = [[s, html.unescape(s)] for s in unescape_in]

# Texts through the whole tokenizer. Hand-picked corner cases, then random
# mixes of them (fixed seed).
texts = [
    "", " ", "\x1c", "a\x1cb", "\x1c a \x1f", "a\u00a0b\u3000c\u2028d\x85e\vf\x1dg",
    "tab\tand\r\nCRLF", "  \u2003  spaced  \u2003  ",
    "&amp;lt;b&amp;gt;", "&amp;amp;lt;", "&#38;amp;amp;", "&#65&#x42;&#67", "&#7;bell&#0;nul&#x80;&#129;",
    "&#xD800;&#1114112;&#99999999999999999999;", "&#x;&#;&#5", "&copy2021 &notit; &ampx &AMP", "&nbsp;&nbsp;x&nbsp;",
    "İstanbul İİ", "ΟΔΟΣ ΚΑΛΟΣ.", "ΣΑΣ", "Σ", "ΑΣ'Β", "ΑΣ\u0301", "A.Σ", "ǅungla ǈ", "ẞ straße",
    "<|startoftext|>hello<|endoftext|>", "<|ENDOFTEXT|>", "<|ſtartoftext|>", "!<|endoftext|>", "<|endoftext|",
    "IT'S WE'VE THEY'LL I'D YOU'RE I'M DON'T", "it'ſ", "'dog ''s '", "rock'n'roll",
    "a\u0345b", "x\u0345", "\u0345", "e\u0301te\u0301", "\u0130\u0307",
    "١٢٣ ½ Ⅻ ⅻ ²³ 𝟘𝟙", "café\u200bbar", "👩\u200d👩\u200d👧 🇩🇪 ✈️", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ｆｕｌｌｗｉｄｔｈ１２３",
    "ﬁne ﬂow", "中文，标点。", "עברית ‏עולם", "العربية ١٢", "देवनागरी", "한국어 텍스트", "ไทย",
    "\u00ad soft\u00adhyphen", "zero\u200cwidth\u200djoin", "a" * 300, "ab" * 100 + "x",
    "low-quality, blurry, jpeg artifacts, 8k, masterpiece", "The QUICK brown fox's 2 jumps!!!",
]
pieces = ["&amp;", "&lt;", "&#39;", "&#x27;", "&nbsp;", "&copy", "&#128;", " ", "  ", "\t", "\n", "\u00a0", "\x1c",
          "İ", "Σ", "ΟΣ", "ς", "'s", "'LL", "'", "<|endoftext|>", "!", "?!", ".", ",", "-", "1", "42", "½", "Ⅳ",
          "photo", "Photo", "QUALITY", "blurry", "naïve", "日本", "🙂", "\u0301", "\u0345", "x", "X", "é", "ß"]
rng = random.Random(20240607)
for _ in range(300):
    texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))

encode = []
for t in texts:
    cleaned = st.whitespace_clean(st.basic_clean(t)).lower()
    encode.append({"text": t, "cleaned": cleaned, "pretokens": regex.findall(pat, cleaned), "bpe_ids": tok.encode(t)})

# Decoding byte-level ids, including cut UTF-8 sequences and lone bytes.
bid = {b: tok.encoder[tok.byte_encoder[b]] for b in range(256)}
bend = {b: tok.encoder[tok.byte_encoder[b] + "</w>"] for b in range(256)}
decode_in = [
    [bid[0xE2], bid[0x82]], [bid[0xE2], bid[0x82], bend[0xAC]], [bid[0xF0], bid[0x9F], bid[0x98]],
    [bid[0xED], bid[0xA0], bend[0x80]], [bid[0xFF], bid[0xFE], bend[0x41]], [bid[0xC0], bend[0xAF]],
    [bid[0xE0], bid[0x80], bend[0x80]], [bid[0xF4], bid[0x90], bid[0x80], bend[0x80]], [bid[0xF5], bend[0x80]],
    [bid[0xC3], bid[0x28], bid[0xE2], bid[0x28], bend[0xA1]], [bend[0xC3]], [bid[0xF0], bid[0x9F], bend[0x41]],
    [49406, 320, 1125, 49407], [256, 257, 49405],
]
decode = [[ids, tok.decode(ids)] for ids in decode_in]

json.dump({
    "source": "testdata/gen/make_python_ref.py: OpenAI CLIP simple_tokenizer (ftfy stubbed as identity), "
              "Python %s, regex %s, unicodedata %s" % (sys.version.split()[0], regex.__version__,
                                                        unicodedata.unidata_version),
    "classes": classes,
    "lower_map": lower_map,
    "unescape": unescape,
    "encode": encode,
    "decode": decode,
}, sys.stdout, ensure_ascii=False, separators=(",", ":"))
