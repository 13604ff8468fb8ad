"""Decode benchmark: what showing our work costs.

- decode: tok/s of `Generator.generate` (attention masses collected in the decoding pass) against a
  plain greedy `model.generate` of the same model on the same prompt, for the same number of new
  tokens (both forced to that many: no EOS), with sdpa and with eager attention. Target >= 0.95.
- prefix: first-token latency (prompt prefill + first token) with the cached instruction prefix
  against without it.

Runs are interleaved and the median of `repeats` is reported, so load from other processes hits
every variant alike. `python -m bench decode` (or `python -m bench.decode --tokens N`) prints a
table and writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from bench.common import report
from rag.config import Settings
from rag.generate.attention import ATTENTION
from rag.generate.generator import Generator
from rag.types import Source

TARGET = 0.95

_PASSAGES = {
    "Glaciers": (
        "A glacier is a persistent body of dense ice that is constantly moving under its own weight. "
        "Glaciers form where the accumulation of snow exceeds its ablation over many years, often "
        "centuries. They slowly deform and flow because of stresses induced by their weight, creating "
        "crevasses, seracs and other distinguishing features. Glacial ice is the largest reservoir of "
        "fresh water on Earth, holding about 69 percent of the world's freshwater."
    ),
    "Printing press": (
        "The printing press is a mechanical device for applying pressure to an inked surface resting "
        "upon a print medium, thereby transferring the ink. Johannes Gutenberg, a goldsmith from Mainz, "
        "developed a movable-type printing press around 1440. His press could produce up to 3,600 pages "
        "per workday, compared to forty by typographic hand-printing. The spread of printing is counted "
        "among the causes of the Renaissance and the Reformation."
    ),
    "Octopus": (
        "The octopus is a soft-bodied, eight-limbed mollusc. It has a complex nervous system and "
        "excellent sight, and is among the most intelligent of all invertebrates. Octopuses have three "
        "hearts: two pump blood through the gills and one through the rest of the body. Their blood is "
        "blue because it carries oxygen with copper-rich haemocyanin instead of iron-rich haemoglobin. "
        "Most species live only one to two years."
    ),
    "Marathon": (
        "The marathon is a long-distance foot race with a distance of 42.195 kilometres, usually run as "
        "a road race. The event was instituted in commemoration of the legend of the Greek soldier "
        "Pheidippides, who ran from the battlefield of Marathon to Athens to announce a victory. The "
        "distance was standardised in 1921 and is based on the course of the 1908 London Olympics."
    ),
}
QUESTION = "How did Gutenberg's printing press compare to printing by hand?"


def sample_sources() -> list[Source]:
    return [
        Source(rank=i + 1, chunk_id=i + 1, document_id=i + 1, path=f"bench/{title}.txt", title=title,
               text=text, char_start=0, char_end=len(text), score=1.0)
        for i, (title, text) in enumerate(_PASSAGES.items())
    ]


class _Clock(BaseStreamer):
    """Records when `generate` hands over each new token (the first put() is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _plain(generator: Generator, ids: torch.Tensor, n: int, attention: str) -> tuple[float, float]:
    """(total s, first-token s) of a plain greedy model.generate forced to n new tokens."""
    model = generator.model
    model.set_attn_implementation(attention)
    try:
        clock = _Clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock,
                                 pad_token_id=generator.tokenizer.eos_token_id)
        total = time.perf_counter() - t0
        assert out.shape[1] - ids.shape[1] == n
        return total, clock.times[1] - t0
    finally:
        model.set_attn_implementation(ATTENTION)


def _ours(generator: Generator, sources: list[Source], n: int) -> tuple[float, float]:
    """(total s, first-token s) of Generator.generate forced to n new tokens."""
    t0 = time.perf_counter()
    gen = generator.generate(QUESTION, sources, max_new_tokens=n)
    total = time.perf_counter() - t0
    assert len(gen.token_ids) == n and gen.features.shape[0] == n
    return total, gen.prefill_ms / 1000


