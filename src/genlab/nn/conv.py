"""Convolutional encoder and decoder that fit any image geometry (8x8, 28x28, 32x32, ...).

Each stage halves height and width with a stride-2 3x3 convolution (``ceil(H / 2)``); the decoder
mirrors the stages with transposed convolutions whose ``output_padding`` restores the exact sizes,
so odd sizes such as 7 round-trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def stage_sizes(size: int, num_stages: int) -> list[int]:
    """Spatial sizes after each stride-2 stage: ``[size, ceil(size/2), ...]`` (length ``num_stages + 1``)."""
    sizes = [size]
    for _ in range(num_stages):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


class ConvEncoder(nn.Module):
    """``(B, C, H, W)`` -> ``(B, out_features)`` through stride-2 conv stages and a linear head.

    Args:
        shape: ``(C, H, W)``.
        channels: output channels of each stage, e.g. ``(32, 64)``.
        out_features: output width.
    """

    def __init__(self, shape: Sequence[int], channels: Sequence[int], out_features: int) -> None:
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c = c_out
        self.features = nn.Sequential(*layers)
        hs, ws = stage_sizes(h, len(channels)), stage_sizes(w, len(channels))
        self.head = nn.Linear(c * hs[-1] * ws[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """``(B, latent_dim)`` -> ``(B, num_params, C, H, W)``, mirroring :class:`ConvEncoder`.

    Args:
        latent_dim: input width.
        channels: the encoder's stage channels, in encoder order (the decoder reverses them).
        shape: ``(C, H, W)`` of the output.
        num_params: parameters per data dimension (1 for Bernoulli logits, 2 for mean and scale).
    """

    def __init__(self, latent_dim: int, channels: Sequence[int], shape: Sequence[int], num_params: int = 1) -> None:
        super().__init__()
        c, h, w = shape
        self.out_shape = (num_params, c, h, w)
        hs, ws = stage_sizes(h, len(channels)), stage_sizes(w, len(channels))
        chans = list(channels)[::-1]
        self.start = (chans[0], hs[-1], ws[-1])
        self.head = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = []
        for i, c_in in enumerate(chans):
            c_out = chans[i + 1] if i + 1 < len(chans) else chans[-1]
            th, tw = hs[-2 - i], ws[-2 - i]
            sh, sw = hs[-1 - i], ws[-1 - i]
            pad = (th - (2 * sh - 1), tw - (2 * sw - 1))
            layers += [
                nn.ReLU(),
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad),
            ]
        layers += [nn.ReLU(), nn.Conv2d(chans[-1], num_params * c, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.head(z).view(-1, *self.start))
        return out.view(-1, *self.out_shape)
