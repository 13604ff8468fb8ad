"""`python -m bench [NAME ...]` (or `rag bench`): run benchmarks, print a table each, write JSON to
bench/results/. Names: ingest, decode, prefill, retrieve, quantize, encoder, load; none given runs
all but load (load needs a running server's worth of time and is run by name)."""

from __future__ import annotations

import importlib
import sys

DEFAULT = ["ingest", "decode", "prefill", "retrieve", "quantize", "encoder"]
ALL = [*DEFAULT, "load"]


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or DEFAULT
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown bench {unknown}; choose from {ALL}", file=sys.stderr)
        return 2
    for name in names:
        importlib.import_module(f"bench.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
