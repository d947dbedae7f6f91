"""Pick an encoder/decoder pair by architecture name, for any image geometry."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from genlab.errors import ConfigError
from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.nn.mlp import MLPDecoder, MLPEncoder

ARCHS = ("mlp", "cnn")


def encoder_decoder(
    arch: str,
    shape: Sequence[int],
    latent_dim: int,
    encoder_out: int,
    num_params: int,
    hidden_dims: Sequence[int] = (512, 256),
    channels: Sequence[int] = (32, 64),
) -> tuple[nn.Module, nn.Module]:
    """Build ``(encoder, decoder)``: ``(B, *shape) -> (B, encoder_out)`` and
    ``(B, latent_dim) -> (B, num_params, *shape)``.

    ``mlp`` uses ``hidden_dims`` (decoder reversed); ``cnn`` uses ``channels`` per stride-2 stage and
    needs ``(C, H, W)`` images.

    Raises:
        ConfigError: for an unknown ``arch``, or ``cnn`` on data that are not ``(C, H, W)``.
    """
    if arch == "mlp":
        hidden = list(hidden_dims)
        return (
            MLPEncoder(shape, hidden, encoder_out),
            MLPDecoder(latent_dim, hidden[::-1], shape, num_params),
        )
    if arch == "cnn":
        if len(shape) != 3:
            raise ConfigError(f"arch=cnn needs (C, H, W) images, got data of shape {tuple(shape)}")
        if not channels:
            raise ConfigError("arch=cnn needs at least one entry in model.channels")
        return ConvEncoder(shape, channels, encoder_out), ConvDecoder(latent_dim, channels, shape, num_params)
    raise ConfigError(f"unknown model.arch={arch!r}; choose one of {ARCHS}")
