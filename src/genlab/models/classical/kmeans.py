"""K-means by Lloyd's algorithm (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007)."""

from __future__ import annotations

import math
from typing import Any

import torch

from genlab.checks import non_negative, positive_int
from genlab.errors import ConfigError
from genlab.models.base import Scores
from genlab.models.classical.fitting import FittedModel, Spec, Stats, result_dtype


def squared_distances(x: torch.Tensor, centers: torch.Tensor, sq_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``||x_i - c_k||^2``: ``(N, P), (K, P) -> (N, K)``, clamped at 0 against rounding.

    ``sq_norm`` ``(N,)``: ``||x_i||^2`` if already known.
    """
    sq_norm = x.pow(2).sum(1) if sq_norm is None else sq_norm
    return (sq_norm[:, None] - 2 * x @ centers.T + centers.pow(2).sum(1)).clamp(min=0)


def kmeans_plusplus(x: torch.Tensor, k: int, seed: int = 0, n_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, Sec. 2.2; the greedy variant draws
    ``n_trials`` candidates per step and keeps the one that lowers the potential most).

    The first centre is a uniform draw; each next one is drawn with probability proportional to the
    squared distance to the nearest centre chosen so far (``D^2`` sampling).

    Args:
        x: ``(N, P)`` points (any float dtype, any device).
        k: number of centres, ``1 <= k <= N``.
        seed: seed of a CPU generator, so the result does not depend on the device.
        n_trials: candidates per step (default ``2 + floor(ln k)``).

    Returns:
        ``(k, P)`` centres, rows of ``x``.

    Raises:
        ConfigError: if ``k > N`` or ``x`` has fewer than ``k`` distinct points.
    """
    n = len(x)
    if k > n:
        raise ConfigError(f"cannot seed {k} clusters from {n} examples: choose at most {n}")
    trials = n_trials or 2 + int(math.log(k))
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(n, (1,), generator=g))]  # indices of the centres
    sq_norm = x.pow(2).sum(1)
    closest = squared_distances(x, x[chosen], sq_norm)[:, 0]
    for _ in range(1, k):
        cum = closest.cumsum(0)
        if not cum[-1] > 0:
            raise ConfigError(f"the data hold fewer than {k} distinct examples: choose fewer clusters")
        draws = torch.rand(trials, generator=g, dtype=x.dtype).to(x.device) * cum[-1]
        cand = torch.searchsorted(cum, draws).clamp(max=n - 1)
        pot = torch.minimum(closest[None, :], squared_distances(x, x[cand], sq_norm).T)  # (trials, N)
        best = int(pot.sum(1).argmin())
        chosen.append(int(cand[best]))
        closest = pot[best]
    return x[chosen]


