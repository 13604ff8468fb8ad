"""Images (PNG, JPEG, TIFF, BMP, GIF, WebP, HEIC), read by OCR (rag.parse.formats.ocr). Each frame of a
multi-page TIFF is a page with a section of its own; a photo's EXIF orientation is applied first. An
image in which OCR finds no text is a failure that says so, never an empty document."""

from __future__ import annotations

import io
import time
import warnings

from rag.parse.formats.common import Builder, Parsed, malformed
from rag.parse.formats.ocr import MAX_PIXELS, check_time, recognise
from rag.types import LoadError

_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")
MAX_FRAMES = 500


def parse_image(data: bytes) -> Parsed:
    from PIL import Image, ImageOps, ImageSequence

    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        _register_heif()
    builder = Builder()
    with malformed("image"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the reason, if any, is the error
        try:
            image = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError as e:
            raise LoadError("not an image this installation can decode (damaged, or another format)") from e
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise LoadError(f"image is {width:,} x {height:,} pixels, over the {MAX_PIXELS:,}-pixel limit")
        frames = getattr(image, "n_frames", 1)
        if frames > MAX_FRAMES:
            raise LoadError(f"image has {frames:,} frames, over the {MAX_FRAMES}-frame limit")
        started = time.monotonic()
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            check_time(number - 1, frames, started)
            if frames > 1:
                builder.section(page=number)
            if frame.size[0] * frame.size[1] > MAX_PIXELS:
                raise LoadError(f"image frame {number} is over the {MAX_PIXELS:,}-pixel limit")
            builder.add(recognise(ImageOps.exif_transpose(frame) or frame))
            if image.format == "GIF":  # an animation's frames repeat its text: the first one is enough
                break
    text, sections = builder.build()
    if not text:
        raise LoadError("no text found by OCR")
    return text, None, sections


def _register_heif() -> None:
    try:
        from pi_heif import register_heif_opener
    except ImportError as e:
        raise LoadError("HEIC images need the pi-heif package (pip install pi-heif)") from e
    register_heif_opener()
