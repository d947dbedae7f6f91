"""Deterministic bottleneck autoencoder; its encoder and decoder are networks given as config."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genlab.checks import one_of, positive_int
from genlab.data.spec import DataSpec
from genlab.models.base import GenerativeModel
from genlab.models.code_priors import CodePrior, CodePriorMixin
from genlab.nn.mlp import MLPDecoder, MLPEncoder
from genlab.utils.config import build, config_of, plain

LOSSES = ("mse", "bce")


class Autoencoder(CodePriorMixin, GenerativeModel):
    """Bottleneck autoencoder ``x -> z = f(x) -> sigmoid(g(z))`` trained on reconstruction error.

    It has a code (``encode``) and reconstructions, but no likelihood (``nll_kind = "none"``).
    ``sample`` decodes codes from ``code_prior``: by default ``z ~ N(0, I)``, but a deterministic autoencoder puts
    no distribution on its codes, so such decodes are often not digits at all; genlab keeps it to show that,
    measured against the VAE and against codes from the training codes' hull or a mixture fitted to them
    (:mod:`genlab.models.code_priors`).

    Args:
        data_spec: the data description (values in ``[0, 1]``, any shape for MLPs, ``(C, H, W)`` for CNNs).
        encoder: ``_target_`` config of a network ``(B, *shape) -> (B, latent_dim)``, built with
            ``shape`` and ``out_features`` filled in; default ``genlab.nn.mlp.MLPEncoder`` with
            ``hidden_dims: [512, 256]``. Stored as given, a plain dict.
        decoder: ``_target_`` config of a network ``(B, latent_dim) -> (B, 1, *shape)``, built with
            ``latent_dim``, ``shape`` and ``num_params=1`` filled in; default ``genlab.nn.mlp.MLPDecoder``
            with ``hidden_dims: [256, 512]``.
        latent_dim: size of the code ``z`` (> 0).
        loss: ``mse`` (squared error, summed over dimensions) or ``bce`` (binary cross-entropy with
            targets in ``[0, 1]``, summed over dimensions).
        code_prior: ``normal``, ``hull`` or ``gmm``: where ``sample`` draws its codes.
        code_mixtures: components of the ``gmm`` code prior.
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for a non-positive ``latent_dim``, an unknown ``loss``, or an encoder/decoder
            config that cannot be built (naming ``model.encoder`` / ``model.decoder``).
    """

    nll_kind = "none"
    capabilities = frozenset({"sample", "encode", "decode", "reconstruct"})

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        latent_dim: int = 16,
        loss: str = "mse",
        code_prior: str = "normal",
        code_mixtures: int = 10,
        **base: Any,
    ) -> None:
        super().__init__(data_spec, **base)
        self.refuse_tokens()
        self.loss = one_of("model.loss", loss, LOSSES)
        self.latent_dim = positive_int("model.latent_dim", latent_dim)
        self.code_prior = CodePrior(code_prior, self.latent_dim, code_mixtures)
        encoder = plain(encoder) if encoder is not None else config_of(MLPEncoder, hidden_dims=[512, 256])
        decoder = plain(decoder) if decoder is not None else config_of(MLPDecoder, hidden_dims=[256, 512])
        self.save_model_hparams()  # stores encoder/decoder as the plain dicts above
        shape = self.spec.shape
        self.encoder = build(encoder, "model.encoder", shape=shape, out_features=latent_dim)
        self.decoder = build(decoder, "model.decoder", latent_dim=latent_dim, shape=shape, num_params=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *shape) -> (B, latent_dim)``."""
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim) -> (B, *shape)`` pre-sigmoid outputs."""
        return self.decoder(z)[:, 0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, latent_dim)`` -> ``(B, *shape)`` in ``[0, 1]``."""
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *shape)`` in ``[0, 1]``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``n`` codes from ``code_prior`` (default ``N(0, I)``): ``(n, *shape)`` in ``[0, 1]``."""
        return self.decode(self.sample_codes(n))

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str):
        """``loss``: the reconstruction error per example, summed over dimensions (squared error or BCE)."""
        logits = self.decode_logits(self.encode(x))
        if self.loss == "bce":
            per_dim = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            per_dim = (torch.sigmoid(logits) - x) ** 2
        return {"loss": per_dim.flatten(1).sum(1)}, None
