"""Models fitted by passes over the data (closed form or EM), without gradients.

A pass adds the sufficient statistics (float64 sums) of every training batch
(:meth:`FittedModel.accumulate`), sums them over processes (``end_pass(reduce)``, so ``N`` processes
give the fit of one) and solves for the parameters in closed form or takes one M-step. Two callers
run the same pass functions: :func:`genlab.passes.fit_by_passes` (the CLI: Lightning Fabric, one pass
per epoch, validation, checkpoints) and :meth:`FittedModel.fit_tensor` (a tensor in memory).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from genlab.data.spec import REPRESENTATION_OF, DataSpec
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel, Scores

LOG_2PI = math.log(2 * math.pi)
Spec = DataSpec | dict[str, Any]  # what every model's ``data_spec`` argument takes
Stats = dict[str, torch.Tensor]  # float64 sums of one batch or one pass


def as_features(x: torch.Tensor, num_features: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Flatten a batch ``(B, *shape)`` to ``(B, P)`` and check it.

    Args:
        x: a batch whose examples hold ``num_features`` values each.
        num_features: ``P``.
        dtype: dtype of the result.

    Returns:
        ``(B, P)`` tensor; ``B = 0`` is allowed here (callers that fit refuse it).

    Raises:
        DataError: if the examples do not hold ``P`` values, or any value is NaN or infinite.
    """
    if x.dim() == 0 or (x.dim() == 1 and num_features != 1):
        raise DataError(f"expected a batch (B, ...) of examples with {num_features} values, got shape {tuple(x.shape)}")
    flat = x.reshape(len(x), math.prod(x.shape[1:])).to(dtype)
    if flat.shape[1] != num_features:
        raise DataError(f"expected examples with {num_features} values, got a batch of shape {tuple(x.shape)}")
    # a NaN or inf anywhere makes the sum non-finite; only then count them (the sum is far cheaper; a sum of
    # finite values can also overflow, hence the count)
    if not bool(torch.isfinite(flat.sum())) and (bad := int((~torch.isfinite(flat)).sum())):
        raise DataError(f"input holds {bad} NaN or infinite values (batch of shape {tuple(x.shape)}); clean the data")
    return flat


def gram(a: torch.Tensor) -> torch.Tensor:
    """``a^T a`` for ``a`` ``(N, P)``: ``(P, P)``, exactly symmetric.

    On the CPU for ``P >= 128``, numpy's ``a^T @ a``, which BLAS computes with ``syrk`` (one triangle:
    half the work, 1.6 times faster than torch's ``mm`` at ``8000 x 784``); else one product, symmetrised.
    """
    if a.device.type == "cpu" and a.shape[1] >= 128:
        n = a.detach().numpy()
        return torch.from_numpy(n.T @ n)
    g = a.T @ a
    return 0.5 * (g + g.T)


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype results are returned in: ``x``'s when floating point, else the default float dtype."""
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


