"""Optical character recognition for images and for PDF pages without a text layer.

The engine is RapidOCR (rapidocr-onnxruntime, Apache-2.0): PaddleOCR's PP-OCRv4 detection and
recognition models, shipped inside the wheel and run by ONNX Runtime, so nothing is downloaded at run
time. The angle classifier is off: scans and photos of pages are upright, and on lines with descenders
it turned text upside down (half the lines of a test page came out as noise with it on).

It runs where every parser runs, in the parser worker (rag.parse.worker), under the same caps: the
worker's memory limit, max_file_chars, and file_timeout_s. OCR is slow (README, "Supported files"), so
a PDF of many scanned pages stops at the time budget the worker sets here, with a reason that says how
many pages it read and what limit the whole file would need, instead of being killed without one.
"""

from __future__ import annotations

import time
import unicodedata
from functools import cache
from typing import TYPE_CHECKING, Any

from rag.types import LoadError

if TYPE_CHECKING:
    from PIL.Image import Image

MIN_SCORE = 0.5  # recognitions below this confidence are noise (texture read as letters)
MAX_PIXELS = 50_000_000  # a 50-megapixel photo; bigger images are refused before they are decoded
_MIN_SIDE = 8
_GROW = 0.2  # each detected box grows by this share of its height on every side before recognition
MAX_SIDE = 4096  # larger images are scaled down first: text that needs more is smaller than a scan's
_deadline: float | None = None
_budget_s: float | None = None


def set_budget(seconds: float | None) -> None:
    """Give the file about to be parsed ``seconds`` for OCR (None: no limit). The worker calls this
    before each file with a little less than file_timeout_s, so that it can answer before it is killed."""
    global _deadline, _budget_s
    _budget_s = seconds
    _deadline = None if seconds is None else time.monotonic() + seconds


def check_time(done: int, total: int, started: float) -> None:
    """Before OCR of page ``done + 1`` of ``total``: raise `LoadError` if, at the pace so far, it
    would end past the budget."""
    if _deadline is None or _budget_s is None or done == 0:
        return
    now = time.monotonic()
    per_page = (now - started) / done
    if now + per_page <= _deadline:
        return
    raise LoadError(
        f"scanned pages: OCR read {done} of {total} pages in {now - started:.0f} s ({per_page:.1f} s a page "
        f"here), and the whole file would need about {per_page * total + 5:.0f} s, over the "
        f"{_budget_s:.0f} s the file_timeout_s limit leaves; raise file_timeout_s to index it"
    )


@cache
def _engine() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as e:  # e.g. OpenCV's libGL.so.1 missing (README, set-up)
        raise LoadError(f"OCR is not available in this installation: {e}") from e
    # Detection at the image's own size up to 2,000 pixels a side: RapidOCR's default scales the *shorter*
    # side up to 736, which made a one-line 300 x 60 image 12 times bigger and its OCR 15 times slower.
    return RapidOCR(use_cls=False, print_verbose=False, det_limit_type="max", det_limit_side_len=2000)


def recognise(image: Image) -> str:
    """The text in ``image``: boxes on one line joined by spaces, lines by newlines, and a blank line
    where the gap between lines is more than a line high (a new paragraph)."""
    image = _bounded(image.convert("RGB"))
    if min(image.size) < _MIN_SIDE:  # a line of pixels holds no text (and the detector cannot resize it)
        return ""
    try:
        found = _read(image)
    except LoadError:
        raise
    except Exception as e:  # the engine's own errors, e.g. its ResizeImgError
        raise LoadError(f"OCR failed on this image ({type(e).__name__}: {e})") from e
    lines: list[tuple[float, float, list[tuple[float, str]]]] = []  # (top, bottom, [(left, text)])
    for box, text in sorted(found, key=lambda b: (min(p[1] for p in b[0]), min(p[0] for p in b[0]))):
        top, bottom = min(p[1] for p in box), max(p[1] for p in box)
        left = min(p[0] for p in box)
        if lines and top < (lines[-1][0] + lines[-1][1]) / 2:  # starts above the last line's middle
            lines[-1][2].append((left, text.strip()))
        else:
            lines.append((top, bottom, [(left, text.strip())]))
    out: list[str] = []
    for i, (top, bottom, words) in enumerate(lines):
        if i and top - lines[i - 1][1] > bottom - top:
            out.append("")
        out.append(" ".join(text for _, text in sorted(words)))
    # NFKC: the recogniser's alphabet is Chinese and English, and it writes some Latin letters in their
    # full-width forms ("ａbｃ"), which no typed query would match
    return unicodedata.normalize("NFKC", "\n".join(out))


def _read(image: Image) -> list[tuple[Any, str]]:
    """(box, text) for each line of text found: RapidOCR's detector, then its recogniser on each box
    grown by a fifth of its height all round. Its own pipeline crops the boxes tight, and on tight crops
    of 11-point prose the recogniser dropped the spaces of one line in three ("wind,theseastateandevery");
    with the margin it read a 40-line page word for word (bench ocr). Its pipeline also shrinks an image
    to 2,000 pixels before cropping, which makes the text smaller still: here only detection is scaled."""
    import numpy as np

    engine = _engine()
    array, _ = engine.maybe_add_letterbox(np.asarray(image), {})  # pads a strip too thin to detect in
    boxes, _ = engine.auto_text_det(array)
    if boxes is None or not len(boxes):
        return []
    height, width = array.shape[:2]
    grown = []
    for box in boxes:
        margin = _GROW * (box[3][1] - box[0][1] + box[2][1] - box[1][1]) / 2
        shifted = box + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float32) * margin
        grown.append(np.clip(shifted, 0, [width - 1, height - 1]).astype(np.float32))
    recognised, _ = engine.text_rec(engine.get_crop_img_list(array, grown))
    return [
        (box, text)
        for box, (text, score) in zip(boxes, recognised, strict=True)
        if score >= MIN_SCORE and any(ch.isalnum() for ch in text)  # a lone "." is a shape (a sun), not text
    ]


def _bounded(image: Image) -> Image:
    if max(image.size) <= MAX_SIDE:
        return image
    scale = MAX_SIDE / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
