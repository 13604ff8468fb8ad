"""`python -m bench [NAME ...]` (or `rag bench`): run benchmarks, print a table each, write JSON to
bench/results/. Names: ingest, decode, prefill, parallel, batching, retrieve, quantize, encoder, load; none
given runs all but load (load needs a running server's worth of time and is run by name). Options after the
names (``python -m bench ingest --ray``) go to each named bench's ``main``."""

from __future__ import annotations

import importlib
import sys

DEFAULT = ["ingest", "decode", "prefill", "parallel", "batching", "retrieve", "quantize", "encoder"]
ALL = [*DEFAULT, "load"]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:first_option] or DEFAULT, args[first_option:]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown bench {unknown}; choose from {ALL}", file=sys.stderr)
        return 2
    for name in names:
        bench = importlib.import_module(f"bench.{name}")
        if options:
            if status := bench.main(options):
                return int(status)
        else:
            bench.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
