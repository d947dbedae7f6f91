"""Factor analysis fitted by EM (Rubin & Thayer 1982)."""

from __future__ import annotations

from typing import Any

import torch

from genlab.checks import non_negative
from genlab.models.classical.fitting import LOG_2PI, Spec, Stats
from genlab.models.classical.gaussian import LinearGaussianModel
from genlab.models.classical.pca import mean_covariance


class FactorAnalysis(LinearGaussianModel):
    """Factor analysis: ``x = W z + alpha + eps``, ``z ~ N(0, I_K)``, ``eps ~ N(0, Psi)``, ``Psi`` diagonal.

    Passes (one per training epoch):

    1. moments: ``alpha`` is the sample mean (its ML estimate, fixed from then on) and ``S`` the ML
       covariance (denominator ``n``), kept; the starting point is the PPCA solution of ``S``
       (``W = U_K (Lambda_K - sigma^2)^{1/2}``) with ``Psi = diag(S - W W^T)``.
    2. onwards, one EM iteration each (Rubin & Thayer 1982; in this form, Ghahramani & Hinton 1996). The
       E-step under the current ``(W, Psi)``, with ``d = x - alpha``, ``M = I + W^T Psi^{-1} W`` and
       ``beta = M^{-1} W^T Psi^{-1}``: ``E[z|x] = beta d``, ``E[z z^T|x] = M^{-1} + E[z|x] E[z|x]^T``. Its sums
       over the data are functions of ``S`` alone, ``A = sum d E[z|x]^T / n = S beta^T`` and
       ``B = sum E[z z^T|x] / n = M^{-1} + beta S beta^T``, as is the average log-likelihood
       ``-(P ln 2 pi + log |C| + tr(C^{-1} S)) / 2``, so the pass computes them from the kept ``S`` in
       ``O(P^2 K)``, without the data (the data pass only counts the examples). The M-step:
       ``W = A B^{-1}``, ``Psi = diag(S) - rowsum(W * A)``, floored at ``min_variance``.

    Convergence: the pass's average log-likelihood (of the parameters it started from) rose by less
    than ``tol`` nats per example over the previous pass's; EM never lowers it (up to the floor).

    Singular data: a feature the factors explain exactly (or a constant one) drives its ``Psi_j`` to 0
    (a Heywood case); the floor ``min_variance`` keeps ``Psi`` positive and ``log_prob`` finite.

    Args:
        data_spec: the data description; must be ``dequantized`` (see ``FittedModel.density``).
        latent_dim: ``K`` factors, ``1 <= K < P`` and ``K < n``.
        tol: convergence tolerance in nats per example (``>= 0``; 0 runs all ``max_epochs``).
        min_variance: floor of every ``Psi_j`` (``> 0``, squared data units).

    Buffers: ``mean`` (``alpha``), ``loadings`` (``W``), ``noise_variance`` (``Psi`` ``(P,)``),
    ``sample_covariance`` (``S`` ``(P, P)``; NaN before the moment pass, and in a checkpoint written before
    it was kept, whose next pass computes it again), float64.

    Raises:
        ConfigError: for data that are not dequantized, ``K`` outside ``[1, P)``, ``K >= n``, a negative
            ``tol`` or a non-positive ``min_variance``.
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    def __init__(self, data_spec: Spec, latent_dim: int = 16, tol: float = 1e-4, min_variance: float = 1e-6) -> None:
        super().__init__(data_spec, latent_dim, min_variance)
        self.tol = non_negative("model.tol", tol)
        self.save_model_hparams()
        p, f64 = self.num_features, torch.float64
        self.register_buffer("noise_variance", torch.ones(p, dtype=f64))
        self.register_buffer("sample_covariance", torch.full((p, p), torch.nan, dtype=f64))

    # --- EM ----------------------------------------------------------------------------------
    def pass_statistics(self, batch: Stats) -> Stats:
        if self.sample_covariance[0, 0].isnan():  # the moment pass
            return super().pass_statistics(batch)
        return {"n": batch["x"].new_tensor(float(len(batch["x"])))}

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """The moment pass (first) or one EM iteration on ``S``; converged when the log-likelihood gain fell
        below ``tol``."""
        if "outer" in stats:  # the moment pass; again for a checkpoint that did not keep S, where W and Psi carry on
            cov = mean_covariance(stats, ddof=0)[1] if self.fitted else self.ppca_solution(stats)[0]
            self.sample_covariance.copy_(cov)
            if not self.fitted:  # the PPCA start, Psi = diag(S - W W^T)
                self.noise_variance.copy_((cov.diagonal() - self.loadings.pow(2).sum(1)).clamp(min=self.min_variance))
                return False, {}
        s, f = self.sample_covariance, self.factors()
        s_scaled = s @ f.scaled  # S Psi^{-1} W: (P, K), the O(P^2 K) product
        g = f.scaled.T @ s_scaled  # W^T Psi^{-1} S Psi^{-1} W: (K, K)
        m_inv = f.posterior_cov()
        a = s_scaled @ m_inv  # S beta^T
        w = torch.linalg.solve(m_inv + m_inv @ g @ m_inv, a.T).T  # A B^{-1}, B symmetric
        # tr(C^{-1} S) by Woodbury: tr(Psi^{-1} S) - tr(M^{-1} W^T Psi^{-1} S Psi^{-1} W)
        quad = (s.diagonal() / f.noise).sum() - (m_inv * g).sum()
        score = -0.5 * (self.num_features * LOG_2PI + f.logdet + quad)
        gain = float(score - self.train_log_lik)
        self.loadings.copy_(w)
        self.noise_variance.copy_((s.diagonal() - (w * a).sum(1)).clamp(min=self.min_variance))
        self.train_log_lik.copy_(score)
        return gain < self.tol, {"nll_nats": -float(score)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # a checkpoint from before S was kept: NaN, so the next pass computes it
        checkpoint["state_dict"].setdefault("sample_covariance", torch.full_like(self.sample_covariance, torch.nan))
