"""ImageGPT: the GPT transformer of :mod:`genlab.nn.transformer` over sub-pixels as tokens
(Chen et al. 2020, "Generative Pretraining from Pixels")."""

from __future__ import annotations

from typing import Any

import torch

from genlab.checks import positive_int
from genlab.data.spec import DataSpec
from genlab.models.autoregressive import PixelAutoregressive
from genlab.nn.transformer import Transformer


class ImageGPT(PixelAutoregressive):
    """A decoder-only transformer over the ``D = C H W`` sub-pixels of an image in raster order.

    Each sub-pixel's level ``k`` in ``[0, L)`` is a token; the sequence is preceded by a start token
    (id ``L``), so position ``t`` of the input ``[start, x_0, ..., x_{D-2}]`` predicts ``x_t`` from
    ``x_<t`` with a softmax over the ``L`` levels (the start token's logit is dropped). On binary data
    the two level logits give one Bernoulli logit, ``l_1 - l_0``. Every earlier sub-pixel is attended
    to, so there is no blind spot; the price is attention over ``D`` positions (Chen et al. 2020,
    who therefore shrink images and palettes; genlab's digits are 64 tokens, MNIST 784).
    Class conditioning adds a learnt class embedding at every position (see :class:`Transformer`).

    Sampling (``sample``) feeds one token per step through the transformer's key/value cache;
    ``sample(..., method="naive")`` reruns the full sequence once per sub-pixel. See
    :class:`genlab.models.autoregressive.PixelAutoregressive` for likelihood, units and sampling.

    Args:
        data_spec: the data description (``binary`` or ``levels``).
        n_layer, n_head, n_embd: transformer depth, heads and width (``n_embd % n_head == 0``).
        dropout: dropout during training.
        conditional: class-conditional ``P(x | y)``.
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for non-positive sizes, ``n_embd`` not a multiple of ``n_head``, or the data
            checks of :class:`PixelAutoregressive`.
    """

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        conditional: bool = False,
        lr: float = 5e-4,
        **base: Any,
    ) -> None:
        super().__init__(data_spec, conditional=conditional, lr=lr, **base)
        for name, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            positive_int(f"model.{name}", value)
        self.save_model_hparams()
        self.start_token = self.spec.levels
        self.net = Transformer(
            self.spec.levels + 1, self.spec.num_dims, n_layer, n_head, n_embd, dropout, num_classes=self.num_classes
        )

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` values -> ``(B, D)`` level ids in raster order (channels within a pixel)."""
        return self.to_index(x).permute(0, 2, 3, 1).flatten(1)

    def level_logits(self, seq_logits: torch.Tensor) -> torch.Tensor:
        """Transformer logits ``(B, T, L + 1)`` -> per-sub-pixel logits ``(B, K, T)``."""
        z = seq_logits[..., : self.spec.levels]
        if self.num_outputs == 1:
            z = z[..., 1:2] - z[..., 0:1]
        return z.transpose(1, 2)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` (and labels ``(B,)``) -> logits ``(B, K, C, H, W)``."""
        b, (c, h, w) = len(x), self.spec.shape
        start = torch.full((b, 1), self.start_token, dtype=torch.long, device=x.device)
        seq = torch.cat([start, self.tokens(x)[:, :-1]], dim=1)
        z = self.level_logits(self.net(seq, condition=y))  # (B, K, D)
        return z.reshape(b, -1, h, w, c).permute(0, 1, 4, 2, 3)

    def _sample_fast(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Key/value-cached sampler: noise ``(n, C, H, W)`` -> values ``(n, C, H, W)``, equal to the naive
        sampler's. One transformer step per sub-pixel, attending over the cached earlier positions."""
        n, (c, h, w) = len(u), self.spec.shape
        noise = u.permute(0, 2, 3, 1).flatten(1)  # (n, D) in raster order
        values = torch.zeros_like(noise)
        cache = self.net.new_cache(n)
        token = torch.full((n, 1), self.start_token, dtype=torch.long, device=u.device)
        for t in range(noise.shape[1]):
            z = self.level_logits(self.net(token, condition=y, cache=cache))[:, :, 0]
            values[:, t] = self.draw(z, noise[:, t])
            token = self.to_index(values[:, t : t + 1])
        return values.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
