"""Batched decoding: N concurrent asks through `rag.generate.batching.DecodeBatcher` against the same asks one
at a time through `Generator.generate`, each forced to the same number of new tokens (no EOS), on
the bench's sample passages. Reports total tokens/s of each, their ratio, the p50 time to first
token under the concurrent load, and whether every batched answer equals its solo one.

`python -m bench batching` (or `python -m bench.batching --clients 8 --tokens 32`) prints a table and
writes bench/results/batching.json. Goal (issue 11): 8 concurrent asks >= 3x the tokens/s of one at
a time.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
from typing import Any

import torch

from bench.common import report
from bench.decode import sample_sources
from rag.config import Settings
from rag.generate.batching import DecodeBatcher
from rag.generate.decoding import Generation
from rag.generate.generator import Generator

QUESTIONS = [
    "How did Gutenberg's printing press compare to printing by hand?",
    "How many hearts does an octopus have?",
    "Why is octopus blood blue?",
    "When was the marathon distance standardised?",
    "How much of the world's fresh water do glaciers hold?",
    "Who developed the movable-type printing press?",
    "How long is a marathon?",
    "Why do glaciers flow?",
]


def measure(settings: Settings | None = None, *, clients: int = 8, tokens: int = 32) -> dict[str, Any]:
    loaded = Generator.load(settings)
    generator = copy.copy(loaded)  # same model; never stops early, so every run decodes `tokens`
    generator.eos_ids, generator.stop_strings = frozenset(), ()
    sources = sample_sources()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(clients)]
    generator.generate(questions[0], sources, max_new_tokens=2)  # warm-up

    t0 = time.perf_counter()
    solo = [generator.generate(q, sources, max_new_tokens=tokens) for q in questions]
    sequential_s = time.perf_counter() - t0

    batcher = DecodeBatcher(generator, max_batch=clients)
    out: list[Generation | None] = [None] * clients
    first: list[float] = [0.0] * clients

    def ask(i: int) -> None:
        def seen(_: str) -> None:
            if not first[i]:
                first[i] = time.perf_counter() - t1
        out[i] = batcher.generate(questions[i], sources, max_new_tokens=tokens, on_token=seen)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
    t1 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batched_s = time.perf_counter() - t1
    total = clients * tokens
    same = sum(o is not None and o.token_ids == s.token_ids for o, s in zip(out, solo, strict=True))
    return {
        "model": loaded.name,
        "threads": torch.get_num_threads(),
        "clients": clients,
        "tokens_each": tokens,
        "sequential_tok_s": total / sequential_s,
        "batched_tok_s": total / batched_s,
        "speedup": sequential_s / batched_s,
        "ttft_p50_ms_batched": statistics.median(first) * 1000,
        "ttft_p50_ms_sequential": statistics.median(s.prefill_ms for s in solo),
        "peak_batch": batcher.peak_batch,
        "same_tokens_as_solo": same,
    }


def run(settings: Settings | None = None, *, clients: int = 8, tokens: int = 32) -> dict[str, Any]:
    r = measure(settings, clients=clients, tokens=tokens)
    report(
        "batching",
        [
            ("model (threads)", f"{r['model']} ({r['threads']})", ""),
            ("clients x new tokens", f"{r['clients']} x {r['tokens_each']}", ""),
            ("one at a time, total tok/s", r["sequential_tok_s"], ""),
            ("batched, total tok/s", r["batched_tok_s"], ""),
            ("batched / one at a time", r["speedup"], ">= 3"),
            ("p50 first token ms under load, batched", r["ttft_p50_ms_batched"], "report"),
            ("  (a lone request's prefill, p50 ms)", r["ttft_p50_ms_sequential"], ""),
            ("peak batch", r["peak_batch"], ""),
            ("answers equal to their solo run", f"{r['same_tokens_as_solo']} / {r['clients']}", ""),
        ],
        r,
    )
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per ask")
    args = parser.parse_args(argv)
    run(clients=args.clients, tokens=args.tokens)


if __name__ == "__main__":
    main()
