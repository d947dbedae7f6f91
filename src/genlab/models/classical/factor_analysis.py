"""Factor analysis fitted by EM (Rubin & Thayer 1982)."""

from __future__ import annotations

import torch

from genlab.checks import non_negative
from genlab.models.classical.fitting import LOG_2PI, Spec, Stats
from genlab.models.classical.gaussian import LinearGaussianModel
from genlab.models.classical.pca import moment_statistics


class FactorAnalysis(LinearGaussianModel):
    """Factor analysis: ``x = W z + alpha + eps``, ``z ~ N(0, I_K)``, ``eps ~ N(0, Psi)``, ``Psi`` diagonal.

    Passes (one per training epoch):

    1. moments: ``alpha`` is the sample mean (its ML estimate, fixed from then on); the starting point
       is the PPCA solution of the ML covariance ``S`` (``W = U_K (Lambda_K - sigma^2)^{1/2}``) with
       ``Psi = diag(S - W W^T)``.
    2. onwards, one EM iteration each (Rubin & Thayer 1982; in this form, Ghahramani & Hinton 1996). The
       E-step under the current ``(W, Psi)``, with ``d = x - alpha`` and ``M = I + W^T Psi^{-1} W``:
       ``E[z|x] = M^{-1} W^T Psi^{-1} d``, ``E[z z^T|x] = M^{-1} + E[z|x] E[z|x]^T``; the pass sums
       ``A = sum d E[z|x]^T``, ``B = sum E[z z^T|x]``, ``c = sum d * d`` and ``log p(x)``. The M-step:
       ``W = A B^{-1}``, ``Psi = (c - rowsum(W * A)) / n``, floored at ``min_variance``.

    Convergence: the pass's average log-likelihood (of the parameters it started from) rose by less
    than ``tol`` nats per example over the previous pass's; EM never lowers it (up to the floor).

    Singular data: a feature the factors explain exactly (or a constant one) drives its ``Psi_j`` to 0
    (a Heywood case); the floor ``min_variance`` keeps ``Psi`` positive and ``log_prob`` finite.

    Args:
        data_spec: the data description; must be ``dequantized`` (see ``FittedModel.density``).
        latent_dim: ``K`` factors, ``1 <= K < P`` and ``K < n``.
        tol: convergence tolerance in nats per example (``>= 0``; 0 runs all ``max_epochs``).
        min_variance: floor of every ``Psi_j`` (``> 0``, squared data units).

    Buffers: ``mean`` (``alpha``), ``loadings`` (``W``), ``noise_variance`` (``Psi`` ``(P,)``), float64.

    Raises:
        ConfigError: for data that are not dequantized, ``K`` outside ``[1, P)``, ``K >= n``, a negative
            ``tol`` or a non-positive ``min_variance``.
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    def __init__(self, data_spec: Spec, latent_dim: int = 16, tol: float = 1e-4, min_variance: float = 1e-6) -> None:
        super().__init__(data_spec, latent_dim, min_variance)
        self.tol = non_negative("model.tol", tol)
        self.save_model_hparams()
        self.register_buffer("noise_variance", torch.ones(self.num_features, dtype=torch.float64))

    def noise_diag(self) -> torch.Tensor:
        return self.noise_variance

    def num_parameters(self) -> int:
        """Free parameters: ``P K - K (K - 1) / 2`` for ``W`` (up to rotation), ``P`` for ``Psi`` and ``alpha`` each."""
        p, k = self.num_features, self.latent_dim
        return p * k - k * (k - 1) // 2 + 2 * p

    # --- EM ----------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> Stats:
        return {"x": x, "sum": x.sum(0), "sum_sq": x.pow(2).sum(0)}

    def pass_statistics(self, batch: Stats) -> Stats:
        x = batch["x"]
        if not self.fitted:
            return moment_statistics(x)
        n, mu, f = len(x), self.mean, self.factors()
        a = x @ f.scaled - mu @ f.scaled  # W^T Psi^{-1} d: (B, K)
        v = torch.linalg.solve_triangular(f.chol, a.T, upper=False)  # L^{-1} a^T, M = L L^T
        ez = torch.linalg.solve_triangular(f.chol.T, v, upper=True).T  # E[z|x] = M^{-1} a^T: (B, K)
        d2 = batch["sum_sq"] - 2 * mu * batch["sum"] + n * mu.pow(2)  # sum_n (x_n - mu)^2 per feature
        quad = (d2 / f.noise).sum() - v.pow(2).sum()  # sum_n d_n^T C^{-1} d_n (Woodbury)
        return {
            "n": x.new_tensor(float(n)),
            "d_ez": (ez.T.contiguous() @ x).T - torch.outer(mu, ez.sum(0)),
            "ez_ez": ez.T @ ez,
            "d2": d2,
            "log_lik": -0.5 * (n * (self.num_features * LOG_2PI + f.logdet) + quad),
        }

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """The moment pass (first) or one M-step; converged when the log-likelihood gain fell below ``tol``."""
        if not self.fitted:
            cov, _, _ = self.ppca_solution(stats)
            self.noise_variance.copy_((torch.diagonal(cov) - self.loadings.pow(2).sum(1)).clamp(min=self.min_variance))
            return False, {}
        n = stats["n"]
        a = stats["d_ez"] / n
        b = self.factors().posterior_cov() + stats["ez_ez"] / n
        w = torch.linalg.solve(b, a.T).T  # A B^{-1}, B symmetric
        psi = (stats["d2"] / n - (w * a).sum(1)).clamp(min=self.min_variance)
        score = stats["log_lik"] / n
        gain = float(score - self.train_log_lik)
        self.loadings.copy_(w)
        self.noise_variance.copy_(psi)
        self.train_log_lik.copy_(score)
        return gain < self.tol, {"nll_nats": -float(score)}