class FittedModel(GenerativeModel):
    """Base of the classical models fitted from streamed sufficient statistics (declare ``"fit"``).

    Subclasses implement ``pass_statistics(batch) -> Stats`` (float64 sums) for a batch prepared by
    ``prepare(x)`` from ``(B, P)`` float64 features, and ``update(stats) -> (converged, report)``: the
    closed form or one M-step from the pass totals, and ``{name: float}`` logged as ``train/<name>``.
    Models seeded from data (k-means++) return from :meth:`init_examples` how many training examples
    :meth:`initialize` wants before the first pass.

    Class attributes:
        density: the model is a continuous Gaussian density on ``R^P``. Such a model is only an honest
            likelihood on ``dequantized`` data (a density on ``[0, 1]^D``, where ``bits_per_dim`` adds
            ``ln L``); on ``levels`` or ``binary`` data a density is not a probability mass and its
            "NLL" is unbounded below (a Gaussian can collapse onto the grid), so construction refuses
            such data with a :class:`ConfigError`. Densities score ``loss = nll_nats = -log_prob(x)``.
        seeded: the model is seeded from up to ``init_max_samples`` training examples (its attribute) before
            the first pass; it has an ``initialized`` buffer (0/1), which :meth:`initialize` sets.

    Buffers (in every checkpoint): ``n_iter`` (passes completed), ``converged`` (0/1), ``train_log_lik``
    (the average training log-likelihood, nats per example, of the last E-step; ``-inf`` before; the
    buffer was called ``score`` before ``score()`` became the scoring method, and old checkpoints load).

    Under DDP every process sums its shard, the sums are all-reduced, and every process solves the same
    equations; models seeded from data start from rank 0's initialisation, broadcast.

    Args:
        data_spec: the data description; ``P = spec.num_dims`` features.

    Raises:
        ConfigError: for a density model on data that are not ``dequantized``.
    """

    density: ClassVar[bool] = False
    seeded: ClassVar[bool] = False

    def __init__(self, data_spec: Spec) -> None:
        super().__init__(data_spec)
        self.refuse_tokens()
        if self.density and self.spec.kind != "dequantized":
            raise ConfigError(
                f"{type(self).__name__} is a continuous Gaussian density: on {REPRESENTATION_OF[self.spec.kind]} data "
                "its log_prob "
                "is not a probability mass and bits/dim would be meaningless; set data.representation=dequantized"
            )
        self.num_features = self.spec.num_dims
        self.register_buffer("n_iter", torch.zeros((), dtype=torch.long))
        self.register_buffer("converged", torch.zeros((), dtype=torch.long))
        self.register_buffer("train_log_lik", torch.tensor(-math.inf, dtype=torch.float64))
        if self.seeded:
            self.register_buffer("initialized", torch.zeros((), dtype=torch.long))
        self._acc: Stats | None = None

    # --- what subclasses provide -------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> Stats:
        """Per-batch quantities that do not depend on the parameters (``x`` itself, ``x^2``, ...).

        ``fit_tensor`` computes them once per chunk and reuses them in every pass. Args: ``x`` ``(B, P)``
        float64. Returns a dict with at least ``"x"``.
        """
        return {"x": x}

    def pass_statistics(self, batch: Stats) -> Stats:  # pragma: no cover - abstract
        """Float64 sums of one prepared batch under the current parameters (summed over batches and processes)."""
        raise NotImplementedError

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:  # pragma: no cover - abstract
        """Solve for the parameters from the pass totals; returns ``(converged, {name: value to log})``."""
        raise NotImplementedError

    def init_examples(self) -> int:
        """How many training examples ``(N, P)`` :meth:`initialize` wants before the next pass: a seeded
        model's ``init_max_samples`` until it is initialised, else 0."""
        return self.init_max_samples if self.seeded and not self.initialized else 0

    def initialize(self, x: torch.Tensor) -> None:
        """Set starting parameters from ``x`` ``(N, P)`` float64 (e.g. k-means++ centres)."""

    # --- the fitting pass --------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether at least one pass has completed."""
        return int(self.n_iter) > 0

    def features(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """``(B, *shape) -> (B, size)`` float64 on this model's device (``size``: ``P``); see :func:`as_features`."""
        return as_features(x, size or self.num_features).to(self.n_iter.device)

    def begin_pass(self) -> None:
        """Start a pass: forget the statistics of any unfinished one."""
        self._acc = None

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor) -> None:
        """Add the statistics of one training batch ``(B, *shape)`` to the current pass.

        Raises:
            DataError: for an empty batch, a wrong shape, or NaN/inf values.
        """
        flat = self.features(x)
        if len(flat) == 0:
            raise DataError("empty training batch: a fitting pass needs examples (check the data split sizes)")
        self._add(self.pass_statistics(self.prepare(flat)))

    def _add(self, stats: Stats) -> None:
        self._acc = stats if self._acc is None else {k: v + stats[k] for k, v in self._acc.items()}

    @torch.no_grad()
    def end_pass(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Finish the pass: sum the statistics over processes, update the parameters.

        Args:
            reduce: sums a float64 tensor over processes (``None``: one process).

        Returns:
            ``{name: value}`` the pass reports (logged as ``train/<name>``); ``converged`` says whether to stop.

        Raises:
            DataError: if the pass saw no examples.
        """
        if self._acc is None:
            raise DataError("a fitting pass saw no training examples; the training split is empty")
        stats, self._acc = self._acc, None
        if reduce is not None:  # one collective for every sum
            flat = reduce(torch.cat([v.reshape(-1) for v in stats.values()])).split([v.numel() for v in stats.values()])
            stats = {k: part.view_as(v) for (k, v), part in zip(stats.items(), flat)}
        converged, report = self.update(stats)
        self.n_iter.add_(1)
        self.converged.fill_(int(converged))
        return report

    @torch.no_grad()
    def fit_tensor(self, x: torch.Tensor, max_iter: int = 100, batch_size: int | None = None) -> FittedModel:
        """Fit on a tensor ``(N, *shape)`` in memory, with the pass functions of the CLI's loop.

        The data are checked and converted once and :meth:`prepare` runs once per chunk, so this is the
        cheapest way to fit data that fit in memory; a model seeded from data is seeded from all of ``x``.

        Args:
            x: all training examples.
            max_iter: most passes (closed-form models stop after one).
            batch_size: examples per accumulated batch (``None``: the whole tensor at once).

        Returns:
            ``self``.

        Raises:
            DataError: for empty, malformed or non-finite data.
        """
        flat = self.features(x)
        if len(flat) == 0:
            raise DataError("cannot fit on an empty tensor")
        if self.init_examples():
            self.initialize(flat)
        prepared = [self.prepare(chunk) for chunk in (flat.split(batch_size) if batch_size else [flat])]
        for _ in range(max_iter):
            self.begin_pass()
            for batch in prepared:
                self._add(self.pass_statistics(batch))
            self.end_pass()
            if self.converged:
                break
        return self

    # --- scoring and checkpoints -------------------------------------------------------------
    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str) -> Scores:
        """A density's scores: ``loss = nll_nats = -log_prob(x)`` ``(B,)`` nats (PCA and k-means override)."""
        nll = -self.log_prob(x)
        return {"loss": nll, "nll_nats": nll}, None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]  # written by the Trainer path: an unused DDP parameter, the old buffer name
        state.pop("ddp_anchor", None)
        if "score" in state:
            state["train_log_lik"] = state.pop("score")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fit_passes": int(self.n_iter), "converged": bool(self.converged)}
