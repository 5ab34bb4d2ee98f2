"""Normalising short answers and matching a generated reply against them.

:func:`normalise_answer` maps equivalent spellings to one form: "The answer is Four." and
"4" both become ``"4"``, "H₂O" and "h2o" both ``"h2o"``.

:func:`exact_match` decides whether a reply answers a question. The rule:

    the generation is correct when one accepted answer, normalised, appears as a
    contiguous run of whole words in the normalised *first sentence* of the generation.

So "The capital of France is Paris." matches "Paris" (a model seldom answers with the bare
word), "14" does not match "4" and "Parisian" does not match "Paris" (whole words only),
and "Delhi" does not match "New Delhi" (every word of the answer must be there; list
"Delhi" as a variant to accept it). Only the first sentence counts, so a reply that wanders
on to other topics is judged by what it said first. Known limits: a first sentence that
names several candidates ("Paris or Lyon") is accepted, and "one" as a pronoun reads as the
number 1; the built-in questions never contain their own answer, so restating the question
cannot score.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["exact_match", "first_sentence", "normalise_answer"]

_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER_WORDS = {w: n for n, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_ARTICLES = frozenset({"a", "an", "the"})

# A word is a run of letters/digits; a decimal point between digits stays ("3.5").
_TOKEN = re.compile(r"[^\W_]+(?:\.\d+)*")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:correct\s+)?answer\s*(?:is\b|:)\s*")
# A sentence ends at . ! or ? followed (after closing quotes or brackets) by a space or the end.
_SENTENCE_END = re.compile(r"[.!?]+(?=[\"'”’)\]]*(?:\s|$))")


def _fold(text: str) -> str:
    # NFKD turns subscripts and superscripts into digits (H₂O -> H2O) and splits accents off.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _numbers_to_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else None
        if word in _TENS and nxt is not None and _NUMBER_WORDS.get(nxt, 10) < 10 and nxt != "zero":
            out.append(str(_NUMBER_WORDS[word] + _NUMBER_WORDS[nxt]))  # twenty one -> 21
            i += 2
            continue
        if word == "hundred" and out and out[-1] in ("1", "a"):
            after = words[i + 1] if i + 1 < len(words) else None
            if after != "and" and after not in _NUMBER_WORDS:  # 101..999 stay as words
                out[-1] = "100"
                i += 1
                continue
        out.append(str(_NUMBER_WORDS[word]) if word in _NUMBER_WORDS else word)
        i += 1
    return out


def normalise_answer(text: str) -> str:
    """The canonical form of a short answer, for comparing answers with each other.

    Lower case; accents dropped and Unicode subscripts made digits ("H₂O" -> "h2o"); a leading
    "the answer is" / "answer:" removed; punctuation and symbols become spaces (a decimal point
    between digits and nothing else stays, "1,000" -> "1000"); number words from zero to one
    hundred become digits ("twenty-one" -> "21"); the articles a, an, the are dropped; words are
    joined by single spaces. The result may be empty (e.g. for "The.").
    """
    folded = _ANSWER_PREFIX.sub("", _fold(text))
    words = _TOKEN.findall(_THOUSANDS.sub("", folded))
    return " ".join(w for w in _numbers_to_digits(words) if w not in _ARTICLES)


def first_sentence(text: str) -> str:
    """The first sentence of the first non-blank line of ``text`` (without its end mark)."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    end = _SENTENCE_END.search(line)
    return (line[: end.start()] if end else line).strip()


def _contains(words: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(words[i : i + n] == needle for i in range(len(words) - n + 1))


def exact_match(generation: str, answers: str | Sequence[str]) -> bool:
    """Whether ``generation`` gives one of the accepted ``answers`` (see the module's rule).

    ``answers`` is one answer or a list of accepted variants; raises ``ValueError`` when none
    of them is non-empty after :func:`normalise_answer`.
    """
    variants = [answers] if isinstance(answers, str) else list(answers)
    needles = [n.split() for n in map(normalise_answer, variants) if n]
    if not needles:
        raise ValueError(
            f"no accepted answer is left after normalisation (got {variants!r}); "
            "give at least one answer with a word or a number in it"
        )
    words = normalise_answer(first_sentence(generation)).split()
    return any(_contains(words, needle) for needle in needles)
