"""Models fitted by passes over the data (closed form or EM), run inside the Lightning Trainer.

One training epoch is one pass over the training data. Every batch adds its sufficient statistics
(float64 sums) to an accumulator; after the last batch of the epoch the sums are all-reduced across
processes (so ``N`` processes give the same fit as one) and the model solves for its parameters in
closed form or takes one M-step. ``trainer.max_epochs`` is therefore the number of iterations, and a
model that has converged (``tol``) sets ``trainer.should_stop``. The pass ends in the training step of
the epoch's last batch, before Lightning runs validation, so ``val/loss`` and the checkpoints always
describe the parameters of the pass just finished.

The same pass functions (``begin_pass``, ``accumulate``, ``end_pass``) fit a tensor directly, without a
Trainer: :meth:`FittedModel.fit_tensor`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from genlab.data.base import REPRESENTATION_OF
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel

LOG_2PI = math.log(2 * math.pi)


def as_features(x: torch.Tensor, num_features: int, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Flatten a batch ``(B, *shape)`` to ``(B, P)`` and check it.

    Args:
        x: a batch whose examples hold ``num_features`` values each.
        num_features: ``P``.
        dtype: dtype of the result (``None``: keep ``x``'s).

    Returns:
        ``(B, P)`` tensor; ``B = 0`` is allowed here (callers that fit refuse it).

    Raises:
        DataError: if the examples do not hold ``P`` values, or any value is NaN or infinite.
    """
    if x.dim() == 0 or (x.dim() == 1 and num_features != 1):
        raise DataError(f"expected a batch (B, ...) of examples with {num_features} values, got shape {tuple(x.shape)}")
    flat = x.reshape(len(x), math.prod(x.shape[1:]))
    if flat.shape[1] != num_features:
        raise DataError(f"expected examples with {num_features} values, got a batch of shape {tuple(x.shape)}")
    out = flat if dtype is None else flat.to(dtype)
    # a NaN or inf anywhere makes the sum non-finite; only then count them (the sum is far cheaper)
    if out.numel() and not bool(torch.isfinite(out.sum())):
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            shape = tuple(x.shape)
            raise DataError(f"input holds {bad} NaN or infinite values (batch of shape {shape}); clean the data")
    return out


