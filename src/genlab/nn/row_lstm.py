"""The Row LSTM layer of PixelRNN (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", Sec. 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from genlab.nn.masked import MaskedConv2d, channel_groups


class RowLSTM(nn.Module):
    """A residual Row LSTM layer: an LSTM that runs down the image one row at a time.

    For row ``i`` (van den Oord et al. 2016a, Eq. 3):
    ``[o, f, i, g] = sigma(K_ss * h_{i-1} + K_is * x_i (+ V y))``, ``c_i = f . c_{i-1} + i . g``,
    ``h_i = o . tanh(c_i)`` (sigmoid for ``o, f, i``, tanh for ``g``), where ``K_is`` is a ``1 x k``
    mask-B convolution along the row (the pixel's left neighbours and, by colour group, itself) and
    ``K_ss`` a ``k``-wide 1-D convolution over the previous row's state (all of it in the past).
    The layer returns ``x + W_o h`` (a ``1 x 1`` mask-B projection, the residual connection of
    Sec. 3.3). The state of pixel ``(i, j)`` sees a triangle of rows above and the row to its left;
    the parts outside it are the Row LSTM's blind spot (Sec. 3.2 fixes it with the Diagonal BiLSTM).

    Args:
        channels: ``F``, features in, of the state and out (``>= C``).
        kernel_size: odd ``k`` of both convolutions (the paper's 3).
        num_colors: ``C``, for the channel groups.
        num_classes: classes of the conditioning label (a learnt per-class gate bias), or ``None``.

    ``forward``: ``(B, F, H, W)`` and labels ``(B,)`` -> ``(B, F, H, W)``.
    """

    def __init__(self, channels: int, kernel_size: int, num_colors: int, num_classes: int | None = None) -> None:
        super().__init__()
        g = channel_groups(channels, num_colors)
        self.channels = channels
        self.input_to_state = MaskedConv2d(channels, 4 * channels, (1, kernel_size), "B", g, g.repeat(4))
        self.state_to_state = nn.Conv1d(channels, 4 * channels, kernel_size, padding=kernel_size // 2)
        self.out = MaskedConv2d(channels, channels, 1, "B", g, g)
        self.embed = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def class_bias(self, y: torch.Tensor | None) -> torch.Tensor | float:
        """Per-class gate bias ``(B, 4F, 1)`` (``0.0`` when unconditional)."""
        return 0.0 if self.embed is None or y is None else self.embed(y)[:, :, None]

    @staticmethod
    def cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM update from pre-activations ``(B, 4F, ...)`` and the cell above ``(B, F, ...)`` -> ``(h, c)``."""
        o, f, i, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def recurrent_input(self, h_prev: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``K_ss * h_{i-1} (+ V y)`` for a whole row: ``(B, F, W) -> (B, 4F, W)``."""
        return self.state_to_state(h_prev) + self.class_bias(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, _, height, width = x.shape
        from_input = self.input_to_state(x)  # (B, 4F, H, W), every row at once
        h = x.new_zeros(b, self.channels, width)
        c = torch.zeros_like(h)
        rows = []
        for i in range(height):
            h, c = self.cell(from_input[:, :, i] + self.recurrent_input(h, y), c)
            rows.append(h)
        return x + self.out(torch.stack(rows, dim=2))

    def step(
        self, window: torch.Tensor, recurrent: torch.Tensor, c_above: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer at one pixel ``(i, j)``, for cached sampling.

        Args:
            window: ``(B, F, 1, k)``, the layer input in row ``i``, columns ``j - k//2 .. j + k//2``
                (zero padded; columns right of ``j`` are masked).
            recurrent: ``(B, 4F)``, :meth:`recurrent_input` of row ``i - 1`` at column ``j``.
            c_above: ``(B, F)``, the cell state at ``(i - 1, j)``.

        Returns:
            ``(out, h, c)``: the layer output ``(B, F, 1, 1)`` and the new state ``(B, F)`` twice.
        """
        k = window.shape[-1]
        gates = self.input_to_state.forward_window(window)[:, :, 0, 0] + recurrent
        h, c = self.cell(gates, c_above)
        out = window[:, :, :, k // 2 : k // 2 + 1] + self.out(h[:, :, None, None])
        return out, h, c
