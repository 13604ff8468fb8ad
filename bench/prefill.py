"""Prefill benchmark: first-token latency of prompts of about 400 and 1,400 tokens, with the kernel
that computes softmax weights only for the rows it keeps (SDPA for the layer output) against the
eager reference that materialises every layer's (heads, P, P) weights.

Runs are interleaved and the median of `repeats` is reported. `python -m bench prefill` prints a
table and writes bench/results/prefill.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from bench.common import report
from bench.decode import QUESTION, sample_sources
from rag.config import Settings
from rag.generate.attention import ATTENTION, EAGER_ATTENTION
from rag.generate.generator import Generator
from rag.types import Source

SIZES = (400, 1400)


def sources_of(generator: Generator, tokens: int) -> list[Source]:
    """Sample passages, cycled under new chunk ids, until the prompt reaches about `tokens` tokens."""
    base, sources = sample_sources(), list[Source]()
    while len(generator.prompts.build(QUESTION, sources).token_ids) < tokens:
        s = base[len(sources) % len(base)]
        sources.append(Source(rank=len(sources) + 1, chunk_id=len(sources) + 1, document_id=s.document_id,
                              path=s.path, title=f"{s.title} {len(sources) + 1}", text=s.text,
                              char_start=0, char_end=len(s.text), score=1.0))
    return sources


def first_token_ms(generator: Generator, sources: list[Source], attention: str) -> float:
    generator.model.set_attn_implementation(attention)
    try:
        return generator.generate(QUESTION, sources, max_new_tokens=1).prefill_ms
    finally:
        generator.model.set_attn_implementation(ATTENTION)


def measure(settings: Settings | None = None, *, repeats: int = 3) -> dict[str, Any]:
    settings = settings or Settings()
    generator = Generator.load(settings.model_copy(update={"max_context_tokens": max(SIZES) + 200}))
    rows: dict[str, Any] = {"model": generator.name, "threads": torch.get_num_threads(), "repeats": repeats}
    for size in SIZES:
        sources = sources_of(generator, size)
        first_token_ms(generator, sources, ATTENTION)  # warm-up at this size
        times: dict[str, list[float]] = {"one_row": [], "eager": []}
        for _ in range(repeats):
            times["one_row"].append(first_token_ms(generator, sources, ATTENTION))
            times["eager"].append(first_token_ms(generator, sources, EAGER_ATTENTION))
        one_row, eager = statistics.median(times["one_row"]), statistics.median(times["eager"])
        rows[f"p{size}"] = {
            "prompt_tokens": len(generator.prompts.build(QUESTION, sources).token_ids),
            "first_token_ms_one_row": one_row,
            "first_token_ms_eager": eager,
            "speedup": eager / one_row,
        }
    return rows


def run(settings: Settings | None = None, *, repeats: int = 3) -> dict[str, Any]:
    r = measure(settings, repeats=repeats)
    table: list[tuple[str, Any, str]] = [("model", f"{r['model']} ({r['threads']} threads)", "")]
    for size in SIZES:
        p = r[f"p{size}"]
        table += [
            (f"~{size} tokens ({p['prompt_tokens']}): first token ms, eager", p["first_token_ms_eager"], ""),
            (f"~{size} tokens: first token ms, one-row (SDPA)", p["first_token_ms_one_row"], ""),
            (f"~{size} tokens: speed-up eager / one-row", p["speedup"], "report"),
        ]
    report("prefill", table, r)
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    run(repeats=parser.parse_args(argv).repeats)


if __name__ == "__main__":
    main()
