"""PixelRNN with Row LSTM layers (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.models.autoregressive import PixelAutoregressive
from genlab.nn.masked import MaskedConv2d, OutputHead, channel_groups
from genlab.nn.row_lstm import RowLSTM


class PixelRNN(PixelAutoregressive):
    """Row LSTM PixelRNN: a ``k0 x k0`` mask-A convolution, ``num_layers`` residual Row LSTM layers and
    a masked ``1 x 1`` output head with a softmax over the data's levels per sub-pixel (a Bernoulli on
    binary data) (van den Oord et al. 2016a, Sec. 3.1, 3.3 and 3.4).

    Sampling (``sample``) runs row by row carrying each layer's LSTM state: at the start of a row
    each layer computes its recurrent input from the previous row's state once; a new sub-pixel
    then costs the input convolution at that pixel and one LSTM step per layer.
    ``sample(..., method="naive")`` runs the whole network once per sub-pixel.

    Args:
        data_spec: the data description (``binary`` or ``levels``).
        hidden_channels: ``F``, features of every layer and LSTM state (``>= C``).
        num_layers: Row LSTM layers (>= 1).
        input_kernel_size: odd ``k0`` of the first (mask A) convolution (the paper's 7).
        kernel_size: odd ``k`` of the Row LSTM's input-to-state and state-to-state convolutions (3).
        head_channels: width of the ``1 x 1`` output layer.
        conditional: class-conditional ``P(x | y)`` (a per-class bias on every layer's gates).
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for non-positive sizes, even kernels, ``hidden_channels < C``, or the data
            checks of :class:`PixelAutoregressive`.
    """

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        hidden_channels: int = 64,
        num_layers: int = 4,
        input_kernel_size: int = 7,
        kernel_size: int = 3,
        head_channels: int = 128,
        conditional: bool = False,
        **base: Any,
    ) -> None:
        super().__init__(data_spec, conditional=conditional, **base)
        self.check_sizes(hidden_channels, head_channels, num_layers, input_kernel_size=input_kernel_size,
                         kernel_size=kernel_size)  # fmt: skip
        f, c = hidden_channels, self.num_colors
        self.save_model_hparams()
        self.input_kernel_size, self.kernel_size, self.hidden_channels = input_kernel_size, kernel_size, f
        self.input_conv = MaskedConv2d(
            c, f, input_kernel_size, "A", channel_groups(c, c), channel_groups(f, c)
        )  # fmt: skip
        self.layers = nn.ModuleList(RowLSTM(f, kernel_size, c, self.num_classes) for _ in range(num_layers))
        self.head = OutputHead(f, head_channels, c, self.num_outputs)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` (and labels ``(B,)``) -> logits ``(B, K, C, H, W)``."""
        h = self.input_conv(self.network_input(x))
        for layer in self.layers:
            h = layer(h, y)
        return self.head(h)

    def _sample_fast(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Row-by-row sampler: noise ``(n, C, H, W)`` -> values ``(n, C, H, W)``, equal to the naive sampler's.

        State: the zero-padded image ``(n, C, H + 2 p0, W + 2 p0)``, each layer's ``(h, c)`` of the
        previous row ``(n, F, W)``, and each layer's input in the current row ``(n, F, 1, W + 2p)``.
        """
        n, c_, h_, w_ = u.shape
        f, k0, k = self.hidden_channels, self.input_kernel_size, self.kernel_size
        p0, p = k0 // 2, k // 2
        x = torch.zeros_like(u)
        image = u.new_zeros(n, c_, h_ + 2 * p0, w_ + 2 * p0)
        h_above = [u.new_zeros(n, f, w_) for _ in self.layers]
        c_above = [u.new_zeros(n, f, w_) for _ in self.layers]
        for i in range(h_):
            recurrent = [layer.recurrent_input(h, y) for layer, h in zip(self.layers, h_above)]
            row_in = [u.new_zeros(n, f, 1, w_ + 2 * p) for _ in range(len(self.layers) + 1)]
            h_row = [u.new_zeros(n, f, w_) for _ in self.layers]
            c_row = [u.new_zeros(n, f, w_) for _ in self.layers]
            for j in range(w_):
                for c in range(c_):
                    row_in[0][:, :, :, j + p : j + p + 1] = self.input_conv.forward_window(
                        image[:, :, i : i + k0, j : j + k0]
                    )
                    for n_layer, layer in enumerate(self.layers):
                        out, h_row[n_layer][:, :, j], c_row[n_layer][:, :, j] = layer.step(
                            row_in[n_layer][:, :, :, j : j + k], recurrent[n_layer][:, :, j], c_above[n_layer][:, :, j]
                        )
                        row_in[n_layer + 1][:, :, :, j + p : j + p + 1] = out
                    logits = self.head(row_in[-1][:, :, :, j + p : j + p + 1])[:, :, c, 0, 0]
                    x[:, c, i, j] = self.draw(logits, u[:, c, i, j])
                    image[:, c, i + p0, j + p0] = self.network_input(x[:, c, i, j])
            h_above, c_above = h_row, c_row
        return x
