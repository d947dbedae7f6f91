"""What the autoregressive image models share: discrete outputs per sub-pixel, exact likelihood, sampling.

An image ``x`` of shape ``(C, H, W)`` is a sequence of ``D = C H W`` sub-pixels in raster order (rows
top to bottom, pixels left to right, channels R, G, B within a pixel), and
``log P(x) = sum_d log P(x_d | x_<d)`` (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks",
Eq. 1-2). Each sub-pixel gets a ``K``-way softmax over the data's ``L`` levels (``K = L``), or a
Bernoulli (one logit, ``K = 1``) on binary data, so ``log_prob`` is an exact log mass in nats.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from genlab.checks import one_of, positive_int, require
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim
from genlab.models.base import GenerativeModel

SAMPLERS = ("fast", "naive")
EVAL_LOGITS = 2**24  # most logits held at once when scoring without gradients (64 MB in float32)


class PixelAutoregressive(GenerativeModel):
    """Base class of discrete autoregressive image models (PixelCNN, PixelRNN, ImageGPT).

    Subclasses implement ``logits(x, y) -> (B, K, C, H, W)`` (causal: the logits of sub-pixel ``d``
    depend on ``x_<d`` only) and ``_sample_fast(u, y)``, a sampler that reuses what earlier positions
    computed. This class provides ``log_prob``, ``sample`` (with the naive sampler, one full
    forward pass per sub-pixel, as the reference), ``score`` and the checks.

    Both samplers draw the uniform noise ``u ~ U[0, 1)`` of every sub-pixel up front, in one call,
    and turn ``u`` into a value by inverting the sub-pixel's CDF (:meth:`draw`); so for one seed they
    return the same images, whatever they compute in between.

    Class conditioning (``conditional=True``, van den Oord et al. 2016b, Sec. 2.3) models
    ``P(x | y)`` with ``y`` in ``[0, num_classes)``. Training minimises ``-log P(x | y)``
    (logged as ``cond_nll_nats``); ``log_prob(x)`` without labels is the exact marginal
    ``log sum_y P(y) P(x | y)`` under a uniform class prior, so test numbers compare with
    unconditional models.

    Args:
        data_spec: the data description (``kind`` ``binary`` or ``levels``; images ``(C, H, W)``).
        conditional: model ``P(x | y)`` (declares the ``conditional`` capability).
        sample_method: ``fast`` (cached, the default) or ``naive``: what :meth:`sample` uses.
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for dequantized data (these are discrete models), data that are not images,
            ``conditional`` on data without classes, or an unknown ``sample_method``.
    """

    nll_kind = "exact"
    capabilities = frozenset({"log_prob", "sample"})

    def __init__(
        self, data_spec: DataSpec | dict[str, Any], conditional: bool = False, sample_method: str = "fast", **base: Any
    ) -> None:
        super().__init__(data_spec, **base)
        self.sample_method = one_of("model.sample_method", sample_method, SAMPLERS)
        name = type(self).__name__
        if self.spec.kind == "dequantized":
            raise ConfigError(
                f"{name} is a discrete model (a softmax over the pixel levels) and cannot score dequantized "
                "data; use data.representation=continuous (levels k/(L-1)) or binarized"
            )
        if len(self.spec.shape) != 3:
            raise ConfigError(f"{name} models images (C, H, W); the data have shape {self.spec.shape}")
        self.declare_conditional(conditional)
        self.num_colors = self.spec.shape[0]
        self.num_outputs = 1 if self.spec.kind == "binary" else self.spec.levels

    def check_sizes(self, hidden_channels: int, head_channels: int, num_layers: int, **kernels: int) -> None:
        """The conv families' checks: positive sizes, odd kernels, widths of at least ``C`` colour channels.

        Raises:
            ConfigError: naming the ``model.<key>`` at fault.
        """
        for name, value in (("hidden_channels", hidden_channels), ("head_channels", head_channels),
                            ("num_layers", num_layers), *kernels.items()):  # fmt: skip
            positive_int(f"model.{name}", value)
        for name, k in kernels.items():
            require(k % 2 == 1, f"model.{name}", "odd", k)
        c = self.num_colors
        if hidden_channels < c or head_channels < c:
            raise ConfigError(f"model.hidden_channels and head_channels must be >= the {c} colour channels")

    # --- to implement --------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` and labels ``(B,)`` -> causal logits ``(B, K, C, H, W)``."""
        raise NotImplementedError

    def _sample_fast(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Cached sampler: noise ``(n, C, H, W)`` -> values ``(n, C, H, W)``."""
        raise NotImplementedError

    # --- values, indices and logits ------------------------------------------------------------
    @staticmethod
    def network_input(x: torch.Tensor) -> torch.Tensor:
        """Values in ``[0, 1]`` to the networks' input scale ``[-1, 1]``."""
        return 2.0 * x - 1.0

    def to_index(self, x: torch.Tensor) -> torch.Tensor:
        """Values ``k / (L - 1)`` to level indices ``k`` (int64, same shape)."""
        return torch.round(x * (self.spec.levels - 1)).long().clamp_(0, self.spec.levels - 1)

    def log_prob_from_logits(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_d log P(x_d | x_<d)`` in nats: logits ``(B, K, C, H, W)``, ``x`` ``(B, C, H, W)`` -> ``(B,)``."""
        if self.num_outputs == 1:
            lp = -F.binary_cross_entropy_with_logits(logits[:, 0], x, reduction="none")
        else:
            lp = -F.cross_entropy(logits, self.to_index(x), reduction="none")
        return lp.flatten(1).sum(1)

    def draw(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF draw of one sub-pixel: logits ``(B, K)`` and noise ``(B,)`` in ``[0, 1)`` -> values ``(B,)``.

        Levels: the smallest ``k`` with ``CDF(k) > u``, returned as ``k / (L - 1)``. Bernoulli:
        ``1`` if ``u < sigmoid(logit)`` else ``0``.
        """
        if self.num_outputs == 1:
            return (u < torch.sigmoid(logits[:, 0])).to(u.dtype)
        cdf = torch.softmax(logits, dim=1).cumsum(dim=1)
        k = (cdf <= u[:, None]).sum(dim=1).clamp_(max=self.num_outputs - 1)
        return k.to(u.dtype) / (self.spec.levels - 1)

    # --- the protocol --------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log P(x)`` (or ``log P(x | condition)``) in nats: ``(B, C, H, W)`` -> ``(B,)``.

        For a conditional model without ``condition``: ``log (1/N) sum_y P(x | y)`` over the ``N``
        classes (one forward pass per class). Without gradients, the batch is scored in chunks of at
        most ``EVAL_LOGITS`` logits (a 256-way softmax over 28x28 pixels is 0.8 GB per 1,000 images).
        """
        if self.conditional and condition is None:
            b = len(x)
            lps = [self.log_prob(x, torch.full((b,), c, device=x.device)) for c in range(self.num_classes)]
            return torch.logsumexp(torch.stack(lps), dim=0) - math.log(self.num_classes)
        y = self.labels(len(x), condition)
        chunk = max(1, EVAL_LOGITS // (self.num_outputs * self.spec.num_dims))
        if torch.is_grad_enabled() or len(x) <= chunk:
            return self.log_prob_from_logits(self.logits(x, y), x)
        parts = [
            self.log_prob_from_logits(self.logits(x[i : i + chunk], None if y is None else y[i : i + chunk]),
                                      x[i : i + chunk])
            for i in range(0, len(x), chunk)
        ]  # fmt: skip
        return torch.cat(parts)

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None, method: str | None = None) -> torch.Tensor:
        """Draw ``n`` images ``(n, C, H, W)`` in the data's value space (``k / (L - 1)`` or ``{0, 1}``).

        Args:
            n: number of images.
            condition: ``(n,)`` class labels (conditional models only; default: cycle the classes).
            method: ``"fast"`` (cached) or ``"naive"`` (a full forward pass per sub-pixel); ``None``: the
                model's ``sample_method``. Both give the same images for the same random state.

        Raises:
            ConfigError: for an unknown ``method`` or a bad ``condition`` (see :meth:`labels`).
        """
        method = method or self.sample_method
        if method not in SAMPLERS:
            raise ConfigError(f"sampling method must be one of {SAMPLERS}, got {method!r}")
        y = self.labels(n, condition)
        u = torch.rand(n, *self.spec.shape, device=self.device)
        return self._sample_fast(u, y) if method == "fast" else self._sample_naive(u, y)

    def _sample_naive(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Reference sampler: one full forward pass per sub-pixel, ``D`` passes in all."""
        x = torch.zeros_like(u)
        _, c_, h_, w_ = u.shape
        for i in range(h_):
            for j in range(w_):
                for c in range(c_):
                    x[:, c, i, j] = self.draw(self.logits(x, y)[:, :, c, i, j], u[:, c, i, j])
        return x

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str):
        """``-log P(x)`` per example in nats (``-log P(x | y)`` when conditional; the test stage then adds
        the marginal ``nll_nats`` through :meth:`log_prob`, so each batch is scored once per class)."""
        if self.conditional:
            nll = -self.log_prob(x, y)
            return {"loss": nll, "cond_nll_nats": nll, "cond_bits_per_dim": bits_per_dim(nll, self.spec)}, None
        nll = -self.log_prob(x)
        return ({"loss": nll} if stage == "train" else {"loss": nll, "nll_nats": nll}), None
