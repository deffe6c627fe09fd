r"""GPT-2's pre-tokenisation: the text cut into chunks before byte-level BPE runs inside each one.

OpenAI's GPT-2 splits text with one regular expression (from the `regex` package, which knows
Unicode property classes):

    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

that is, at every position the first alternative that matches wins: an English contraction; a
run of letters, a run of digits, or a run of anything else, each with at most one leading space;
a run of whitespace that stops before the last space preceding a word (so that space joins the
word: ``"a  b"`` -> ``"a", " ", " b"``); any other run of whitespace.

Python's own `re` has no ``\p{L}``, so this module reads the pattern by hand, one alternative
after the other, with the character classes taken from the Unicode database (`unicodedata`):
letters are the categories L*, digits N*, and whitespace the Unicode White_Space property (what
``\s`` means in `regex`; Python's ``str.isspace`` also counts U+001C..U+001F, which `regex` does
not). No dependency beyond the standard library.
"""
from __future__ import annotations

import unicodedata

CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# The Unicode White_Space property (Unicode 15), what \s matches in the `regex` package
WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                       "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def char_class(c: str) -> str:
    """'L' letter, 'N' number, 'S' whitespace or 'O' anything else: the pattern's four classes."""
    if c in WHITESPACE:
        return "S"
    major = unicodedata.category(c)[0]
    return major if major in ("L", "N") else "O"


# --8<-- [start:pretokenize]
def gpt2_pretokenize(text: str) -> list[str]:
    """The chunks GPT-2's pattern finds in `text`; joined, they give `text` back."""
    classes = [char_class(c) for c in text]
    n, i, chunks = len(text), 0, []

    def run_end(start: int, cls: str) -> int:          # end of the run of class `cls` from `start`
        j = start
        while j < n and classes[j] == cls:
            j += 1
        return j

    while i < n:
        # 's|'t|'re|'ve|'m|'ll|'d
        contraction = next((c for c in CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:
            end = i + len(contraction)
        # ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: one optional space, then a run of one class
        elif classes[i] != "S":
            end = run_end(i, classes[i])
        elif text[i] == " " and i + 1 < n and classes[i + 1] != "S":
            end = run_end(i + 1, classes[i + 1])
        else:
            # `\s+(?!\S)`: whitespace not followed by a non-space, by backing off one character;
            # `\s+` when backing off leaves nothing (a single space or tab before a word)
            end = run_end(i, "S")
            if end < n and end - 1 > i:
                end -= 1
        chunks.append(text[i:end])
        i = end
    return chunks
# --8<-- [end:pretokenize]
