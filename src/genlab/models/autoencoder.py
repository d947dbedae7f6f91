"""Deterministic bottleneck autoencoder (MLP or CNN)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, positive_int
from genlab.nn.build import encoder_decoder

LOSSES = ("mse", "bce")


class Autoencoder(GenerativeModel):
    """Bottleneck autoencoder ``x -> z = f(x) -> sigmoid(g(z))`` trained on reconstruction error.

    It has a code (``encode``) and reconstructions, but no likelihood (``nll_kind = "none"``).
    ``sample`` decodes ``z ~ N(0, I)``: a deterministic autoencoder puts no distribution on its codes,
    so such decodes are often not digits at all; genlab keeps it to show that, measured against
    the VAE.

    Args:
        data_spec: the data description (images ``(C, H, W)`` in ``[0, 1]``).
        arch: ``mlp`` or ``cnn`` (see :func:`genlab.nn.build.encoder_decoder`).
        latent_dim: size of the code ``z`` (> 0).
        hidden_dims: MLP widths; channels: CNN stage channels.
        loss: ``mse`` (squared error, summed over dimensions) or ``bce`` (binary cross-entropy with
            targets in ``[0, 1]``, summed over dimensions).
        lr, weight_decay: Adam settings.

    Raises:
        ConfigError: for a non-positive ``latent_dim``, an unknown ``arch`` or ``loss``.
    """

    nll_kind = "none"
    capabilities = frozenset({"sample", "encode", "reconstruct"})

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        arch: str = "mlp",
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 256),
        channels: Sequence[int] = (32, 64),
        loss: str = "mse",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(data_spec, lr=lr, weight_decay=weight_decay)
        if loss not in LOSSES:
            raise ConfigError(f"unknown model.loss={loss!r}; choose one of {LOSSES}")
        self.latent_dim = positive_int("model.latent_dim", latent_dim)
        self.save_model_hparams()
        self.loss = loss
        self.encoder, self.decoder = encoder_decoder(
            arch, self.spec.shape, latent_dim, latent_dim, 1, list(hidden_dims), list(channels)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *shape) -> (B, latent_dim)``."""
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim) -> (B, *shape)`` pre-sigmoid outputs."""
        return self.decoder(z)[:, 0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *shape)`` in ``[0, 1]``."""
        return torch.sigmoid(self.decode_logits(self.encode(x)))

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``n`` codes drawn from ``N(0, I)``: ``(n, *shape)`` in ``[0, 1]``."""
        return torch.sigmoid(self.decode_logits(torch.randn(n, self.latent_dim, device=self.device)))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        logits = self.decode_logits(self.encode(x))
        if self.loss == "bce":
            per_dim = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_dim = (torch.sigmoid(logits) - x) ** 2
        loss = per_dim.flatten(1).sum(1)
        return {"loss": loss}
