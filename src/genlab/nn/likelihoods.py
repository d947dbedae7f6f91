"""Per-pixel observation models p(x | params) for decoders, each tied to the data kinds it can score.

A decoder emits ``params`` of shape ``(B, num_params, *shape)``; a likelihood turns them into
``log_prob(params, x) -> (B,)`` in nats (summed over dimensions), a ``mean`` and a ``sample`` in the
data's own value space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genlab.data.spec import REPRESENTATION_OF, DataSpec
from genlab.errors import ConfigError

LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 3.0


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Smoothly squash ``x`` into ``(low, high)`` (a scaled ``tanh``): keeps log-variances finite
    while leaving gradients alive everywhere, unlike ``torch.clamp``."""
    mid, half = (high + low) / 2, (high - low) / 2
    return mid + half * torch.tanh((x - mid) / half)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(a))`` for ``a < 0``, stable at both ends (Maechler 2012).

    Each branch sees only inputs it is stable on, so no NaN gradient leaks through ``torch.where``.
    """
    near_zero = a > -math.log(2.0)
    lo = torch.where(near_zero, a, torch.full_like(a, -1.0))
    hi = torch.where(near_zero, torch.full_like(a, -1.0), a)
    return torch.where(near_zero, torch.log(-torch.expm1(lo)), torch.log1p(-torch.exp(hi)))


class Likelihood:
    """Base class. ``num_params`` maps per dimension; ``kinds`` the :class:`DataSpec` kinds it scores."""

    num_params = 1
    kinds: tuple[str, ...] = ()

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | params)`` in nats, summed over dimensions: params ``(B, num_params, *shape)``,
        x ``(B, *shape)`` -> ``(B,)``."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The distribution's mean in ``[0, 1]``: ``(B, *shape)``; used for reconstructions."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """One draw ``x ~ p(x | params)`` in the data's value space: ``(B, *shape)``."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Independent Bernoulli per dimension; ``params`` are logits ``(B, 1, *shape)``. Binary data only.

    ``log_prob`` is the exact log mass ``sum_d x_d log p_d + (1 - x_d) log(1 - p_d)`` in nats.
    """

    kinds = ("binary",)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = params[:, 0]
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[:, 0])

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.mean(params))


class Gaussian(Likelihood):
    """Diagonal Gaussian density on dequantized data in ``[0, 1]``.

    With ``learn_variance`` the decoder emits mean and log-variance ``(B, 2, *shape)`` (the
    log-variance soft-clamped to ``[2*LOG_SCALE_MIN, 2*LOG_SCALE_MAX]``); otherwise the mean only and a
    fixed standard deviation ``std``. ``log_prob`` is a log *density* in nats; bits/dim adds ``ln L``
    (see :mod:`genlab.metrics.likelihood`). Samples are clamped to ``[0, 1]``.
    """

    kinds = ("dequantized",)

    def __init__(self, spec: DataSpec, learn_variance: bool = True, std: float = 0.1) -> None:
        super().__init__(spec)
        if std <= 0:
            raise ConfigError(f"model.std must be positive, got {std}")
        self.learn_variance, self.std = learn_variance, std
        self.num_params = 2 if learn_variance else 1

    def _mean_logvar(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = params[:, 0]
        if self.learn_variance:
            return mu, soft_clamp(params[:, 1], 2 * LOG_SCALE_MIN, 2 * LOG_SCALE_MAX)
        return mu, torch.full_like(mu, 2 * math.log(self.std))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self._mean_logvar(params)
        lp = -0.5 * (math.log(2 * math.pi) + logvar + (x - mu) ** 2 * torch.exp(-logvar))
        return lp.flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params[:, 0].clamp(0, 1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        mu, logvar = self._mean_logvar(params)
        return (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).clamp(0, 1)


class DiscretizedLogistic(Likelihood):
    """Logistic distribution discretized to the ``L`` grid values ``k / (L - 1)`` (Salimans et al. 2017,
    PixelCNN++, Sec. 2.1, with a single component).

    ``params`` are location and log-scale ``(B, 2, *shape)``. Bin ``k`` covers
    ``[x - h, x + h]`` with ``h = 1 / (2 (L - 1))``; the end bins extend to ``-inf`` and ``+inf``, so the
    masses over the ``L`` levels sum to exactly 1. ``log_prob`` is an exact log mass in nats.
    """

    num_params = 2
    kinds = ("levels",)

    def _loc_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return params[:, 0], soft_clamp(params[:, 1], LOG_SCALE_MIN, LOG_SCALE_MAX)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        loc, log_scale = self._loc_scale(params)
        inv = torch.exp(-log_scale)
        h = 0.5 / (self.spec.levels - 1)
        a = (x + h - loc) * inv  # upper edge
        b = (x - h - loc) * inv  # lower edge
        log_cdf_a, log_cdf_b = F.logsigmoid(a), F.logsigmoid(b)
        # log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log(1 - sigmoid(b) / sigmoid(a))
        mid = log_cdf_a + _log1mexp(torch.clamp(log_cdf_b - log_cdf_a, max=-1e-12))
        lo_edge, hi_edge = x < h, x > 1 - h
        lp = torch.where(lo_edge, log_cdf_a, torch.where(hi_edge, F.logsigmoid(-b), mid))
        return lp.flatten(1).sum(1)

    def location(self, params: torch.Tensor) -> torch.Tensor:
        """The logistic's location clamped to ``[0, 1]`` (its median, not the discretized mean): ``(B, *shape)``."""
        return params[:, 0].clamp(0, 1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The exact mean ``sum_k v_k P(k)`` over the grid values ``v_k = k / (L - 1)``: ``(B, *shape)``.

        With ``P(X >= v_k) = 1 - F(e_k)`` at the bin edges ``e_k = (k - 1/2) / (L - 1)``,
        ``E[X] = sum_{k=1}^{L-1} (v_k - v_{k-1}) P(X >= v_k) = (1 / (L - 1)) sum_k sigmoid((loc - e_k) / s)``.
        """
        loc, log_scale = self._loc_scale(params)
        inv, steps = torch.exp(-log_scale), self.spec.levels - 1
        out = torch.zeros_like(loc)
        for k in range(1, steps + 1):
            out += torch.sigmoid((loc - (k - 0.5) / steps) * inv)
        return out / steps

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        loc, log_scale = self._loc_scale(params)
        u = torch.rand_like(loc).clamp(1e-6, 1 - 1e-6)
        x = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        steps = self.spec.levels - 1
        return torch.round(x.clamp(0, 1) * steps) / steps


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian, "discretized_logistic": DiscretizedLogistic}
AUTO = {"binary": "bernoulli", "dequantized": "gaussian", "levels": "discretized_logistic"}


def make_likelihood(name: str, spec: DataSpec, **kwargs) -> Likelihood:
    """Build the likelihood ``name`` (or ``"auto"``: the natural one for ``spec.kind``).

    Raises:
        ConfigError: for an unknown name, or one that cannot score this kind of data (e.g. a
            Bernoulli on 8-bit levels, a Gaussian density on data that was not dequantized).
    """
    if name == "auto":
        name = AUTO[spec.kind]
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown model.likelihood={name!r}; choose auto or one of {sorted(LIKELIHOODS)}")
    cls = LIKELIHOODS[name]
    if spec.kind not in cls.kinds:
        raise ConfigError(
            f"model.likelihood={name} needs {REPRESENTATION_OF[cls.kinds[0]]} but the data have "
            f"{REPRESENTATION_OF[spec.kind]}; set {REPRESENTATION_OF[cls.kinds[0]]} or model.likelihood=auto"
        )
    return cls(spec, **kwargs) if name == "gaussian" else cls(spec)
