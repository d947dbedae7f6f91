"""Probabilistic PCA, closed-form maximum likelihood (Tipping & Bishop 1999)."""

from __future__ import annotations

import torch

from genlab.models.classical.fitting import LOG_2PI, Spec, Stats
from genlab.models.classical.gaussian import LinearGaussianModel


class PPCA(LinearGaussianModel):
    """Probabilistic PCA: ``x = W z + mu + eps``, ``z ~ N(0, I_K)``, ``eps ~ N(0, sigma^2 I_P)``.

    Fitted in one streamed pass (the moments of :class:`~genlab.models.classical.pca.PCA`), then the
    maximum-likelihood solution of Tipping & Bishop (1999, Eqs. 7-8) from the eigenpairs
    ``(lambda_j, u_j)`` of the ML covariance ``S`` (denominator ``n``):

    * ``sigma^2 = (1 / (P - K)) sum_{j > K} lambda_j``, the variance lost per discarded direction;
    * ``W = U_K (Lambda_K - sigma^2 I)^{1/2}`` (the rotation ``R = I``).

    At this optimum the average training log-likelihood is exactly
    ``-(P ln 2 pi + sum_{j <= K} ln lambda_j + (P - K) ln sigma^2 + P) / 2`` nats. scikit-learn's
    ``PCA.score`` uses the same model with the unbiased covariance (``n - 1``); the two differ by
    ``O(P / n^2)`` nats per example.

    Singular data: when the discarded eigenvalues are (near) zero, e.g. constant pixels with ``K`` close
    to the rank of ``S``, ``sigma^2`` is floored at ``min_variance`` so the density stays finite.

    Buffers: ``mean``, ``loadings``, ``noise_variance`` (``sigma^2``, a scalar), ``explained_variance``
    (the top ``K`` eigenvalues of ``S``), float64.

    Args:
        data_spec: the data description; must be ``dequantized`` (see ``FittedModel.density``).
        latent_dim: ``K``, ``1 <= K < P`` and ``K < n``.
        min_variance: floor of ``sigma^2`` (``> 0``, in squared data units).

    Raises:
        ConfigError: for data that are not dequantized, ``K`` outside ``[1, P)``, ``K >= n`` (end of
            the pass) or a non-positive ``min_variance``.
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    def __init__(self, data_spec: Spec, latent_dim: int = 16, min_variance: float = 1e-6) -> None:
        super().__init__(data_spec, latent_dim, min_variance)
        self.save_model_hparams()
        self.register_buffer("noise_variance", torch.ones((), dtype=torch.float64))
        self.register_buffer("explained_variance", torch.zeros(latent_dim, dtype=torch.float64))

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """Closed-form ML solution from the pass totals; always converged."""
        cov, values, sigma2 = self.ppca_solution(stats)
        p, k = self.num_features, self.latent_dim
        self.noise_variance.copy_(sigma2)
        self.explained_variance.copy_(values)
        # C shares its eigenvectors with S: eigenvalues max(lambda_j, sigma^2) for j <= K, sigma^2 beyond,
        # so the average training log-likelihood is exact even when sigma^2 was floored.
        c, rest = values.clamp(min=sigma2), torch.diagonal(cov).sum() - values.sum()
        quad = (values / c).sum() + rest / sigma2  # tr(C^{-1} S)
        score = -0.5 * (p * LOG_2PI + c.log().sum() + (p - k) * sigma2.log() + quad)
        self.train_log_lik.copy_(score)
        return True, {"nll_nats": -float(score)}
