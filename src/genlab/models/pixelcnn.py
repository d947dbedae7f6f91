"""Gated PixelCNN (van den Oord et al. 2016b, "Conditional Image Generation with PixelCNN Decoders")
with the cached sampler of Ramachandran et al. 2017 ("Fast Generation for Convolutional
Autoregressive Models")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.autoregressive import PixelAutoregressive
from genlab.models.base import positive_int
from genlab.nn.masked import GatedBlock, OutputHead


class PixelCNN(PixelAutoregressive):
    """Gated PixelCNN: ``num_layers`` gated blocks with vertical and horizontal stacks (no blind spot),
    residual connections on the horizontal stack, and a masked ``1 x 1`` output head giving a softmax
    over the data's levels per sub-pixel (a Bernoulli on binary data). See
    :class:`genlab.nn.masked.GatedBlock` and :class:`genlab.models.autoregressive.PixelAutoregressive`.

    After ``n`` layers with kernel ``k`` a sub-pixel sees ``n (k - 1) / 2`` rows above, as many
    columns to each side, and as many pixels to its left.

    Sampling (``sample``) is cached: each block keeps its vertical-stack pre-activations of the
    rows done and its horizontal-stack input of the current row; a new sub-pixel then costs one
    ``1 x k`` window per block, and each finished row one row of the vertical stack (Ramachandran et
    al. 2017, Sec. 3, adapted to the two stacks). ``sample(..., method="naive")`` runs the full
    network once per sub-pixel.

    Args:
        data_spec: the data description (``binary`` or ``levels``).
        hidden_channels: ``F``, features of both stacks (``>= C``).
        num_layers: gated blocks (>= 1).
        kernel_size: odd ``k`` of the ``k x k`` vertical and ``1 x k`` horizontal convolutions.
        head_channels: width of the ``1 x 1`` output layer.
        conditional: class-conditional ``P(x | y)``.
        lr, weight_decay: Adam settings.

    Raises:
        ConfigError: for non-positive sizes, an even kernel, ``hidden_channels < C``, or the data
            checks of :class:`PixelAutoregressive`.
    """

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        hidden_channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        head_channels: int = 128,
        conditional: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(data_spec, conditional=conditional, lr=lr, weight_decay=weight_decay)
        f = positive_int("model.hidden_channels", hidden_channels)
        positive_int("model.num_layers", num_layers)
        positive_int("model.head_channels", head_channels)
        if positive_int("model.kernel_size", kernel_size) % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd, got {kernel_size}")
        c = self.num_colors
        if f < c or head_channels < c:
            raise ConfigError(f"model.hidden_channels and head_channels must be >= the {c} colour channels")
        self.save_model_hparams()
        self.kernel_size = kernel_size
        self.blocks = nn.ModuleList(
            GatedBlock(c if n == 0 else f, f, kernel_size, c, first=n == 0, num_classes=self.num_classes)
            for n in range(num_layers)
        )
        self.head = OutputHead(f, head_channels, c, self.num_outputs)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` (and labels ``(B,)``) -> logits ``(B, K, C, H, W)``."""
        v = h = self.network_input(x)
        for block in self.blocks:
            v, h = block(v, h, y)
        return self.head(h)

    def _sample_fast(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Cached sampler: noise ``(n, C, H, W)`` -> values ``(n, C, H, W)``, equal to the naive sampler's.

        State per block ``l`` (``p = k // 2`` zero padding):

        * ``v_in[l]``: ``(n, F_in, H + 2p, W + 2p)``, the vertical stack's input, filled a row at a time;
        * ``v_pre[l]``: ``(n, 2F, H, W)``, its pre-activations, read one row lower by the horizontal stack;
        * ``h_in[l]``: ``(n, F_in, 1, W + 2p)``, the horizontal stack's input in the current row.

        ``v_in[0]`` and ``h_in[0]`` hold the image itself. Features of colour group ``g`` depend on the
        current pixel's channels ``< g`` only, so the features computed while drawing the last channel
        are final and stay in the cache.
        """
        n, c_, h_, w_ = u.shape
        k, p = self.kernel_size, self.kernel_size // 2
        x = torch.zeros_like(u)
        widths = [c_] + [b.hidden_channels for b in self.blocks]
        v_in = [u.new_zeros(n, ch, h_ + 2 * p, w_ + 2 * p) for ch in widths[:-1]]
        v_pre = [u.new_zeros(n, 2 * b.hidden_channels, h_, w_) for b in self.blocks]
        for i in range(h_):
            h_in = [u.new_zeros(n, ch, 1, w_ + 2 * p) for ch in widths]
            for j in range(w_):
                above = [
                    vp[:, :, i - 1 : i, j : j + 1] if i > 0 else vp.new_zeros(n, vp.shape[1], 1, 1) for vp in v_pre
                ]
                for c in range(c_):
                    for layer, block in enumerate(self.blocks):
                        window = h_in[layer][:, :, :, j : j + k]
                        h_in[layer + 1][:, :, :, j + p : j + p + 1] = block.horizontal_pixel(window, above[layer], y)
                    logits = self.head(h_in[-1][:, :, :, j + p : j + p + 1])[:, :, c, 0, 0]
                    value = self.draw(logits, u[:, c, i, j])
                    x[:, c, i, j] = value
                    h_in[0][:, c, 0, j + p] = self.network_input(value)
            v_in[0][:, :, i + p, p : p + w_] = self.network_input(x[:, :, i, :])
            for layer, block in enumerate(self.blocks):
                pre, out = block.vertical_row(v_in[layer][:, :, i : i + k, :], y)
                v_pre[layer][:, :, i : i + 1] = pre
                if layer + 1 < len(self.blocks):
                    v_in[layer + 1][:, :, i + p : i + p + 1, p : p + w_] = out
        return x
