"""Class-conditional samples from an unconditional model by Bayes' rule: ``P(x | y) ∝ P(y | x) P(x)``.

Sampling-importance-resampling (Rubin 1988; Smith & Gelfand 1992): ``M`` candidates ``x_m ~ P(x)`` are drawn
from the model, weighted by ``w_m = P(y | x_m)`` of a classifier (the genlab feature network,
:mod:`genlab.evaluation.features`), and ``n`` of them are resampled with replacement in proportion to the
weights. As ``M`` grows the resampled draws follow ``P(x | y)`` under the classifier's ``P(y | x)``; the
effective sample size ``ESS = (sum w)^2 / sum w^2`` (Kong 1992) says how many distinct candidates the
result is worth (at most ``M``; resampling ``n >> ESS`` repeats the same few images).
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.checks import positive_int
from genlab.errors import ConfigError
from genlab.evaluation.context import to_levels


def importance_weights(classifier: Any, x: torch.Tensor, spec: Any, label: int, batch_size: int = 256) -> torch.Tensor:
    """``P(y = label | x)`` of each candidate: ``(M,)`` float64, from ``softmax(classifier.logits(to_levels(x)))``.

    Args:
        classifier: anything with ``logits(images (B, C, H, W) on the level grid) -> (B, K)`` (a
            :class:`~genlab.evaluation.features.FeatureNet`); run on the device of its parameters (CPU if none).
        x: ``(M, *spec.shape)`` candidates in the model's value space.
        spec: their :class:`~genlab.data.spec.DataSpec`.
    """
    params = list(classifier.parameters()) if hasattr(classifier, "parameters") else []
    device = params[0].device if params else torch.device("cpu")
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            b = to_levels(x[i : i + batch_size], spec).to(device)
            out.append(torch.softmax(classifier.logits(b).double(), 1)[:, label].cpu())
    return torch.cat(out)


def effective_sample_size(w: torch.Tensor) -> float:
    """``(sum w)^2 / sum w^2`` of non-negative weights ``(M,)`` (Kong 1992): between 1 and ``M`` (0 if all are 0)."""
    w = w.double()
    sq = float(w.pow(2).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


@torch.no_grad()
def guided_samples(
    model: Any,
    classifier: Any,
    label: int,
    n: int,
    num_candidates: int,
    generator: torch.Generator,
    batch_size: int = 256,
) -> tuple[torch.Tensor, float]:
    """``n`` draws from ``P(x | y = label) ∝ P(y | x) P(x)`` by sampling-importance-resampling (module docstring).

    The model draws ``num_candidates`` candidates (in batches of ``batch_size``, its global RNG seeded from
    ``generator`` inside a forked RNG, so the result depends on ``generator`` alone); the classifier weights them
    by ``P(y = label | to_levels(x))``; ``n`` indices are drawn with replacement from ``generator`` in proportion.

    Args:
        model: a :class:`~genlab.models.base.GenerativeModel` that declares ``sample`` (unconditional).
        classifier: ``logits(images) -> (B, K)`` on the level grid (:func:`importance_weights`).
        label: the class ``y`` in ``[0, K)``.
        n: samples wanted (> 0).
        num_candidates: ``M`` (> 0); the ESS grows with it.
        generator: a CPU generator (the only randomness).

    Returns:
        ``(samples (n, *model.spec.shape) in the model's value space, on the CPU; effective sample size)``.

    Raises:
        ConfigError: for a model that cannot sample, a class-conditional model (it samples ``P(x | y)``
            itself), a label outside ``[0, K)``, non-positive ``n`` / ``num_candidates``, or when every
            candidate has weight 0.
    """
    name = type(model).__name__
    if not model.can("sample"):
        raise ConfigError(f"guidance=classifier needs a model that samples; {name} does not declare 'sample'")
    if model.can("conditional"):
        raise ConfigError(f"{name} is class-conditional and samples P(x|y) itself: drop guidance=classifier")
    n = positive_int("num_samples", n)
    m = positive_int("num_candidates", num_candidates)
    k = model.spec.num_classes
    if isinstance(label, bool) or not isinstance(label, int) or not (k and 0 <= label < k):
        raise ConfigError(f"condition label {label!r} must be a class in [0, {k}) of these data")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device = model.device if hasattr(model, "device") else torch.device("cpu")
    parts = []
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        left = m
        while left > 0:
            b = min(left, batch_size)
            parts.append(model.sample(b).cpu())
            left -= b
    candidates = torch.cat(parts)
    w = importance_weights(classifier, candidates, model.spec, label, batch_size)
    if not bool((w > 0).any()):
        raise ConfigError(
            f"all {m} candidates have P(y={label}|x) = 0 under the classifier; raise num_candidates or "
            "check the model and the label"
        )
    index = torch.multinomial(w, n, replacement=True, generator=generator)
    return candidates[index], effective_sample_size(w)
