"""Benchmarks: side-by-side measurements in one run, reported as ratios against a baseline.

Each benchmark module exposes ``run(quick: bool) -> dict`` and is listed in ``BENCHMARKS``;
``python -m genlab.bench`` runs them and writes ``outputs/bench/<timestamp>.json``.
"""

BENCHMARKS = [
    "genlab.bench.vae_throughput",
    "genlab.bench.classical_fit",
    "genlab.bench.gpt_speed",
    "genlab.bench.gpt_recipe",
    "genlab.bench.pixelcnn_sampling",
    "genlab.bench.evaluation_cost",
]
