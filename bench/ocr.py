"""What OCR costs here: seconds per scanned A4 page, and how many of its words come back.

Builds a PDF of ``--pages`` pages (default 3) of prose set in 11-point DejaVu Sans on 14-point leading,
"scanned" at 200 dpi
(page images, no text layer: what a scanner writes), then loads it as ingest does (rag.parse.formats:
pypdfium2 renders each page, RapidOCR reads it). The models' one-off start (import and session set-up,
paid once per parser process) is timed apart from the pages. Word accuracy is the share of the page's
words found, in order, in what OCR returned (difflib's matching blocks over the word sequences).

``python -m bench ocr [--pages N]`` prints the table and writes ``bench/results/ocr.json``.
"""

from __future__ import annotations

import argparse
import difflib
import io
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import report, timer

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DPI = 200
PROSE = (
    "The keeper climbed to the lantern at dusk and trimmed the wicks before lighting the lamp. It burned "
    "colza oil until 1870, and paraffin after that. The fog signal sounded every two minutes whenever the "
    "visibility fell below three miles. The log records the wind, the sea state and every vessel that "
    "passed the reef during the watch, together with the time the light was shown and the time it was put "
    "out at sunrise. In the winter of 1881 a storm broke the lower windows of the tower, and the keepers "
    "spent three days bailing the oil room. "
)


def _page_lines(number: int, count: int = 40) -> list[str]:
    """40 lines of about 80 characters, each page starting at another sentence."""
    sentences = [s.strip() for s in PROSE.split(". ") if s.strip()]
    text = ". ".join(sentences[number % len(sentences) :] + sentences * 8).replace("..", ".")
    return textwrap.wrap(text, 80)[:count]


def _scanned_pdf(pages: list[list[str]]) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    try:
        font: Any = ImageFont.truetype(FONT, round(11 / 72 * DPI))
    except OSError:  # no DejaVu: Pillow's own scalable font
        font = ImageFont.load_default(round(11 / 72 * DPI))
    images = []
    for lines in pages:
        image = Image.new("L", (round(8.27 * DPI), round(11.69 * DPI)), 255)  # A4
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            draw.text((DPI, DPI + i * round(14 / 72 * DPI)), line, font=font, fill=0)  # 14 pt leading
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=DPI)
    return buf.getvalue()


def _accuracy(expected: list[str], found: list[str]) -> float:
    matcher = difflib.SequenceMatcher(a=expected, b=found, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / max(1, len(expected))


def run(pages: int = 3) -> Path:
    from PIL import Image

    from rag.parse.formats import load
    from rag.parse.formats.ocr import recognise

    texts = [_page_lines(n) for n in range(pages)]
    with timer() as start_up:
        recognise(Image.new("RGB", (64, 64), "white"))  # imports and loads the models
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.pdf"
        path.write_bytes(_scanned_pdf(texts))
        started = time.perf_counter()
        doc = load(path)
        elapsed = time.perf_counter() - started
    expected = [w for lines in texts for line in lines for w in line.split()]
    accuracy = _accuracy(expected, doc.text.split())
    rows = [
        ("OCR models' start-up, once per parser process (s)", round(start_up(), 2), ""),
        (f"seconds per scanned A4 page ({DPI} dpi, 40 lines of 11 pt)", round(elapsed / pages, 2), ""),
        ("words read back exactly (share)", round(accuracy, 3), ""),
        ("pages", pages, ""),
    ]
    return report("ocr", rows, {"pages": pages, "seconds": elapsed, "accuracy": accuracy, "dpi": DPI})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ocr")
    parser.add_argument("--pages", type=int, default=3)
    run(parser.parse_args(argv).pages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
