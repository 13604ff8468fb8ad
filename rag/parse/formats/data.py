"""Data formats: CSV rows and JSON values flattened into searchable 'key: value' lines."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rag.parse.formats.common import Parsed, decode, malformed, normalise, one_line
from rag.types import LoadError

_CSV_DELIMITERS = (",", ";", "\t", "|")


def parse_csv(data: bytes, delimiter: str | None = None) -> Parsed:
    """Each row as `row_line` writes it. The first row is the header, and the delimiter is whichever
    of , ; tab | it uses most (csv.Sniffer guesses wrong on ragged rows)."""
    text = decode(data)
    if delimiter is None:
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = max(_CSV_DELIMITERS, key=first_line.count)  # ties go to the first: ','
    with malformed("CSV"):
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [one_line(h) for h in next(rows, [])]
        lines = [line for row in rows if (line := row_line(header, row))]
    return normalise("\n".join(lines)), None, []


def parse_tsv(data: bytes) -> Parsed:
    """Tab-separated values: CSV's rows with the delimiter fixed (a sniffed one could be ',' in prose)."""
    return parse_csv(data, "\t")


def row_line(header: list[str], row: list[str]) -> str:
    """A row as 'header: value; header: value', empty cells left out: every row names its columns, so
    every chunk of a table carries its header (chunks are verbatim slices of the text, so the header
    cannot be added to them afterwards). Shared by CSV and spreadsheets."""
    return "; ".join(
        f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {one_line(value)}"
        for i, value in enumerate(row)
        if value.strip()
    )


def parse_json(data: bytes) -> Parsed:
    """Flattened to 'a.b[0].c: value' lines, so keys are searchable next to their values; a top-level
    string "title" is the title."""
    with malformed("JSON"):  # RecursionError on absurd nesting
        value = _parse_json(decode(data))
        text = _json_text([value])
    title = value.get("title") if isinstance(value, dict) else None
    return text, title if isinstance(title, str) else None, []


def parse_jsonl(data: bytes) -> Parsed:
    """One JSON value per line, each flattened like a .json file; records separated by a blank line."""
    with malformed("JSON Lines"):
        lines = enumerate(decode(data).splitlines(), start=1)
        return _json_text([_parse_json(line, number) for number, line in lines if line.strip()]), None, []


def _parse_json(text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LoadError(f"invalid JSON at line {line or e.lineno}, column {e.colno}: {e.msg}") from e


def _json_text(values: list[Any]) -> str:
    blocks = []
    for value in values:
        lines: list[str] = []
        _flatten(value, "", lines)
        blocks.append("\n".join(lines))
    return normalise("\n\n".join(blocks))


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(child, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _flatten(child, f"{path}[{i}]", out)
    else:
        shown = value if isinstance(value, str) else json.dumps(value)
        out.append(f"{path}: {shown}" if path else shown)
