"""Gated PixelCNN (van den Oord et al. 2016b, "Conditional Image Generation with PixelCNN Decoders")
with the cached sampler of Ramachandran et al. 2017 ("Fast Generation for Convolutional
Autoregressive Models")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.spec import DataSpec
from genlab.models.autoregressive import PixelAutoregressive
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
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

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
        **base: Any,
    ) -> None:
        super().__init__(data_spec, conditional=conditional, **base)
        self.check_sizes(hidden_channels, head_channels, num_layers, kernel_size=kernel_size)
        f, c = hidden_channels, self.num_colors
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

        Every map is kept channels last, and every convolution becomes a matrix product on views made
        once (``p = k // 2`` zero padding; ``F_in`` a block's input features). State per block ``l``:

        * ``v_in[l]``: ``(n, H + 2p, (W + 2p) F_in)``, the vertical stack's input, filled a row at a
          time; a row of ``v_pre`` is one product of its ``p + 1`` rows up to the centre (the rows
          below are masked) unfolded into ``(W n, (p + 1) k F_in)`` windows;
        * ``vh[l]``: ``(W, n, 2F)``, what the vertical stack adds to the horizontal pre-activations of
          the current row: ``v_to_h`` of the row above's ``v_pre`` plus the ``1 x k`` convolution's
          bias and the class bias, once per row;
        * ``h_in[l]``: ``(n, (W + 2p) F_in)``, the horizontal stack's input in the current row: the
          window of pixel ``j`` (its ``p`` left neighbours and itself; the taps to its right are
          masked) is the slice ``[j F_in, (j + p + 1) F_in)``.

        A sub-pixel then costs, per block, one product for its window, the gate and one product for
        the ``1 x 1`` output layer (Ramachandran et al. 2017, Sec. 3); the draw inverts the CDF as
        :meth:`draw` does. ``h_in[0]`` holds the image (network input scale). Features of colour group
        ``g`` depend on the current pixel's channels ``< g`` only, so the features computed while
        drawing the last channel are final and stay in the cache (and stale entries of ``h_in[0]``
        at channels not drawn yet only reach features of later groups).
        """
        n, c_, h_, w_ = u.shape
        k, p = self.kernel_size, self.kernel_size // 2
        K, wp = self.num_outputs, w_ + 2 * p
        levels = torch.arange(self.spec.levels, device=u.device, dtype=u.dtype) / (self.spec.levels - 1)
        inputs_of_level = self.network_input(levels)  # the same floats as network_input of the image
        widths = [c_] + [b.hidden_channels for b in self.blocks]
        v_in = [u.new_zeros(n, h_ + 2 * p, wp * ch) for ch in widths[:-1]]
        h_in = [u.new_zeros(n, wp * ch) for ch in widths]
        pixel, rows = [], []
        for layer, block in enumerate(self.blocks):
            f, cin, cout = block.hidden_channels, widths[layer], widths[layer + 1]
            wv = block.v_conv.masked_weight()[:, :, : p + 1]  # (2F, F_in, p + 1, k): rows up to the centre
            wv = wv.permute(2, 3, 1, 0).reshape((p + 1) * k * cin, 2 * f)  # row (r k + t) F_in + c
            wh = block.h_conv.masked_weight()[:, :, 0, : p + 1]  # (2F, F_in, p + 1): taps up to the centre
            wh = wh.permute(2, 1, 0).reshape((p + 1) * cin, 2 * f)  # row t F_in + c
            cv, ch = block.class_bias(y)  # (n, 2F, 1, 1) each, or 0.0
            as_rows = lambda b: b[:, :, 0, 0] if isinstance(b, torch.Tensor) else 0.0  # noqa: E731
            vh_bias = (block.v_to_h.bias + block.h_conv.bias + as_rows(ch)).expand(w_, n, 2 * f).contiguous()
            v_bias = block.v_conv.bias.expand(w_, n, 2 * f).contiguous()
            cv = cv[:, :, 0, 0] if isinstance(cv, torch.Tensor) else None  # (n, 2F), added before the gate
            vh = vh_bias.clone()  # row 0: v_to_h of zeros
            pre = u.new_empty(n, 2 * f)
            h_out = h_in[layer + 1]
            pixel.append((
                [h_in[layer][:, j * cin : (j + p + 1) * cin] for j in range(w_)],  # windows
                vh.unbind(0), wh, pre, pre[:, :f], pre[:, f:],
                None if block.first else [h_in[layer][:, (j + p) * cin : (j + p + 1) * cin] for j in range(w_)],
                block.h_out.masked_weight()[:, :, 0, 0].t(), block.h_out.bias.expand(n, f).contiguous(),
                [h_out[:, (j + p) * cout : (j + p + 1) * cout] for j in range(w_)],  # outputs
            ))  # fmt: skip
            nxt = v_in[layer + 1][:, p:, p * f : (p + w_) * f] if layer + 1 < len(self.blocks) else None
            rows.append((v_in[layer], cin, wv, v_bias, cv, f, nxt, vh.view(w_ * n, 2 * f),
                         vh_bias.view(w_ * n, 2 * f), block.v_to_h.weight[:, :, 0, 0].t()))  # fmt: skip
        head = self.head
        w1, b1 = head.hidden.masked_weight()[:, :, 0, 0].t(), head.hidden.bias.expand(n, -1).contiguous()
        w2, b2 = head.out.masked_weight()[:, :, 0, 0].t(), head.out.bias
        w2 = [(w2[:, c * K : (c + 1) * K], b2[c * K : (c + 1) * K].expand(n, K).contiguous()) for c in range(c_)]
        last, image = h_in[-1], h_in[0]
        features = [last[:, (j + p) * widths[-1] : (j + p + 1) * widths[-1]] for j in range(w_)]
        inputs = [[image[:, (j + p) * c_ + c : (j + p) * c_ + c + 1] for c in range(c_)] for j in range(w_)]
        noise = u.permute(2, 3, 1, 0).contiguous().view(h_ * w_ * c_, n, 1).unbind(0)  # raster order, (n, 1)
        drawn: list[torch.Tensor] = []  # level index (n, 1) of every sub-pixel, raster order
        d = 0
        for i in range(h_):
            for j in range(w_):
                for c in range(c_):
                    for windows, vh, wh, pre, pre_a, pre_b, centres, wo, bo, outputs in pixel:
                        torch.addmm(vh[j], windows[j], wh, out=pre)
                        gated = pre_b.sigmoid_().mul_(pre_a.tanh_())  # gate: tanh(a) * sigmoid(b)
                        if centres is None:
                            torch.addmm(bo, gated, wo, out=outputs[j])
                        else:
                            torch.add(centres[j], torch.addmm(bo, gated, wo), out=outputs[j])
                    hidden = torch.addmm(b1, F.relu(features[j]), w1).relu_()
                    wc, bc = w2[c]
                    logits = torch.addmm(bc, hidden, wc)  # (n, K)
                    if K == 1:  # as self.draw: 1 if u < sigmoid(logit)
                        level = torch.lt(noise[d], torch.sigmoid(logits)).long()
                    else:  # as self.draw: the smallest level whose CDF exceeds u
                        cdf = torch.softmax(logits, 1).cumsum(1)
                        level = torch.searchsorted(cdf, noise[d], right=True).clamp_(max=K - 1)
                    torch.take(inputs_of_level, level, out=inputs[j][c])
                    drawn.append(level)
                    d += 1
            v_in[0][:, i + p] = image  # the finished row, zero padded like the rest
            for vin, cin, wv, v_bias, cv, f, nxt, vh, vh_bias, wvh in rows:
                cols = vin[:, i : i + p + 1].unfold(2, k * cin, cin)  # (n, p + 1, W, k F_in)
                cols = cols.permute(2, 0, 1, 3).reshape(w_ * n, (p + 1) * k * cin)  # rows (j, image)
                v_pre = torch.addmm(v_bias.view(w_ * n, 2 * f), cols, wv)  # this row's v_pre
                if nxt is not None:
                    z = v_pre.view(w_, n, 2 * f)
                    a, b = (z if cv is None else z + cv).chunk(2, dim=2)
                    torch.mul(torch.tanh(a), torch.sigmoid(b), out=nxt[:, i].view(n, w_, f).transpose(0, 1))
                torch.addmm(vh_bias, v_pre, wvh, out=vh)  # for the row below
        x = torch.take(levels, torch.cat(drawn, 1))  # (n, H W C) values, as self.draw returns them
        return x.view(n, h_, w_, c_).permute(0, 3, 1, 2).contiguous()
