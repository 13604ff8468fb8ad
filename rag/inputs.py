"""What sightline refuses in text and ids that users give it, in the same words for the CLI and the
REST service (api/schemas.py builds its validators from these).

NUL characters and lone surrogates (what invalid UTF-8 on a command line decodes to) survive neither
PostgreSQL nor UTF-8, so they are refused up front rather than failing deep inside a store or an
encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from rag.types import RETRIEVAL_MODES, BadInput, RetrievalMode

T = TypeVar("T")
_SHOWN_PROBLEMS = 5  # of one line's; then "(N more)"

# Every limit on what users give sightline lives here: the CLI's options, the REST schemas, the
# settings and the database's columns read their bounds from these.
MAX_QUESTION_CHARS = 4000  # docs/design.md, "REST": question (and search query) 1..4000 chars
MAX_ANSWER_CHARS = 4000  # an answer to attribute; with a question and context it stays in the model's window
MAX_CONTEXT_CHARS = 16000  # ~4k tokens of context to attribute against
# Characters do not bound tokens (4,000 CJK characters are ~11k tokens, 4,000 digits 4k), and eager
# attention over such a prompt takes minutes and gigabytes: what a user hands the decoder is bounded
# in its own tokens too (the generator's tokenizer; Generator.check_lengths).
MAX_QUESTION_TOKENS = 1024
MAX_ANSWER_TOKENS = 1024
MAX_SQL_INT = 2**31 - 1  # ids are SQL INTEGER columns: larger ones name nothing
MAX_K = 50  # sources one search or ask retrieves (Settings.top_k, --k, the REST k)
MAX_CHUNK_IDS = 50  # chunks one attribution may name
# Column widths (rag/storage/orm.py) and what may be asked of them: a document's path, a filter by
# path prefix; a document's type, a filter by type. Titles and headings longer than theirs are cut.
MAX_PATH_CHARS = 4096
MAX_DOC_TYPE_CHARS = 16
MAX_TITLE_CHARS = 1024  # a document's title and a chunk's heading


# What counts as blank: Python's whitespace and JSON Schema's (ECMA-262 \s) together, so that the
# published pattern below and the server's check agree on every string.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_WS_CLASS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# The same rules as JSON Schema patterns (ECMA-262), for the REST schema: no NUL anywhere; and some
# character that is neither NUL nor whitespace.
NO_NUL_PATTERN = r"^[^\x00]*$"
TEXT_PATTERN = rf"^[^\x00]*[^\x00{_WS_CLASS}][^\x00]*$"


def unclean(value: str) -> str | None:
    """Why ``value`` cannot be stored or encoded, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def blank(value: str) -> str | None:
    return "is empty (it must contain some non-whitespace text)" if not value.strip(WHITESPACE) else None


def check_text(value: str, what: str, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """``value`` when it is clean, not blank and at most ``max_chars`` long; BadInput naming ``what``
    ("the query", "the question") otherwise."""
    problem = unclean(value) or blank(value)
    if problem is None and len(value) > max_chars:
        problem = f"is {len(value):,} characters; the limit is {max_chars:,}"
    if problem:
        raise BadInput(f"{what} {problem}")
    return value


def check_mode(mode: str | None) -> RetrievalMode | None:
    """``mode`` when it names a retrieval mode, None when it is not given (the settings' mode then
    applies); BadInput otherwise."""
    if not mode:
        return None
    for known in RETRIEVAL_MODES:
        if mode == known:
            return known
    raise BadInput(f"unknown retrieval mode {mode!r}; choose from {', '.join(RETRIEVAL_MODES)}")


def valid_id(value: int) -> bool:
    """Whether ``value`` can be a row id at all (1..2^31-1); anything else names no row."""
    return 1 <= value <= MAX_SQL_INT


def read_text_file(path: Path, what: str, max_chars: int) -> str:
    """A UTF-8 text file of at most ``max_chars`` characters, read without reading more than that
    could take (``/dev/zero`` or a huge file is refused after a few KB, not read to the end)."""
    limit = 4 * max_chars  # a character is at most 4 bytes in UTF-8
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {what} from {path}: {(exc.strerror or str(exc)).lower()}") from None
    if len(data) > limit:
        raise BadInput(f"{what} in {path} is over the {max_chars:,}-character limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} in {path} is not UTF-8 text (byte {exc.start})") from None
    problem = unclean(text)
    if problem:
        raise BadInput(f"{what} in {path} {problem}")
    if len(text) > max_chars:
        raise BadInput(f"{what} in {path} is over the {max_chars:,}-character limit")
    return text


def read_jsonl(path: Path, shape: TypeAdapter[T]) -> Iterator[T]:
    """Each non-blank line of a JSONL file as ``shape``; a bad line is a ValueError that names the
    file, the line and the field (``data.jsonl:7: field 'hallucinated': Input should be ...``)."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield shape.validate_json(line)
            except ValidationError as exc:
                raise ValueError(f"{path}:{n}: {line_problems(exc)}") from None


def line_problems(exc: ValidationError) -> str:
    """A validation error in one line: each field with what is wrong with it."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            problems.append(f"missing field {field!r}")
        else:
            problems.append(f"field {field!r}: {error['msg']}" if field else error["msg"])
    more = len(problems) - _SHOWN_PROBLEMS
    return "; ".join(problems[:_SHOWN_PROBLEMS]) + (f" ({more} more)" if more > 0 else "")
