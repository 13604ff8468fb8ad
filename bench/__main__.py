"""`python -m bench [NAME ...]` (or `rag bench`): run benchmarks, print a table each, write JSON to
bench/results/. Names: ingest, decode, prefill, parallel, batching, retrieve, quantize, encoder, load,
guided, ocr; none given runs all but load and guided (load needs a running server's worth of time, guided
decodes every question twice; both are run by name). Options after the names (``python -m bench
ingest --ray``) go to each named bench's ``main``. When more than one bench ran, a last table gathers
every row that has a target, so one run's goals read in one place (also bench/results/summary.json)."""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import REPORTED, RESULTS, machine, print_table

DEFAULT = ["ingest", "decode", "prefill", "parallel", "batching", "retrieve", "quantize", "encoder", "ocr"]
ALL = [*DEFAULT, "load", "guided"]


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
    if len(names) > 1:
        _summary()
    return 0


def _summary() -> None:
    goals = [(f"{name}: {metric}", value, target) for name, (metric, value, target) in REPORTED if target]
    if not goals:
        return
    print_table("summary: every row with a target", goals)
    rows = [{"metric": m, "value": v, "target": t} for m, v, t in goals]
    summary = {"machine": machine(), "rows": rows}
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