def gram(a: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """``a^T a`` for ``a`` ``(N, P)``: ``(P, P)``, symmetric.

    Computes only the lower block triangle (``blocks`` row blocks, about ``(blocks + 1) / (2 blocks)``
    of the work of a full product, as BLAS ``syrk`` does) and mirrors it; small ``P`` uses one product.
    """
    p = a.shape[1]
    if p < 128:
        g = a.T @ a
        return 0.5 * (g + g.T)
    edges = [round(i * p / blocks) for i in range(blocks + 1)]
    out = a.new_empty(p, p)
    for s, e in zip(edges[:-1], edges[1:]):
        out[s:e, :e] = a[:, s:e].T @ a[:, :e]
    low = out.tril()
    return low + low.tril(-1).T


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype results are returned in: ``x``'s when floating point, else the default float dtype."""
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def check_rank(name: str, value: Any, limit: int, what: str, strict: bool = False) -> int:
    """Return ``value`` if it is a positive integer ``<= limit`` (``< limit`` when ``strict``).

    Raises:
        ConfigError: naming ``name``, ``limit`` and ``what`` the limit counts (e.g. "features").
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if value > limit or (strict and value == limit):
        bound = f"< {limit}" if strict else f"<= {limit}"
        raise ConfigError(f"{name}={value} is too large: it must be {bound}, the number of {what}")
    return value


class FittedModel(GenerativeModel):
    """Base of the classical models: fitted from streamed sufficient statistics, no gradients.

    Subclasses implement ``pass_statistics(batch) -> {name: float64 sum}`` for a batch prepared by
    ``prepare(x)`` from ``(B, P)`` float64 features, and ``update(stats) -> converged`` (closed form or
    one M-step from the pass totals); models that need data to start (k-means++) implement
    ``needs_init()`` and ``initialize(x)``.

    Class attributes:
        density: the model is a continuous Gaussian density on ``R^P``. Such a model is only an honest
            likelihood on ``dequantized`` data (a density on ``[0, 1]^D``, where ``bits_per_dim`` adds
            ``ln L``); on ``levels`` or ``binary`` data a density is not a probability mass and its
            "NLL" is unbounded below (a Gaussian can collapse onto the grid), so construction refuses
            such data with a :class:`ConfigError`.

    Buffers (in every checkpoint): ``n_iter`` (passes completed), ``converged`` (0/1), ``score`` (the
    average training log-likelihood, nats per example, of the last E-step; ``-inf`` before).

    Args:
        data_spec: the data description; ``P = spec.num_dims`` features.

    Under DDP every process sums its shard, the sums are all-reduced, and every process solves the
    same equations; models seeded from data (k-means++) start from rank 0's seeds, broadcast.

    Raises:
        ConfigError: for a density model on data that are not ``dequantized`` (construction), or a
            trainer precision that casts the float64 statistics (``*-true`` below 32 bits; at fit start).
    """

    density: ClassVar[bool] = False
    train_drop_last: ClassVar[bool] = False  # a pass sums over every training example (DDP: equal shards)

    def __init__(self, data_spec: DataSpec | dict[str, Any]) -> None:
        super().__init__(data_spec)
        self.automatic_optimization = False
        if self.density and self.spec.kind != "dequantized":
            raise ConfigError(
                f"{type(self).__name__} is a continuous Gaussian density: on {REPRESENTATION_OF[self.spec.kind]} data "
                "its log_prob "
                "is not a probability mass and bits/dim would be meaningless; set data.representation=dequantized"
            )
        self.num_features = self.spec.num_dims
        # DistributedDataParallel refuses a module without a trainable parameter; this one is never used.
        self.ddp_anchor = nn.Parameter(torch.zeros(1))
        self.register_buffer("n_iter", torch.zeros((), dtype=torch.long))
        self.register_buffer("converged", torch.zeros((), dtype=torch.long))
        self.register_buffer("score", torch.tensor(-math.inf, dtype=torch.float64))
        self._acc: dict[str, torch.Tensor] | None = None
        self._pass_log: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        # Our buffers are identical on every process (solved from all-reduced sums): spare DDP from
        # broadcasting them before every training step (a full-covariance GMM holds K P^2 numbers).
        self._ddp_params_and_buffers_to_ignore = [name for name, _ in self.named_buffers()]

    # --- what subclasses provide -------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-batch quantities that do not depend on the parameters (``x`` itself, ``x^2``, ...).

        ``fit_tensor`` computes them once per chunk and reuses them in every pass; the Trainer path
        computes them per batch. Args: ``x`` ``(B, P)`` float64. Returns a dict with at least ``"x"``.
        """
        return {"x": x}

    def pass_statistics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Float64 sums of one prepared batch under the current parameters (summed over batches and processes)."""
        raise NotImplementedError

    def update(self, stats: dict[str, torch.Tensor]) -> bool:  # pragma: no cover - abstract
        """Solve for the parameters from the pass totals; returns whether the fit has converged."""
        raise NotImplementedError

    def needs_init(self) -> bool:
        """Whether :meth:`initialize` must see data before the first pass."""
        return False

    def initialize(self, x: torch.Tensor) -> None:
        """Set starting parameters from ``x`` ``(N, P)`` float64 (e.g. k-means++ centres)."""

    # --- the fitting pass --------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether at least one pass has completed."""
        return int(self.n_iter) > 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *shape) -> (B, P)`` float64 on this model's device, checked by :func:`as_features`."""
        return as_features(x, self.num_features).to(self.n_iter.device)

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

    def _add(self, stats: dict[str, torch.Tensor]) -> None:
        if self._acc is None:
            self._acc = stats
        else:
            for k, v in stats.items():
                self._acc[k] += v

    def _world_sum(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return stats
        flat = torch.cat([v.reshape(-1) for v in stats.values()])
        flat = trainer.strategy.reduce(flat, reduce_op="sum")
        out, start = {}, 0
        for k, v in stats.items():
            out[k] = flat[start : start + v.numel()].view_as(v)
            start += v.numel()
        return out

    @torch.no_grad()
    def end_pass(self) -> bool:
        """Finish the pass: sum statistics over processes, update the parameters; returns ``converged``.

        Raises:
            DataError: if the pass saw no examples.
        """
        if self._acc is None:
            raise DataError("a fitting pass saw no training examples; the training split is empty")
        stats, self._acc = self._world_sum(self._acc), None
        converged = bool(self.update(stats))
        self.n_iter += 1
        self.converged.fill_(int(converged))
        return converged

    @torch.no_grad()
    def fit_tensor(self, x: torch.Tensor, max_iter: int = 100, batch_size: int | None = None) -> FittedModel:
        """Fit on a tensor ``(N, *shape)`` without a Trainer, with the same pass functions.

        The data are checked and converted once and :meth:`prepare` runs once per chunk, so this is the
        cheapest way to fit data that fit in memory (the Trainer redoes both for every batch).

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
        if self.needs_init():
            self.initialize(flat)
        prepared = [self.prepare(chunk) for chunk in (flat.split(batch_size) if batch_size else [flat])]
        for _ in range(max_iter):
            self.begin_pass()
            for batch in prepared:
                self._add(self.pass_statistics(batch))
            if self.end_pass():
                break
        return self

    # --- Lightning hooks ---------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """A no-op optimizer (``lr = 0``, no gradients), stepped once per batch.

        Lightning counts optimizer steps as ``global_step``, and checkpointing, logging cadence and
        resumption key on it; stepping this optimizer keeps ``global_step`` = batches seen, as for the
        deep models. It never changes a parameter.
        """
        return torch.optim.SGD([self.ddp_anchor], lr=0.0)

    def on_fit_start(self) -> None:
        lowered = sorted({str(b.dtype) for b in self.buffers() if b.is_floating_point() and b.dtype != torch.float64})
        if lowered:  # e.g. trainer.precision=bf16-true casts every buffer
            raise ConfigError(
                f"{type(self).__name__} keeps its statistics in float64 but the trainer cast them to {lowered}; "
                "use trainer.precision=32-true (or a *-mixed precision, which leaves float64 alone)"
            )

    def _init_sample(self, limit: int) -> torch.Tensor:
        """Up to ``limit`` training examples ``(N, P)`` float64 from this process's train loader."""
        chunks, n = [], 0
        for batch in self.trainer.train_dataloader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            chunks.append(self.features(x))
            n += len(x)
            if n >= limit:
                break
        if not chunks:
            raise DataError("the training split is empty: nothing to initialise the model from")
        return torch.cat(chunks)[:limit]

    def on_train_start(self) -> None:
        if not self.needs_init():
            return
        self.initialize(self._init_sample(getattr(self, "init_max_samples", 20000)))
        strategy = self.trainer.strategy
        if self.trainer.world_size > 1:  # every process starts from rank 0's initialisation
            for buf in self.buffers():
                buf.copy_(strategy.broadcast(buf.cpu(), src=0).to(buf.device))

    def on_train_epoch_start(self) -> None:
        self.begin_pass()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.accumulate(batch[0])
        self.optimizers().step()  # advances global_step only (see configure_optimizers)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._finish_pass()

    def _finish_pass(self) -> None:
        self._pass_log = {}
        converged = self.end_pass()
        for name, value in self._pass_log.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=1)
        if converged:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        if self._acc is not None:  # the loader ended before num_training_batches
            self._finish_pass()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "fit_passes": int(self.n_iter), "converged": bool(self.converged)}
