"""Linear-Gaussian latent models ``x = W z + mu + eps``: the part PPCA and factor analysis share.

The marginal ``p(x) = N(mu, C)`` has a low-rank-plus-diagonal covariance ``C = W W^T + Psi``. It is
never inverted densely: with ``M = I_K + W^T Psi^{-1} W`` (``K x K``),

* ``C^{-1} = Psi^{-1} - Psi^{-1} W M^{-1} W^T Psi^{-1}`` (Woodbury identity), and
* ``log |C| = log |Psi| + log |M|`` (matrix determinant lemma),

so a batch costs ``O(B P K)``. The posterior is ``p(z | x) = N(M^{-1} W^T Psi^{-1} (x - mu), M^{-1})``
(Tipping & Bishop 1999 for ``Psi = sigma^2 I``; Rubin & Thayer 1982 for a diagonal ``Psi``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from genlab.checks import positive
from genlab.models.classical.fitting import LOG_2PI, Spec, Stats, result_dtype
from genlab.models.classical.pca import LinearLatentModel, check_examples, eigen_descending, mean_covariance


class LowRankFactors:
    """What every density evaluation needs from ``(W, Psi)``, computed once per call.

    Attributes:
        noise: ``(P,)`` the diagonal of ``Psi``.
        scaled: ``(P, K)`` ``Psi^{-1} W``.
        chol: ``(K, K)`` lower Cholesky factor of ``M = I + W^T Psi^{-1} W``.
        logdet: ``log |C|`` (scalar).
    """

    def __init__(self, loadings: torch.Tensor, noise: torch.Tensor) -> None:
        self.noise = noise
        self.scaled = loadings / noise[:, None]
        m = torch.eye(loadings.shape[1], dtype=loadings.dtype, device=loadings.device) + loadings.T @ self.scaled
        self.chol = torch.linalg.cholesky(m)
        self.logdet = noise.log().sum() + 2 * self.chol.diagonal().log().sum()

    def log_prob(self, d: torch.Tensor) -> torch.Tensor:
        """``log N(d; 0, C)`` for centred rows ``d`` ``(B, P)``: ``(B,)`` nats."""
        v = torch.linalg.solve_triangular(self.chol, (d @ self.scaled).T, upper=False)
        quad = (d.pow(2) / self.noise).sum(1) - v.pow(2).sum(0)
        return -0.5 * (d.shape[1] * LOG_2PI + self.logdet + quad)

    def posterior_cov(self) -> torch.Tensor:
        """``Cov[z | x] = M^{-1}``: ``(K, K)``."""
        return torch.cholesky_inverse(self.chol)

    def posterior_mean(self, d: torch.Tensor) -> torch.Tensor:
        """``E[z | x] = M^{-1} W^T Psi^{-1} d``: ``(B, P) -> (B, K)``."""
        return torch.cholesky_solve((d @ self.scaled).T, self.chol).T


class LinearGaussianModel(LinearLatentModel):
    """Base of ``ppca`` and ``factor_analysis``: ``z ~ N(0, I_K)``, ``x | z ~ N(W z + mu, Psi)``.

    Subclasses register ``noise_variance``, the variances on the diagonal of ``Psi`` (PPCA: one ``sigma^2``,
    a scalar; factor analysis: ``(P,)``). The protocol:

    * ``log_prob(x)``: exact ``log N(x; mu, W W^T + Psi)``, ``(B,)`` nats (a density on ``R^P``; on
      dequantized data in ``[0, 1]^D`` it bounds the discrete NLL, see ``genlab.metrics.likelihood``).
    * ``encode(x)``: posterior mean ``E[z | x]`` ``(B, K)``; :meth:`posterior` also gives ``Cov[z | x]``.
    * ``decode(z)``: ``W z + mu``, the mean of ``p(x | z)``; ``component_vectors()``: ``W^T`` ``(K, P)``.
    * ``reconstruct(x)``: ``W E[z | x] + mu``, the mean of ``p(x | z = E[z | x])``.
    * ``sample(n)``: ancestral draws ``(n, *shape)``; a Gaussian is unbounded, so values can leave
      ``[0, 1]`` (image grids clamp them).
    * ``val/loss`` = ``val/nll_nats``: validation NLL in nats per example.

    Buffers: ``mean`` ``(P,)`` and ``loadings`` ``W`` ``(P, K)``, float64 (and the subclass's ``noise_variance``).

    Args:
        data_spec: the data description; must be ``dequantized``.
        latent_dim: ``K``, ``1 <= K < P`` (``sigma^2`` needs a discarded direction).
        min_variance: floor of the noise variances (``> 0``, squared data units).

    Raises:
        ConfigError: for ``K`` outside ``[1, P)`` or a non-positive ``min_variance``.
    """

    density: ClassVar[bool] = True
    nll_kind = "exact"
    capabilities = frozenset({"log_prob", "sample", "encode", "decode", "reconstruct", "components", "fit"})

    def __init__(self, data_spec: Spec, latent_dim: int, min_variance: float) -> None:
        super().__init__(data_spec, latent_dim, strict=True)
        self.min_variance = positive("model.min_variance", min_variance)
        self.register_buffer("loadings", torch.zeros(self.num_features, latent_dim, dtype=torch.float64))

    def noise_diag(self) -> torch.Tensor:
        """The diagonal of ``Psi``: ``(P,)`` (PPCA's one ``sigma^2``, repeated)."""
        return self.noise_variance.expand(self.num_features)

    def num_parameters(self) -> int:
        """Free parameters: ``P K - K (K - 1) / 2`` for ``W`` (up to rotation), ``P`` for ``mu`` and one per
        noise variance (PPCA 1, factor analysis ``P``)."""
        p, k = self.num_features, self.latent_dim
        return p * k - k * (k - 1) // 2 + p + self.noise_variance.numel()

    def factors(self) -> LowRankFactors:
        """:class:`LowRankFactors` of the current parameters."""
        return LowRankFactors(self.loadings, self.noise_diag())

    def covariance(self) -> torch.Tensor:
        """The dense marginal covariance ``W W^T + Psi``: ``(P, P)`` float64 (for inspection and tests)."""
        return self.loadings @ self.loadings.T + torch.diag(self.noise_diag())

    def ppca_solution(self, stats: Stats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Set ``mean`` and ``loadings`` to the PPCA maximum-likelihood solution (Tipping & Bishop 1999,
        Eqs. 7-8) of the pass's moments: ``W = U_K (Lambda_K - sigma^2)^{1/2}``, ``sigma^2`` the mean
        discarded eigenvalue, ``(tr S - sum_{j <= K} lambda_j) / (P - K)`` (floored at ``min_variance``).

        Returns:
            ``(S, the top K eigenvalues of S descending, sigma^2)``, ``S`` ``(P, P)`` the ML covariance
            (denominator ``n``).

        Raises:
            ConfigError: if ``K >= n``.
        """
        check_examples(self.latent_dim, int(stats["n"]))
        mean, cov = mean_covariance(stats, ddof=0)
        values, vectors = eigen_descending(cov, self.latent_dim)
        rest = torch.diagonal(cov).sum() - values.sum()
        sigma2 = (rest / (self.num_features - self.latent_dim)).clamp(min=self.min_variance)
        self.mean.copy_(mean)
        self.loadings.copy_(vectors * (values - sigma2).clamp(min=0).sqrt())
        return cov, values, sigma2

    # --- the protocol ------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``(B, *shape) -> (B,)`` nats, in ``x``'s dtype (float64 math)."""
        return self.factors().log_prob(self.features(x) - self.mean).to(result_dtype(x))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(z | x) = N(mean, cov)``: ``mean`` ``(B, K)``, ``cov`` ``(K, K)`` (the same for every x), float64."""
        f = self.factors()
        return f.posterior_mean(self.features(x) - self.mean), f.posterior_cov()

    def codes(self, d: torch.Tensor) -> torch.Tensor:
        """Posterior means ``E[z | x]`` of centred rows ``d = x - mu``: ``(B, P) -> (B, K)`` float64."""
        return self.factors().posterior_mean(d)

    def component_vectors(self) -> torch.Tensor:
        """The loadings as rows, ``W^T``: ``(K, P)`` float64 (row ``k``: the data direction of ``z_k``)."""
        return self.loadings.T

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``, ``x = W z + mu + Psi^{1/2} eps``: ``(n, *shape)`` float32."""
        z = torch.randn(n, self.latent_dim, dtype=torch.float64, device=self.mean.device)
        eps = torch.randn(n, self.num_features, dtype=torch.float64, device=self.mean.device) * self.noise_diag().sqrt()
        return (self.decode(z) + eps.view(n, *self.spec.shape)).to(torch.get_default_dtype())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_parameters": self.num_parameters()}
