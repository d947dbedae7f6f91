"""PixelCNN sampling: the cached sampler (Ramachandran et al. 2017) against the naive one.

One gated PixelCNN (random weights; the time does not depend on them) on 28x28x1 images with 256
levels draws the same batch twice per round, same seed: ``naive`` (the full network once per
sub-pixel, 784 passes) and ``fast`` (each block computes only the window a new sub-pixel changes,
and one row of its vertical stack per finished row). Best of ``rounds`` for each, on CUDA when
available, else the CPU. Reported: seconds per batch and per image, the speed-up ``naive / fast``,
and whether the two samplers returned identical images (they must).
"""

from __future__ import annotations

import time

import torch

from genlab.data.spec import DataSpec
from genlab.models.pixelcnn import PixelCNN


def _timed(model: PixelCNN, n: int, method: str, seed: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(seed)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    x = model.sample(n, method=method)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, x


def run(quick: bool = False) -> dict:
    """Measure and return ``{"seconds_per_batch": {...}, "speedup_fast_vs_naive": ..., "identical": ...}``."""
    size = {"hidden_channels": 16, "num_layers": 3, "head_channels": 32} if quick else {
        "hidden_channels": 32, "num_layers": 5, "head_channels": 64}  # fmt: skip
    batch, rounds = (4, 1) if quick else (8, 2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = DataSpec((1, 28, 28), "levels", 256)
    torch.manual_seed(0)
    model = PixelCNN(spec.to_dict(), kernel_size=3, **size).to(device).eval()
    best: dict[str, float] = {}
    samples: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        for method in ("naive", "fast"):
            seconds, samples[method] = _timed(model, batch, method, seed=1)
            best[method] = min(best.get(method, float("inf")), seconds)
    identical = bool(torch.equal(samples["naive"], samples["fast"]))
    return {
        "headline": {"sampler_speedup_fast_vs_naive": round(best["naive"] / best["fast"], 1), "identical": identical},
        "model": f"PixelCNN {size} kernel_size=3, random weights",
        "data": "28x28x1, 256 levels",
        "batch_size": batch,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "seconds_per_batch": {k: round(v, 3) for k, v in best.items()},
        "seconds_per_image": {k: round(v / batch, 4) for k, v in best.items()},
        "speedup_fast_vs_naive": round(best["naive"] / best["fast"], 1),
        "identical": identical,
    }
