"""Linear autoencoder trained by gradient descent; its optimum spans the PCA subspace (Baldi & Hornik 1989)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from genlab.checks import bounded_int
from genlab.errors import DataError
from genlab.models.base import GenerativeModel, Scores
from genlab.models.classical.fitting import Spec, as_features


class LinearAutoencoder(GenerativeModel):
    """PCA's encoder and decoder, learned with Adam on squared reconstruction error.

    ``encode(x) = V (x - b)``, ``reconstruct(x) = W encode(x) + b`` with ``W`` ``(P, K)``, ``b`` ``(P,)`` and
    ``V = W^T`` when ``tied`` (else a separate ``(K, P)`` matrix). The loss per example is
    ``||x - reconstruct(x)||^2`` summed over the ``P`` features (``val/loss`` too). Every minimum of this
    loss has ``span(W)`` equal to the span of the top-``K`` principal directions and ``b`` the data mean
    (Baldi & Hornik 1989); tied, ``W`` then has orthonormal columns (``W = U_K R``, ``R`` orthogonal), so
    the codes equal PCA's up to a rotation. No likelihood (``nll_kind = "none"``), no sampling.

    Args:
        data_spec: the data description; any kind.
        latent_dim: ``K``, ``1 <= K <= P``.
        tied: share the encoder and decoder matrices.
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for ``K`` outside ``[1, P]`` or a non-positive ``lr``.
        DataError: for NaN/inf input, a malformed batch or an empty one in training/validation.
    """

    nll_kind = "none"
    capabilities = frozenset({"encode", "reconstruct"})

    def __init__(self, data_spec: Spec, latent_dim: int = 16, tied: bool = True, **base: Any) -> None:
        super().__init__(data_spec, **base)
        self.refuse_tokens()
        p = self.num_features = self.spec.num_dims
        self.latent_dim = bounded_int("model.latent_dim", latent_dim, p, "features")
        self.tied = bool(tied)
        self.save_model_hparams()
        self.bias = nn.Parameter(torch.zeros(p))
        self.decoder_weight = nn.Parameter(torch.randn(p, latent_dim) / math.sqrt(p))
        self.encoder_weight = None if self.tied else nn.Parameter(torch.randn(latent_dim, p) / math.sqrt(p))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``V (x - b)``: ``(B, *shape) -> (B, K)``."""
        v = self.decoder_weight.T if self.encoder_weight is None else self.encoder_weight
        return (as_features(x, self.num_features, dtype=self.bias.dtype) - self.bias) @ v.T

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``W V (x - b) + b``: like ``x``."""
        return (self.encode(x) @ self.decoder_weight.T + self.bias).view_as(x)

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str) -> Scores:
        """``loss``: ``||x - reconstruct(x)||^2`` summed over the features, ``(B,)``.

        Raises:
            DataError: for an empty, malformed or non-finite batch.
        """
        flat = as_features(x, self.num_features, dtype=self.bias.dtype)
        if len(flat) == 0:
            raise DataError("empty batch: the reconstruction loss needs examples (check the data split sizes)")
        residual = flat - self.reconstruct(flat)
        return {"loss": residual.pow(2).sum(1)}, None
