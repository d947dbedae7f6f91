"""Convolutional encoder and decoder that fit any image geometry (8x8, 28x28, 32x32, ...).

Each stage halves height and width with a stride-2 3x3 convolution (``ceil(H / 2)``); the decoder
mirrors the stages with transposed convolutions whose ``output_padding`` restores the exact sizes,
so odd sizes such as 7 round-trip.

Built from config (``conf/model/encoder/conv.yaml``, ``conf/model/decoder/conv.yaml``): the config
gives ``channels``, the model fills in ``shape``, ``out_features`` / ``latent_dim``, ``num_params``.
Both need image data ``(C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from genlab.checks import one_of, positive_int
from genlab.errors import ConfigError
from genlab.nn.mlp import widths

NORMS = ("none", "batch")


def norm_layer(norm: str, channels: int) -> list[nn.Module]:
    """``[BatchNorm2d(channels)]`` for ``norm="batch"`` (Ioffe & Szegedy 2015), ``[]`` for ``"none"``."""
    return [nn.BatchNorm2d(channels)] if norm == "batch" else []


def stage_sizes(size: int, num_stages: int) -> list[int]:
    """Spatial sizes after each stride-2 stage: ``[size, ceil(size/2), ...]`` (length ``num_stages + 1``)."""
    sizes = [size]
    for _ in range(num_stages):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def image_shape(cls: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``.

    Raises:
        ConfigError: if the data are not images, saying to use the MLP network instead.
    """
    if len(shape) != 3:
        raise ConfigError(
            f"{cls} needs (C, H, W) images, got data of shape {tuple(shape)}; "
            f"use the MLP network (genlab.nn.mlp.MLP{cls.removeprefix('Conv')}) for such data"
        )
    return tuple(shape)


class ConvEncoder(nn.Module):
    """``(B, C, H, W)`` -> ``(B, out_features)`` through stride-2 conv stages and a linear head.

    Args:
        shape: ``(C, H, W)``.
        out_features: output width.
        channels: output channels of each stage, input side first, e.g. ``(32, 64)`` (at least one).
        norm: ``none``, or ``batch`` for batch normalization after each stage's convolution.

    Raises:
        ConfigError: for data that are not ``(C, H, W)`` images, empty or non-positive ``channels``, or an
            unknown ``norm``.
    """

    def __init__(
        self, *, shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64), norm: str = "none"
    ) -> None:
        super().__init__()
        c, h, w = image_shape("ConvEncoder", shape)
        channels = widths("channels", channels, non_empty=True)
        out_features = positive_int("out_features", out_features)
        norm = one_of("norm", norm, NORMS)
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 3, stride=2, padding=1), *norm_layer(norm, c_out), nn.ReLU()]
            c = c_out
        self.features = nn.Sequential(*layers)
        hs, ws = stage_sizes(h, len(channels)), stage_sizes(w, len(channels))
        self.head = nn.Linear(c * hs[-1] * ws[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """``(B, latent_dim)`` -> ``(B, num_params, C, H, W)``, mirroring :class:`ConvEncoder`.

    A linear map to ``channels[0]`` maps at the coarsest size, then one stride-2 transposed
    convolution per entry (to the next entry's channels; the last keeps its own), then a 3x3
    convolution to ``num_params * C`` maps.

    Args:
        latent_dim: input width.
        shape: ``(C, H, W)`` of the output.
        num_params: parameters per data dimension (1 for Bernoulli logits, 2 for mean and scale).
        channels: channels of each stage, coarse side first: the encoder's, reversed, e.g. ``(64, 32)``.
        norm: ``none``, or ``batch`` for batch normalization after each transposed convolution.

    Raises:
        ConfigError: for data that are not ``(C, H, W)`` images, empty or non-positive ``channels``, or an
            unknown ``norm``.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        shape: Sequence[int],
        num_params: int = 1,
        channels: Sequence[int] = (64, 32),
        norm: str = "none",
    ) -> None:
        super().__init__()
        c, h, w = image_shape("ConvDecoder", shape)
        chans = widths("channels", channels, non_empty=True)
        norm = one_of("norm", norm, NORMS)
        latent_dim, num_params = positive_int("latent_dim", latent_dim), positive_int("num_params", num_params)
        self.out_shape = (num_params, c, h, w)
        hs, ws = stage_sizes(h, len(chans)), stage_sizes(w, len(chans))
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
                *norm_layer(norm, c_out),
            ]
        layers += [nn.ReLU(), nn.Conv2d(chans[-1], num_params * c, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.head(z).view(-1, *self.start))
        return out.view(-1, *self.out_shape)
