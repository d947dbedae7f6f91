"""Run the benchmarks: ``python -m genlab.bench [--only NAME ...] [--quick] [--out DIR]``."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import torch

from genlab.bench import BENCHMARKS
from genlab.utils.runs import versions


def main(argv: list[str] | None = None) -> Path:
    """Run each benchmark in turn and write all figures to one JSON file; returns its path."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=None, help="benchmark module names (last dotted part)")
    ap.add_argument("--quick", action="store_true", help="fewer steps, for a smoke check")
    ap.add_argument("--out", default="outputs/bench", help="folder of the JSON file")
    a = ap.parse_args(argv)
    results: dict[str, object] = {}
    for name in BENCHMARKS:
        short = name.rsplit(".", 1)[-1]
        if a.only and short not in a.only:
            continue
        print(f"== {short}", flush=True)
        start = time.perf_counter()
        results[short] = importlib.import_module(name).run(quick=a.quick)
        print(json.dumps(results[short], indent=2), flush=True)
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    record = {
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "versions": versions(),
        # each benchmark's key ratios, measured side by side in its run, first (the details follow)
        "headlines": {k: r["headline"] for k, r in results.items() if isinstance(r, dict) and "headline" in r},
        "results": results,
    }  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S_%f')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
