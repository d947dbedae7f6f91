"""Multilayer perceptron encoder and decoder for flattened images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_features: int, hidden_dims: Sequence[int], out_features: int) -> nn.Sequential:
    """``Linear -> ReLU`` per hidden width, then a final ``Linear`` to ``out_features`` (no activation)."""
    dims = [in_features, *hidden_dims]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_features))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten ``(B, *shape)`` and map it to ``(B, out_features)``.

    Args:
        shape: shape of one example, e.g. ``(C, H, W)``.
        hidden_dims: widths of the hidden layers.
        out_features: output width (e.g. ``2 * latent_dim`` for a Gaussian posterior).
    """

    def __init__(self, shape: Sequence[int], hidden_dims: Sequence[int], out_features: int) -> None:
        super().__init__()
        self.net = mlp(math.prod(shape), hidden_dims, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Map ``(B, latent_dim)`` to ``num_params`` maps per dimension: ``(B, num_params, *shape)``.

    Args:
        latent_dim: input width.
        hidden_dims: widths of the hidden layers (usually the encoder's, reversed).
        shape: shape of one example.
        num_params: parameters per data dimension (1 for Bernoulli logits, 2 for mean and scale).
    """

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int], shape: Sequence[int], num_params: int = 1) -> None:
        super().__init__()
        self.out_shape = (num_params, *shape)
        self.net = mlp(latent_dim, hidden_dims, math.prod(self.out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)
