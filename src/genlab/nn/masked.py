"""Masked convolutions for autoregressive image models, and the gated PixelCNN block built from them.

Sub-pixels are ordered in raster order over pixels (row by row, left to right) and, within a pixel,
by colour channel (R, then G, then B). A network respects that order when the output for sub-pixel
``(c, i, j)`` depends only on inputs that come earlier.

Colour order inside a pixel is enforced with *channel groups* (van den Oord et al. 2016a, "Pixel
Recurrent Neural Networks", Sec. 3.4): every feature map belongs to one of ``C`` groups (group ``g``
of a feature means "may know the current pixel's channels before ``g``"). At the centre tap of a
kernel, mask ``A`` lets an output of group ``g`` read inputs of groups ``< g`` only (the first layer,
whose input is the image itself); mask ``B`` also lets it read group ``g`` (every later layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MASK_TYPES = ("A", "B", "V")


def channel_groups(num_features: int, num_colors: int) -> torch.Tensor:
    """Colour group of each of ``num_features`` feature maps: contiguous blocks, ``f * C // num_features``.

    Args:
        num_features: number of feature maps (``>= num_colors``, so every group has one).
        num_colors: ``C``, the image's channels.

    Returns:
        ``(num_features,)`` int64 in ``[0, C)``, non-decreasing.

    Raises:
        ValueError: if ``num_features < num_colors``.
    """
    if num_features < num_colors:
        raise ValueError(f"need at least one feature per colour: {num_features} features for {num_colors} colours")
    return torch.arange(num_features) * num_colors // num_features


def causal_mask(
    kernel_size: tuple[int, int], mask_type: str, out_groups: torch.Tensor, in_groups: torch.Tensor
) -> torch.Tensor:
    """The 0/1 weight mask ``(out, in, kh, kw)`` of a causal convolution with an odd kernel.

    * ``"A"``/``"B"`` (van den Oord et al. 2016a, Sec. 3.4, Fig. 4): taps in rows above the centre and
      taps left of the centre in the centre row are open; the centre tap is open from input group
      ``gi`` to output group ``go`` when ``go > gi`` (A) or ``go >= gi`` (B); the rest are closed.
      A ``(1, k)`` kernel gives the horizontal stack of the gated PixelCNN, a ``(k, k)`` kernel the
      original PixelCNN layer.
    * ``"V"`` (vertical stack, van den Oord et al. 2016b, Sec. 2.2): every tap in rows up to and
      including the centre row is open. Such a map at row ``i`` sees rows ``<= i``; it becomes
      causal only after a shift down by one row (:func:`shift_down`) before it meets the
      horizontal stack.

    Args:
        kernel_size: ``(kh, kw)``, both odd.
        mask_type: ``"A"``, ``"B"`` or ``"V"``.
        out_groups: ``(out,)`` colour group of each output feature.
        in_groups: ``(in,)`` colour group of each input feature.

    Raises:
        ValueError: for an even kernel size or an unknown mask type.
    """
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"causal masks need odd kernel sizes, got {kernel_size}")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    ci, cj = kh // 2, kw // 2
    if mask_type == "V":
        mask[:, :, : ci + 1, :] = 1.0
        return mask
    mask[:, :, :ci, :] = 1.0
    mask[:, :, ci, :cj] = 1.0
    go, gi = out_groups[:, None], in_groups[None, :]
    mask[:, :, ci, cj] = (go > gi if mask_type == "A" else go >= gi).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A stride-1 ``nn.Conv2d`` whose weight is multiplied by a fixed causal mask (:func:`causal_mask`).

    ``forward`` pads by half the kernel (``'same'`` output size): ``(B, in, H, W) -> (B, out, H, W)``.
    ``forward_window`` applies the same masked weight without padding to a window the caller cut
    out of a zero-padded buffer, e.g. ``(B, in, kh, kw) -> (B, out, 1, 1)`` for one position or
    ``(B, in, kh, W + kw - 1) -> (B, out, 1, W)`` for one row: the cached samplers use it to
    compute only the outputs that a new sub-pixel changes (Ramachandran et al. 2017).

    Args:
        in_channels, out_channels: feature maps in and out.
        kernel_size: int or ``(kh, kw)``, odd.
        mask_type: ``"A"``, ``"B"`` or ``"V"``.
        in_groups, out_groups: colour group of each input/output feature (default: all 0, a
            single colour).
        bias: learn an additive bias.

    Raises:
        ValueError: for an even kernel, an unknown mask type, or group vectors of the wrong length.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str,
        in_groups: Sequence[int] | torch.Tensor | None = None,
        out_groups: Sequence[int] | torch.Tensor | None = None,
        bias: bool = True,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        gi = torch.zeros(in_channels, dtype=torch.long) if in_groups is None else torch.as_tensor(in_groups)
        go = torch.zeros(out_channels, dtype=torch.long) if out_groups is None else torch.as_tensor(out_groups)
        if len(gi) != in_channels or len(go) != out_channels:
            raise ValueError(f"group vectors of length {len(gi)}/{len(go)} for {in_channels}/{out_channels} channels")
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask((kh, kw), mask_type, go, gi), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask``: ``(out, in, kh, kw)``."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)

    def forward_window(self, window: torch.Tensor) -> torch.Tensor:
        """The masked convolution of an already padded window, with no padding of its own."""
        return F.conv2d(window, self.masked_weight(), self.bias)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (row 0 becomes zeros, the last row drops): ``(B, F, H, W)`` -> same."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation ``tanh(a) * sigmoid(b)`` with ``a, b`` the two channel halves of ``x``
    (van den Oord et al. 2016b, Eq. 2): ``(B, 2F, ...) -> (B, F, ...)``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """One layer of the gated PixelCNN with a vertical and a horizontal stack (van den Oord et al.
    2016b, Sec. 2.2 and Fig. 2).

    * vertical: ``v_pre = W_v * v`` (a ``k x k`` mask-``V`` convolution), ``v' = gate(v_pre + V_v y)``;
    * horizontal: ``h_pre = W_h * h + W_vh shift_down(v_pre)`` (a ``1 x k`` mask-A/B convolution plus a
      ``1 x 1`` link from the vertical stack, one row lower so it only carries rows above),
      ``h' = h + W_o gate(h_pre + V_h y)`` (``1 x 1`` mask B), without the residual in the first layer.

    The vertical stack sees a rectangle above the pixel and the horizontal stack the pixels to its
    left, so together they have no blind spot. ``y`` enters as a learnt per-class bias (the
    one-hot ``V^T y`` of Eq. 4).

    Args:
        in_channels: features of ``v`` and ``h`` in (the image's ``C`` for the first block).
        hidden_channels: ``F``, features out (``>= C``).
        kernel_size: odd ``k``.
        num_colors: ``C``, for the channel groups.
        first: first block: mask A and no residual.
        num_classes: classes of the conditioning label, or ``None``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int,
        num_colors: int,
        first: bool,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        g_in = channel_groups(in_channels, num_colors)
        g = channel_groups(hidden_channels, num_colors)
        g2 = torch.cat([g, g])  # pre-activations: the tanh half and the sigmoid half
        k, f = kernel_size, hidden_channels
        self.first, self.hidden_channels = first, f
        self.v_conv = MaskedConv2d(in_channels, 2 * f, (k, k), "V")
        self.h_conv = MaskedConv2d(in_channels, 2 * f, (1, k), "A" if first else "B", g_in, g2)
        self.v_to_h = nn.Conv2d(2 * f, 2 * f, 1)
        self.h_out = MaskedConv2d(f, f, 1, "B", g, g)
        self.embed = nn.Embedding(num_classes, 4 * f) if num_classes else None

    def class_bias(self, y: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Per-class biases ``(V_v y, V_h y)``, each ``(B, 2F, 1, 1)`` (``0.0`` when unconditional)."""
        if self.embed is None or y is None:
            return 0.0, 0.0
        cv, ch = self.embed(y)[:, :, None, None].chunk(2, dim=1)
        return cv, ch

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, h)``, each ``(B, in, H, W)``, and labels ``(B,)`` -> ``(v', h')``, each ``(B, F, H, W)``."""
        cv, ch = self.class_bias(y)
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(shift_down(v_pre))
        h_new = self.h_out(gate(h_pre + ch))
        return gate(v_pre + cv), h_new if self.first else h + h_new

    def vertical_row(self, v_window: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One row of the vertical stack from a padded window of rows ``i - k//2 .. i + k//2``.

        Args:
            v_window: ``(B, in, k, W + k - 1)`` (zero padding included; rows below ``i`` are masked).

        Returns:
            ``(v_pre, v')`` for row ``i``: ``(B, 2F, 1, W)`` and ``(B, F, 1, W)``.
        """
        cv, _ = self.class_bias(y)
        v_pre = self.v_conv.forward_window(v_window)
        return v_pre, gate(v_pre + cv)

    def horizontal_pixel(
        self,
        h_window: torch.Tensor,
        v_pre_above: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The horizontal stack at one pixel ``(i, j)``.

        Args:
            h_window: ``(B, in, 1, k)``, this block's input at row ``i``, columns ``j - k//2 .. j + k//2``
                (zero padded; columns right of ``j`` are masked).
            v_pre_above: ``(B, 2F, 1, 1)``, ``v_pre`` at ``(i - 1, j)`` (zeros in row 0).
            y: labels ``(B,)`` or ``None``.

        Returns:
            ``h'`` at ``(i, j)``: ``(B, F, 1, 1)``.
        """
        _, ch = self.class_bias(y)
        k = h_window.shape[-1]
        h_pre = self.h_conv.forward_window(h_window) + self.v_to_h(v_pre_above)
        h_new = self.h_out(gate(h_pre + ch))
        return h_new if self.first else h_window[:, :, :, k // 2 : k // 2 + 1] + h_new


class OutputHead(nn.Module):
    """Per-sub-pixel logits from causal features: ``ReLU, 1x1 (B), ReLU, 1x1 (B)``, the output stage of
    PixelRNN and PixelCNN (van den Oord et al. 2016a).

    The last layer gives ``K`` logits for each colour channel ``c`` from features of groups ``<= c``,
    so channel ``c``'s logits see the current pixel's channels ``< c`` only.

    Args:
        in_channels: features in (grouped by :func:`channel_groups`).
        hidden_channels: width of the middle ``1 x 1`` layer.
        num_colors: ``C``.
        num_outputs: ``K`` logits per sub-pixel (the data's levels, or 1 for a Bernoulli).

    ``forward``: ``(B, in, H, W) -> (B, K, C, H, W)`` logits.
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_colors: int, num_outputs: int) -> None:
        super().__init__()
        g_in = channel_groups(in_channels, num_colors)
        g_mid = channel_groups(hidden_channels, num_colors)
        g_out = torch.arange(num_colors).repeat_interleave(num_outputs)  # output c * K + k has group c
        self.num_colors, self.num_outputs = num_colors, num_outputs
        self.hidden = MaskedConv2d(in_channels, hidden_channels, 1, "B", g_in, g_mid)
        self.out = MaskedConv2d(hidden_channels, num_colors * num_outputs, 1, "B", g_mid, g_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, _, height, width = h.shape
        z = self.out(F.relu(self.hidden(F.relu(h))))
        return z.view(b, self.num_colors, self.num_outputs, height, width).transpose(1, 2)
