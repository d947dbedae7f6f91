"""Multilayer perceptron encoder and decoder for flattened examples (any shape).

Built from config (``conf/model/encoder/mlp.yaml``, ``conf/model/decoder/mlp.yaml``): the config
gives ``hidden_dims``, the model fills in ``shape``, ``out_features`` / ``latent_dim``, ``num_params``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from genlab.checks import positive_int, require


def mlp(in_features: int, hidden_dims: Sequence[int], out_features: int) -> nn.Sequential:
    """``Linear -> ReLU`` per hidden width, then a final ``Linear`` to ``out_features`` (no activation)."""
    dims = [in_features, *hidden_dims]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_features))
    return nn.Sequential(*layers)


def widths(name: str, values: Sequence[int], non_empty: bool = False) -> list[int]:
    """``values`` as a list of positive ints (at least one when ``non_empty``).

    Raises:
        ConfigError: naming ``name`` (e.g. ``hidden_dims must be a list of positive integers, got [8, 0]``).
    """
    ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) >= int(non_empty)
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    require(ok, name, f"a {'non-empty ' if non_empty else ''}list of positive integers", values)
    return list(values)


class MLPEncoder(nn.Module):
    """Flatten ``(B, *shape)`` and map it to ``(B, out_features)``.

    Args:
        shape: shape of one example, e.g. ``(C, H, W)``.
        out_features: output width (e.g. ``2 * latent_dim`` for a Gaussian posterior).
        hidden_dims: widths of the hidden layers, input side first (may be empty: one linear map).

    Raises:
        ConfigError: for a non-positive width.
    """

    def __init__(self, *, shape: Sequence[int], out_features: int, hidden_dims: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.net = mlp(math.prod(shape), widths("hidden_dims", hidden_dims), positive_int("out_features", out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Map ``(B, latent_dim)`` to ``num_params`` maps per dimension: ``(B, num_params, *shape)``.

    Args:
        latent_dim: input width.
        shape: shape of one example.
        num_params: parameters per data dimension (1 for Bernoulli logits, 2 for mean and scale).
        hidden_dims: widths of the hidden layers, latent side first (usually the encoder's, reversed).

    Raises:
        ConfigError: for a non-positive width.
    """

    def __init__(
        self, *, latent_dim: int, shape: Sequence[int], num_params: int = 1, hidden_dims: Sequence[int] = (256, 512)
    ) -> None:
        super().__init__()
        self.out_shape = (positive_int("num_params", num_params), *shape)
        self.net = mlp(positive_int("latent_dim", latent_dim), widths("hidden_dims", hidden_dims),
                       math.prod(self.out_shape))  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)
