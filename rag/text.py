"""Text rules shared by indexing, attribution, the report and evaluation: words, stopwords, the [n]
citations answers carry, a draft that only names a source, where sentences end, and BM25's index
terms (words less stopwords, stemmed by Snowball through PyStemmer, a C library). One definition
each, so BM25, evidence matching and the evaluation's answer checks agree on what a word, a citation
and a sentence are."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import PurePath
from typing import TYPE_CHECKING

import Stemmer

if TYPE_CHECKING:
    from rag.types import Source

# Unicode letters and digits; underscores split too, so ``snake_case`` matches ``snake`` and ``case``.
WORD = re.compile(r"[^\W_]+")

# The usual English list (NLTK's): these words carry no topical signal, for BM25 or for matching.
STOPWORDS: frozenset[str] = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the and
    but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own same
    so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn
    hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn""".split()  # noqa: SIM905
)

# A citation of sources by number, as the generator is asked to write them: [1], [1, 3], [2; 4].
# Group 1 is the list of numbers.
CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")

# A sentence ends at . ! or ? (with closing quotes/brackets) and keeps the [n] citations that follow.
_SENTENCE_END = re.compile(
    r"""[.!?]+["'”’)]*(?:\s*""" + CITATION.pattern.replace("(", "(?:", 1) + r""")*(?=\s|$)"""
)
# A token that closes a clause or sentence: where the chunker prefers to cut.
CLAUSE_END = re.compile(r"[.!?;:][\"')\]]*$")
_ABBREVIATIONS = frozenset(
    ["e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "no", "fig", "approx", "inc", "ltd",
     "jr", "sr", "cf", "al", "ca"]
)  # fmt: skip

# Snowball's algorithm for this language (any of Stemmer.algorithms(); the stopwords are English).
STEMMER_LANGUAGE = "english"
# Bump when index terms change (WORD, STOPWORDS or the stemming): a saved BM25 index built with
# another tokenizer must be rebuilt.
TOKENIZER_VERSION = f"words-nostop-snowball-{STEMMER_LANGUAGE}-2"


def words(text: str) -> list[str]:
    """The lowercase words of ``text``, in order."""
    return WORD.findall(text.lower())


# ---- BM25's index terms. One stemmer per thread: a PyStemmer object is not thread-safe, and
# searches tokenise their queries on the retrieval pool's threads.

_stemmers = threading.local()


def stem(word: str) -> str:
    """Snowball stem of one lowercase word (STEMMER_LANGUAGE)."""
    stemmer = getattr(_stemmers, "stemmer", None)
    if stemmer is None:
        stemmer = _stemmers.stemmer = Stemmer.Stemmer(STEMMER_LANGUAGE, 0)  # 0: no cache (ours below)
    return str(stemmer.stemWord(word))


@lru_cache(maxsize=500_000)
def normalize_token(token: str) -> str | None:
    """Lowercase token → index term, or None for a stopword. Cached: vocabularies are Zipfian."""
    if token in STOPWORDS:
        return None
    return stem(token)


def term_counts(text: str) -> Counter[str]:
    """Term frequencies of ``text`` after lowercasing, word splitting, stopwords and stemming."""
    raw = Counter(words(text))
    out: Counter[str] = Counter()
    for tok, n in raw.items():
        term = normalize_token(tok)
        if term is not None:
            out[term] += n
    return out


def tokenize(text: str) -> list[str]:
    """The index terms of ``text`` in order (for inspection and tests; indexing uses ``term_counts``)."""
    return [t for t in (normalize_token(tok) for tok in words(text)) if t is not None]


# ---- sentences


def strip_citations(text: str) -> str:
    """``text`` without its [n] citations, whitespace folded."""
    return " ".join(CITATION.sub(" ", text).split())


_ASKS_FOR_A_SOURCE = re.compile(
    r"\b(which|what|whose)\s+(\w+\s+)?(document|file|source|page|pdf|article|note|report|paper)s?\b",
    re.IGNORECASE,
)


def names_only_a_source(answer: str, sources: Sequence[Source], question: str) -> bool:
    """True when the draft, citations aside, is nothing but a source's title or file name (the 0.5B
    model answers "[1] Normans__006" to about one SQuAD question in twenty-five): it points at a
    source instead of answering, so the pipeline shows the sources' evidence in its place. Unless the
    question asks which document it is: then naming one is the answer."""
    if _ASKS_FOR_A_SOURCE.search(question):
        return False
    said = words(strip_citations(answer))  # words alone: "Normans 006." names Normans__006
    names = {"".join(words(n))
             for s in sources for n in (s.title, PurePath(s.path).name, PurePath(s.path).stem)}
    if not said:
        return True
    # "The question is answered in passage-d2fd__000." points as much as the bare name does
    for k, word in enumerate(said):
        if "".join(said[k:]) in names:
            return True
        if word not in _POINTING:
            return False
    return False


# the words a draft may wrap around a source's name and still only point at it
_POINTING = frozenset({
    "the", "a", "this", "that", "it", "its", "answer", "answers", "answered", "question", "is", "are",
    "can", "be", "found", "given", "stated", "in", "see", "refer", "to", "source", "document", "file",
    "passage", "text",
})


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Char [start, end) of each sentence, whitespace trimmed; lines always break sentences."""
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        start = line.start()
        for m in _SENTENCE_END.finditer(text, line.start(), line.end()):
            if not _false_end(text, line.start(), m, line.end()):
                spans.append((start, m.end()))
                start = m.end()
        spans.append((start, line.end()))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            trimmed.append((start + lead, start + len(piece.rstrip())))
    return trimmed


def _false_end(text: str, line_start: int, m: re.Match[str], line_end: int) -> bool:
    """A period that ends an abbreviation, an initial or a list number, or runs on in lower case."""
    if not m.group().startswith("."):
        return False
    word = text[line_start : m.start()].rsplit(None, 1)[-1:] or [""]
    w = word[0].lstrip("([\"'").lower()
    if w in _ABBREVIATIONS or (len(w) == 1 and w.isalpha()):
        return True
    if w.isdigit() and not text[line_start : m.start()].strip()[: -len(w)].strip():
        return True  # "1." opening a list item
    rest = text[m.end() : line_end].lstrip()
    return bool(rest) and rest[0].islower()
