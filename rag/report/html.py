"""The attribution report: one self-contained HTML page for an Answer (`rag report ID --html FILE`).

The page needs nothing but itself: inline CSS, a little vanilla JS, no external resources. It renders
through Jinja2 with autoescape (templates/report.html), so every piece of user content (question,
answer, chunk text, paths, titles, model names) is HTML-escaped; the data the script reads is embedded
as JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes, and a Content-Security-Policy admits only
the page's own script (templates/report.js, by hash), so injected markup cannot run.

Each sentence's evidence (the source spans its tokens attended to most) is highlighted inside its
source, tinted by its mass; hover, focus or tap a sentence to light up its spans and the sources it
attended to. Answers stored before evidence existed fall back to a word-overlap guess, labelled as
such. Per sentence, a (layers × heads) heatmap shows which heads looked back at the sources.
``#focus=N`` (or ``?focus=N``) pre-selects sentence N on load.

This module renders; what the page shows is computed by `rag.report.view` (and where its highlights
fall by `rag.report.spans`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from rag.report.view import View, format_ms, format_share, format_time, head_colour
from rag.types import Answer

__all__ = ["render_html"]


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("rag.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(format_share=format_share, format_ms=format_ms, head_colour=head_colour)
    return env


@lru_cache(maxsize=1)
def _assets() -> tuple[Markup, Markup, str]:
    """The page's CSS, its one executable script, and the script's CSP hash."""
    root = resources.files("rag.report").joinpath("templates")
    css = root.joinpath("report.css").read_text(encoding="utf-8")
    script = root.joinpath("report.js").read_text(encoding="utf-8")
    if "</" in script or "</style" in css.lower():
        raise RuntimeError("report.js / report.css must not contain a closing tag")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # trusted, packaged text: inserted as is, so the script hashes exactly as served
    return Markup(css), Markup(script), f"'sha256-{digest}'"


def render_html(answer: Answer) -> str:
    """The whole report for ``answer`` as one self-contained HTML page (a str; write it as UTF-8)."""
    v = View(_sanitised(answer))
    css, script, script_hash = _assets()
    return _environment().get_template("report.html").render(
        v=v,
        a=v.answer,
        css=css,
        script=script,
        script_hash=script_hash,
        created=format_time(v.answer.created_at),
        data=_script_json(v.script_data()),
    )


def _script_json(data: dict[str, Any]) -> Markup:
    """``data`` as JSON that is safe inside <script type="application/json">: no ``<``, ``>`` or ``&``
    in it can close the element or open markup."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _clean(x: float, default: float = 0.0) -> float:
    """x, or ``default`` when it is NaN or infinite."""
    return float(x) if math.isfinite(x) else default


def _sanitised(answer: Answer) -> Answer:
    """A copy with NaN/inf numbers replaced (by 0; a threshold by 0.5) so the page and its JSON stay valid."""
    a = copy.deepcopy(answer)
    a.attention_sink = _clean(a.attention_sink or 0.0)
    for s in a.sentences:
        s.risk, s.lookback = _clean(s.risk), _clean(s.lookback)
        s.support = {int(k): _clean(x) for k, x in s.support.items()}
        for ev in s.evidence:
            ev.mass = _clean(ev.mass)
    for src in a.sources:
        src.score = _clean(src.score)
        if src.attention_mass is not None:
            src.attention_mass = _clean(src.attention_mass)
    h = a.hallucination
    h.risk, h.threshold = _clean(h.risk), _clean(h.threshold, 0.5)
    for name in ("retrieve_ms", "prefill_ms", "decode_ms", "attribute_ms", "total_ms"):
        setattr(a.timings, name, _clean(getattr(a.timings, name)))
    return a