class KMeans(FittedModel):
    """K-means clustering by Lloyd's algorithm, one pass per iteration; the hard-assignment limit of a
    Gaussian mixture with shared spherical covariance ``sigma^2 -> 0``.

    Seeding: greedy k-means++ on up to ``init_max_samples`` training examples (rank 0's under DDP,
    broadcast). Each pass assigns every example to its nearest centre under the current centres and
    sums ``(count, sum x)`` per cluster plus the inertia; the update moves each centre to the mean of
    its members (an empty cluster keeps its centre). Converged when the total squared centre shift is
    ``<= tol * mean_j Var(x_j)`` (scikit-learn's convention, so ``tol`` is relative to the data scale).

    No likelihood (``nll_kind = "none"``). The cluster means are the prototypes:

    * ``encode(x)``: one-hot cluster assignment ``(B, K)``; :meth:`assign` gives the indices ``(B,)``.
    * ``reconstruct(x)``: the prototype (centre) of each example's cluster.
    * ``sample(n)``: prototypes drawn with the cluster sizes of the last pass as weights.
    * ``val/loss``: squared distance to the nearest centre (per-example inertia), summed over features.

    Buffers: ``centers`` ``(K, P)`` float64, ``cluster_sizes`` ``(K,)``, ``inertia`` (training inertia of the
    centres the last pass started from), ``initialized``.

    Args:
        data_spec: the data description; any kind.
        num_clusters: ``K >= 1`` (at most the number of distinct training examples).
        tol: relative tolerance on the centre shift (``>= 0``).
        seed: seed of the k-means++ draws.
        init_max_samples: most examples used for seeding.

    Raises:
        ConfigError: for a non-positive ``num_clusters``/``init_max_samples``, a negative ``tol``, or more
            clusters than distinct examples.
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    nll_kind = "none"
    seeded = True
    capabilities = frozenset({"sample", "encode", "reconstruct", "assign", "fit"})

    def __init__(
        self, data_spec: Spec, num_clusters: int = 10, tol: float = 1e-4, seed: int = 0, init_max_samples: int = 20000
    ) -> None:
        super().__init__(data_spec)
        self.num_clusters = positive_int("model.num_clusters", num_clusters)
        self.init_max_samples = positive_int("model.init_max_samples", init_max_samples)
        self.tol, self.seed = non_negative("model.tol", tol), int(seed)
        self.save_model_hparams()
        self.register_buffer("centers", torch.zeros(num_clusters, self.num_features, dtype=torch.float64))
        self.register_buffer("cluster_sizes", torch.ones(num_clusters, dtype=torch.float64))
        self.register_buffer("inertia", torch.tensor(torch.nan, dtype=torch.float64))

    # --- fitting -----------------------------------------------------------------------------
    def initialize(self, x: torch.Tensor) -> None:
        """k-means++ centres from ``x`` ``(N, P)``."""
        self.centers.copy_(kmeans_plusplus(x, self.num_clusters, self.seed))
        self.initialized.fill_(1)

    def prepare(self, x: torch.Tensor) -> Stats:
        x2 = x.pow(2)
        return {"x": x, "sq_norm": x2.sum(1), "sum_x": x.sum(0), "sum_x2": x2.sum(0)}

    def pass_statistics(self, batch: Stats) -> Stats:
        x, c = batch["x"], self.centers
        # ||x - c||^2 less the per-example ||x||^2, which does not change the nearest centre
        best, labels = torch.addmm(c.pow(2).sum(1), x, c.T, alpha=-2).min(1)
        counts = torch.bincount(labels, minlength=self.num_clusters).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        inertia = (best + batch["sq_norm"]).clamp_(min=0).sum()
        return {"counts": counts, "sums": sums, "inertia": inertia, "sum_x": batch["sum_x"], "sum_x2": batch["sum_x2"]}

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """Move centres to their members' means; converged when the squared shift is small."""
        counts, n = stats["counts"], stats["counts"].sum()  # every example has a cluster
        new = torch.where(counts[:, None] > 0, stats["sums"] / counts[:, None], self.centers)
        shift = torch.nn.functional.mse_loss(new, self.centers, reduction="sum")  # sum of squared differences
        variance = (stats["sum_x2"] / n - (stats["sum_x"] / n).pow(2)).clamp(min=0).mean()
        self.centers.copy_(new)
        self.cluster_sizes.copy_(counts)
        self.inertia.copy_(stats["inertia"])
        return bool(shift <= self.tol * variance), {"inertia_per_example": float(stats["inertia"] / n)}

    # --- the protocol ------------------------------------------------------------------------
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centre: ``(B, *shape) -> (B,)`` int64."""
        return squared_distances(self.features(x), self.centers).argmin(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot cluster assignment: ``(B, K)`` in ``x``'s dtype."""
        return torch.nn.functional.one_hot(self.assign(x), self.num_clusters).to(result_dtype(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The centre of each example's cluster: like ``x``."""
        return self.centers[self.assign(x)].to(result_dtype(x)).view_as(x)

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` prototypes drawn with probability proportional to cluster size: ``(n, *shape)`` float32."""
        idx = torch.multinomial(self.cluster_sizes.clamp(min=0) + 1e-12, n, replacement=True)
        return self.centers[idx].to(torch.get_default_dtype()).view(n, *self.spec.shape)

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str) -> Scores:
        """``loss``: the squared distance to the nearest centre (per-example inertia), ``(B,)``."""
        return {"loss": squared_distances(self.features(x), self.centers).min(1).values.to(result_dtype(x))}, None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_clusters": self.num_clusters}