def measure(settings: Settings | None = None, *, new_tokens: int = 48, repeats: int = 3) -> dict[str, Any]:
    """Measure decode speed with attribution vs plain generate, and the prefix cache's effect."""
    generator = Generator.load(settings)
    forced = copy.copy(generator)  # same model and prefix cache; never stops early
    forced.eos_ids, forced.stop_strings = frozenset(), ()
    sources = sample_sources()
    prompt = generator.prompts.build(QUESTION, sources)
    ids = torch.tensor([prompt.token_ids], device=generator.device)
    n = new_tokens

    _ours(forced, sources, 4)  # warm-up: allocator, thread pools
    _plain(generator, ids, 4, "sdpa")
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "sdpa": [], "eager": []}
    first: dict[str, list[float]] = {"cached": [], "uncached": []}
    for _ in range(repeats):
        runs["ours"].append(_ours(forced, sources, n))
        runs["sdpa"].append(_plain(generator, ids, n, "sdpa"))
        runs["eager"].append(_plain(generator, ids, n, "eager"))
        for name, use_cache in (("cached", True), ("uncached", False)):
            gen = generator.generate(QUESTION, sources, max_new_tokens=1, use_prefix_cache=use_cache)
            first[name].append(gen.prefill_ms)

    def rates(name: str) -> tuple[float, float]:
        """(end-to-end tok/s, decode-only tok/s after the first token), medians over repeats."""
        total = statistics.median(t for t, _ in runs[name])
        decode = statistics.median(t - f for t, f in runs[name])
        return n / total, (n - 1) / decode

    ours, sdpa, eager = rates("ours"), rates("sdpa"), rates("eager")
    cached, uncached = statistics.median(first["cached"]), statistics.median(first["uncached"])
    return {
        "model": generator.name,
        "device": str(generator.device),
        "threads": torch.get_num_threads(),
        "prompt_tokens": len(prompt.token_ids),
        "prefix_tokens": prompt.prefix_len,
        "new_tokens": n,
        "repeats": repeats,
        "ours_tok_s": ours[0],
        "ours_decode_tok_s": ours[1],
        "generate_sdpa_tok_s": sdpa[0],
        "generate_sdpa_decode_tok_s": sdpa[1],
        "generate_eager_tok_s": eager[0],
        "generate_eager_decode_tok_s": eager[1],
        "ratio_vs_sdpa": ours[0] / sdpa[0],
        "ratio_vs_eager": ours[0] / eager[0],
        "decode_ratio_vs_sdpa": ours[1] / sdpa[1],
        "decode_ratio_vs_eager": ours[1] / eager[1],
        "first_token_ms_cached": cached,
        "first_token_ms_uncached": uncached,
        "prefix_speedup": uncached / cached,
        "target": TARGET,
        "meets_target": min(ours[0] / sdpa[0], ours[0] / eager[0]) >= TARGET,
    }


def run(settings: Settings | None = None, *, new_tokens: int = 48, repeats: int = 3) -> dict[str, Any]:
    """Measure, print the table, write bench/results/decode.json."""
    r = measure(settings, new_tokens=new_tokens, repeats=repeats)
    report(
        "decode",
        [
            ("model", f"{r['model']} on {r['device']} ({r['threads']} threads)", ""),
            ("prompt / cached prefix / new tokens",
             f"{r['prompt_tokens']} / {r['prefix_tokens']} / {r['new_tokens']}", ""),
            ("ours, with attribution, tok/s", r["ours_tok_s"], ""),
            ("plain generate sdpa, tok/s", r["generate_sdpa_tok_s"], ""),
            ("plain generate eager, tok/s", r["generate_eager_tok_s"], ""),
            ("ours / generate sdpa", r["ratio_vs_sdpa"], f">= {TARGET}"),
            ("ours / generate eager", r["ratio_vs_eager"], f">= {TARGET}"),
            ("decode-only ratio vs sdpa", r["decode_ratio_vs_sdpa"], ""),
            ("first token ms, cached prefix", r["first_token_ms_cached"], ""),
            ("first token ms, no prefix cache", r["first_token_ms_uncached"], ""),
            ("prefix speed-up (uncached / cached)", r["prefix_speedup"], "report"),
        ],
        r,
    )
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    run(new_tokens=args.tokens, repeats=args.repeats)


if __name__ == "__main__":
    main()
