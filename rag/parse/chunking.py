"""Token-aware chunking with exact character offsets.

Chunks are measured in the embedder's own tokens (so none is truncated when embedded), never cross a
section (a PDF page, a heading's text), and end at the strongest boundary available near the token
limit: a paragraph break, then a line break, then a sentence end, then any whitespace. Every chunk is
a verbatim slice of the document text: ``text[char_start:char_end] == chunk.text``, so a citation can
point into the source.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from rag.text import CLAUSE_END
from rag.types import ChunkSpan, LoadedDocument, Section

# Boundary strength between two tokens, by what the gap between them contains.
_PARAGRAPH, _LINE, _SENTENCE, _SPACE, _NONE = 4, 3, 2, 1, 0
_TOKENIZE_BLOCK_CHARS = 100_000  # tokenise huge sections in blocks to bound memory


class OffsetTokenizer(Protocol):
    def __call__(self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool) -> dict: ...


@dataclass(frozen=True)
class ChunkerConfig:
    max_tokens: int = 200  # MiniLM was trained on 128-token inputs and truncates at 256
    overlap_tokens: int = 32  # context carried into the next chunk so a fact cut in two is still found


class Chunker:
    """Split a document's text into ChunkSpans using a tokenizer that reports character offsets."""

    def __init__(self, tokenizer: OffsetTokenizer, config: ChunkerConfig) -> None:
        if config.overlap_tokens >= config.max_tokens:
            raise ValueError("chunk overlap must be smaller than the chunk size")
        self.tokenizer = tokenizer
        self.config = config

    def chunk(self, text: str, sections: list[Section] | None = None) -> list[ChunkSpan]:
        spans = sections or [Section(0, len(text))]
        chunks: list[ChunkSpan] = []
        for section in spans:
            chunks.extend(self._chunk_section(text, section))
        return chunks

    def _token_offsets(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Token (start, end) char offsets for text[start:end], tokenised in blocks cut at whitespace."""
        offsets: list[tuple[int, int]] = []
        pos = start
        while pos < end:
            stop = min(end, pos + _TOKENIZE_BLOCK_CHARS)
            if stop < end:
                cut = text.rfind(" ", pos, stop)
                cut = max(cut, text.rfind("\n", pos, stop))
                stop = cut if cut > pos else stop
            enc = self.tokenizer(text[pos:stop], add_special_tokens=False, return_offsets_mapping=True)
            offsets.extend((pos + s, pos + e) for s, e in enc["offset_mapping"] if e > s)
            pos = stop
        return offsets

    def _chunk_section(self, text: str, section: Section) -> Iterator[ChunkSpan]:
        toks = self._token_offsets(text, section.start, section.end)
        if not toks:
            return
        # strength[i] = how good a place it is to cut *before* token i
        strength = [_NONE] * (len(toks) + 1)
        strength[len(toks)] = _PARAGRAPH
        for i in range(1, len(toks)):
            gap = text[toks[i - 1][1] : toks[i][0]]
            if "\n\n" in gap:
                strength[i] = _PARAGRAPH
            elif "\n" in gap:
                strength[i] = _LINE
            elif gap and CLAUSE_END.search(text[toks[i - 1][0] : toks[i - 1][1]]):
                strength[i] = _SENTENCE
            elif gap:
                strength[i] = _SPACE
        max_tokens, overlap = self.config.max_tokens, self.config.overlap_tokens
        begin = 0
        while begin < len(toks):
            end = self._best_cut(strength, begin, min(len(toks), begin + max_tokens))
            char_start, char_end = toks[begin][0], toks[end - 1][1]
            yield ChunkSpan(
                text=text[char_start:char_end],
                char_start=char_start,
                char_end=char_end,
                token_count=end - begin,
                page=section.page,
                heading=section.heading,
            )
            if end >= len(toks):
                break
            begin = self._overlap_start(strength, begin, end, overlap)

    @staticmethod
    def _best_cut(strength: list[int], begin: int, limit: int) -> int:
        """The end (exclusive) in (begin, limit]: the strongest boundary in the window's second half,
        latest among equals; a hard cut at the limit only when no boundary exists at all."""
        if limit >= len(strength) - 1:
            return limit
        lowest = begin + max(1, (limit - begin) // 2)
        best, best_strength = limit, _NONE
        for i in range(limit, lowest - 1, -1):
            if strength[i] > best_strength:
                best, best_strength = i, strength[i]
                if best_strength == _PARAGRAPH:
                    break
        if best_strength == _NONE:  # e.g. one 300-token word: cut anywhere sensible before the limit
            for i in range(limit, begin, -1):
                if strength[i] > _NONE:
                    return i
        return best

    @staticmethod
    def _overlap_start(strength: list[int], begin: int, end: int, overlap: int) -> int:
        """Start of the next chunk: about ``overlap`` tokens back from ``end``, snapped forward to the
        first sentence (or at least word) boundary, and always past ``begin`` so chunking advances."""
        if overlap == 0:
            return end
        lo = max(begin + 1, end - overlap)
        for wanted in (_SENTENCE, _SPACE):
            for i in range(lo, end):
                if strength[i] >= wanted:
                    return i
        return end


def chunk_document(
    chunker: Chunker, doc: LoadedDocument, max_chunks: int
) -> tuple[list[ChunkSpan], str | None]:
    """A loaded document's chunks, or none and the reason it cannot be indexed (no text, too many
    chunks): one rule for local and distributed ingest, so both report a file the same way."""
    chunks = chunker.chunk(doc.text, covering_sections(doc.text, doc.sections))
    if not chunks:
        return [], "no text found in the file"
    if len(chunks) > max_chunks:
        limit = f"over the {max_chunks:,}-chunk limit (max_file_chunks)"
        return [], f"the file makes {len(chunks):,} chunks, {limit}"
    return chunks, None


def covering_sections(text: str, sections: list[Section]) -> list[Section]:
    """``sections`` plus one plain section for each stretch of text they leave out. The chunker only
    chunks the sections it is given, and loaders leave text before a document's first heading in no
    section: without this, a Markdown or HTML preamble was never indexed."""
    if not sections:
        return []  # the chunker takes the whole text
    out: list[Section] = []
    previous_end = 0
    for section in [*sections, Section(len(text), len(text))]:
        gap = text[previous_end : section.start]
        if gap.strip():
            start = previous_end + len(gap) - len(gap.lstrip())
            out.append(Section(start, previous_end + len(gap.rstrip())))
        if section.start < section.end:
            out.append(section)
        previous_end = max(previous_end, section.end)
    return out
