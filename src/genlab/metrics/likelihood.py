"""Likelihood units in one place: nats per example to bits per dimension.

Conventions (README.md, "Units"):

* A model of ``binary`` or ``levels`` data returns a log probability mass ``log P(x)``, so
  ``bits/dim = nll_nats / (D ln 2)``.
* A model of ``dequantized`` data, ``x = (k + u) / L`` with ``u ~ U[0, 1)``, returns a log density on
  ``[0, 1]^D``. Rescaling to the integer grid ``[0, L)^D`` divides the density by ``L^D``, so the
  discrete negative log-likelihood it bounds from above is ``nll_nats + D ln L`` and
  ``bits/dim = (nll_nats / D + ln L) / ln 2`` (Theis et al. 2016, "A note on the evaluation of
  generative models", Sec. 3.1; Dinh et al. 2017, Real NVP, Sec. 4.1).
  A uniform density on ``[0, 1]^D`` has ``nll_nats = 0`` and gives exactly ``log2 L`` bits/dim.
"""

from __future__ import annotations

import math

import torch

from genlab.data.spec import DataSpec


def bits_per_dim(nll_nats: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Convert negative log-likelihoods in nats per example to bits per dimension.

    Args:
        nll_nats: ``(B,)`` or scalar, ``-log p(x)`` in nats per example (mass or density as fixed
            by ``spec.kind``).
        spec: the data description; ``kind == "dequantized"`` adds the ``ln L`` correction.

    Returns:
        Tensor like ``nll_nats``, in bits per dimension.
    """
    per_dim = nll_nats / spec.num_dims
    if spec.kind == "dequantized":
        per_dim = per_dim + math.log(spec.levels)
    return per_dim / math.log(2.0)


def uniform_bits_per_dim(spec: DataSpec) -> float:
    """Bits/dim of the uniform model over the data's levels: ``log2 L`` (the baseline to beat)."""
    return math.log2(spec.levels)
