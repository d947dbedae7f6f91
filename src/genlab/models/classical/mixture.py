"""Gaussian mixture fitted by EM (Dempster, Laird & Rubin 1977), full / diagonal / spherical covariances."""

from __future__ import annotations

import math
from typing import Any

import torch

from genlab.checks import non_negative, one_of, positive_int
from genlab.errors import ConfigError
from genlab.models.classical.fitting import LOG_2PI, FittedModel, Spec, Stats, gram, result_dtype
from genlab.models.classical.kmeans import kmeans_plusplus, squared_distances

COVARIANCE_TYPES = ("full", "diag", "spherical")
# added to every component's responsibility mass so an empty component keeps finite parameters
EMPTY_MASS = 10 * torch.finfo(torch.float64).eps


class GaussianMixture(FittedModel):
    """Mixture of ``K`` Gaussians ``p(x) = sum_k pi_k N(x; mu_k, Sigma_k)``, fitted by EM, one pass per iteration.

    Covariances (``covariance_type``): ``full`` ``Sigma_k`` (``P x P``), ``diag`` (``P`` variances per
    component) or ``spherical`` (``sigma_k^2 I``). Densities are evaluated through the Cholesky factor
    ``Sigma_k = L_k L_k^T``: a triangular solve ``L_k^{-1} (x - mu_k)`` (half the work of a product with a
    dense precision factor) and ``log |Sigma_k| = 2 sum log diag L_k``; components are combined with
    log-sum-exp, so responsibilities and ``log p(x)`` never under- or overflow.

    Initialisation (before the first pass): greedy k-means++ centres (Arthur & Vassilvitskii 2007) on up
    to ``init_max_samples`` training examples (rank 0's under DDP, broadcast), then one hard
    assignment of those examples to their nearest centre gives the starting weights, means and
    covariances (the M-step with 0/1 responsibilities).

    Each pass is one EM iteration (Bishop 2006, Sec. 9.2.2). E-step under the current parameters:
    ``r_nk = p(k | x_n)``; the pass sums ``N_k = sum_n r_nk``, ``sum_n r_nk x_n``, then ``sum_n r_nk x_n x_n^T``
    (full), ``sum_n r_nk x_n^2`` per feature (diag) or ``sum_n r_nk ||x_n||^2`` (spherical), and
    ``sum_n log p(x_n)``. M-step:
    ``pi_k = N_k / n``, ``mu_k = sum r x / N_k``, ``Sigma_k = sum r x x^T / N_k - mu_k mu_k^T + reg_covar I``
    (spherical: the mean of the diagonal). ``N_k`` gets ``10 eps`` so an empty component stays finite.

    Convergence: ``|score_t - score_{t-1}| < tol``, where ``score_t`` is the average log-likelihood (nats per
    example) of the parameters pass ``t`` started from, as in scikit-learn's ``GaussianMixture``.

    Singular covariances: constant features (MNIST's border pixels) make ``Sigma_k`` singular;
    ``reg_covar`` is added to every diagonal to keep them positive definite. A covariance that is still
    not positive definite raises a :class:`ConfigError` asking for a larger ``reg_covar``.

    The protocol:

    * ``log_prob(x)``: exact ``log p(x)`` ``(B,)`` nats (density on ``R^P``); ``val/loss`` = ``val/nll_nats``.
    * ``encode(x)``: responsibilities ``p(k | x)`` ``(B, K)`` (soft cluster assignment); :meth:`assign`
      gives the most probable component ``(B,)``.
    * ``reconstruct(x)``: the mean of each example's most probable component.
    * ``sample(n)``: a component ``k ~ pi``, then ``x ~ N(mu_k, Sigma_k)``; values can leave ``[0, 1]``.
    * :meth:`bic`: Bayesian information criterion (Schwarz 1978).

    Buffers: ``weights`` ``(K,)``, ``means`` ``(K, P)``, ``covariances_cholesky`` (full: ``(K, P, P)`` lower
    triangular ``L_k``; diag ``(K, P)`` and spherical ``(K,)``: standard deviations), ``initialized``, all
    float64; :attr:`covariances` is derived from them.

    Args:
        data_spec: the data description; must be ``dequantized`` (see ``FittedModel.density``).
        num_mixtures: ``K >= 1`` components (at most the number of distinct training examples).
        covariance_type: ``full``, ``diag`` or ``spherical``.
        reg_covar: non-negative variance added to every covariance diagonal (squared data units).
        tol: convergence tolerance in nats per example (``>= 0``).
        seed: seed of the k-means++ draws.
        init_max_samples: most examples used for the initialisation.

    Raises:
        ConfigError: for data that are not dequantized, an unknown ``covariance_type``, non-positive
            sizes, negative ``reg_covar``/``tol``, more components than distinct examples, or a
            covariance that is not positive definite.
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    density = seeded = True
    nll_kind = "exact"
    capabilities = frozenset({"log_prob", "sample", "encode", "reconstruct", "assign", "fit"})

    def __init__(
        self,
        data_spec: Spec,
        num_mixtures: int = 10,
        covariance_type: str = "full",
        reg_covar: float = 1e-6,
        tol: float = 1e-3,
        seed: int = 0,
        init_max_samples: int = 20000,
    ) -> None:
        super().__init__(data_spec)
        self.covariance_type = one_of("model.covariance_type", covariance_type, COVARIANCE_TYPES)
        self.num_mixtures = positive_int("model.num_mixtures", num_mixtures)
        self.init_max_samples = positive_int("model.init_max_samples", init_max_samples)
        self.reg_covar, self.tol = non_negative("model.reg_covar", reg_covar), non_negative("model.tol", tol)
        self.seed = seed
        self.save_model_hparams()
        k, p, f64 = self.num_mixtures, self.num_features, torch.float64
        self.register_buffer("weights", torch.full((k,), 1.0 / k, dtype=f64))
        self.register_buffer("means", torch.zeros(k, p, dtype=f64))
        ones = torch.ones((k,) if covariance_type == "spherical" else (k, p), dtype=f64)  # unit standard deviations
        self.register_buffer("covariances_cholesky", ones.diag_embed() if covariance_type == "full" else ones)

    # --- parameters --------------------------------------------------------------------------
    @property
    def covariances(self) -> torch.Tensor:
        """``Sigma_k``: full ``(K, P, P)``, diag ``(K, P)`` (variances), spherical ``(K,)``; float64."""
        c = self.covariances_cholesky
        return c @ c.mT if self.covariance_type == "full" else c.pow(2)

    @property
    def precisions(self) -> torch.Tensor:
        """``Sigma_k^{-1}`` (symmetric), shaped as :attr:`covariances`; float64."""
        c = self.covariances_cholesky
        if self.covariance_type != "full":
            return c.pow(-2)
        prec = torch.cholesky_inverse(c)
        return 0.5 * (prec + prec.mT)

    def num_parameters(self) -> int:
        """Free parameters: ``K P`` means, ``K - 1`` weights, and ``K P (P + 1) / 2`` (full), ``K P`` (diag)
        or ``K`` (spherical) covariance entries."""
        k, p = self.num_mixtures, self.num_features
        cov = {"full": k * p * (p + 1) // 2, "diag": k * p, "spherical": k}[self.covariance_type]
        return cov + k * p + k - 1

    @torch.no_grad()
    def set_parameters(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor) -> None:
        """Start from (or load) given parameters: weights ``(K,)``, means ``(K, P)``, covariances shaped as
        :attr:`covariances`. Marks the model initialised, so fitting continues EM from here.

        Raises:
            ConfigError: for wrong shapes or a covariance that is not positive definite.
        """
        weights, means, covariances = (torch.as_tensor(t, dtype=torch.float64) for t in (weights, means, covariances))
        expected = (self.weights.shape, self.means.shape, self.covariances_cholesky.shape)
        if (got := (weights.shape, means.shape, covariances.shape)) != expected:
            raise ConfigError(f"parameter shapes {got}; expected {expected}")
        self._store(weights, means, covariances.to(self.means.device))
        self.initialized.fill_(1)

    def _store(self, weights: torch.Tensor, means: torch.Tensor, cov: torch.Tensor) -> None:
        """Set the parameters, the covariances through their Cholesky factors (or standard deviations).

        Raises:
            ConfigError: for a covariance that is not positive definite.
        """
        if self.covariance_type == "full":
            chol, failed = torch.linalg.cholesky_ex(cov)  # failed: (K,) int, > 0 where not positive definite
        else:
            chol = cov.clamp(min=0).sqrt()
            failed = (chol.reshape(len(chol), -1) <= 0).any(1)
        if bad := failed.nonzero().flatten().tolist():
            raise ConfigError(
                f"the covariance of mixture component(s) {bad} is singular (constant or collinear features); "
                f"increase model.reg_covar (now {self.reg_covar})"
            )
        self.covariances_cholesky.copy_(chol)
        self.weights.copy_(weights)
        self.means.copy_(means)

    # --- densities ---------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> Stats:
        if self.covariance_type == "full":
            return {"x": x}
        return {"x": x, "x2": x.pow(2)} if self.covariance_type == "diag" else {"x": x, "sq_norm": x.pow(2).sum(1)}

    def component_log_prob(self, batch: Stats) -> torch.Tensor:
        """``log N(x_n; mu_k, Sigma_k)`` for a prepared batch (:meth:`prepare`): ``(B, K)`` nats."""
        x, c, mu = batch["x"], self.covariances_cholesky, self.means
        p = x.shape[1]
        if self.covariance_type == "full":
            quad = x.new_empty(len(x), self.num_mixtures)
            for k in range(self.num_mixtures):
                y = torch.linalg.solve_triangular(c[k], x.T, upper=False)  # L_k^{-1} x: (P, B)
                y -= torch.linalg.solve_triangular(c[k], mu[k, :, None], upper=False)
                quad[:, k] = y.square_().sum(0)
            half_logdet = c.diagonal(dim1=1, dim2=2).log().sum(1)
        elif self.covariance_type == "diag":
            prec = c.pow(-2)  # contiguous (P, K) right-hand sides: the products are memory-bound
            quad = batch["x2"] @ prec.T.contiguous() - 2 * (x @ (mu * prec).T.contiguous()) + (mu.pow(2) * prec).sum(1)
            half_logdet = c.log().sum(1)
        else:
            quad = (batch["sq_norm"][:, None] - 2 * x @ mu.T.contiguous() + mu.pow(2).sum(1)) * c.pow(-2)
            half_logdet = p * c.log()
        return -0.5 * (p * LOG_2PI + quad.clamp(min=0)) - half_logdet

    def _joint_of(self, x: torch.Tensor) -> torch.Tensor:
        """``log pi_k + log N(x_n; mu_k, Sigma_k)``: ``(B, *shape) -> (B, K)``."""
        return self.component_log_prob(self.prepare(self.features(x))) + self.weights.log()

    # --- fitting -----------------------------------------------------------------------------
    def initialize(self, x: torch.Tensor) -> None:
        """k-means++ centres from ``x`` ``(N, P)``, then the M-step of the hard assignment to them."""
        labels = squared_distances(x, kmeans_plusplus(x, self.num_mixtures, self.seed)).argmin(1)  # nearest centres
        resp = torch.nn.functional.one_hot(labels, self.num_mixtures).to(x.dtype)
        self._m_step(self._sums(self.prepare(x), resp))
        self.initialized.fill_(1)

    def _sums(self, batch: Stats, resp: torch.Tensor) -> Stats:
        x = batch["x"]
        resp_t = resp.T.contiguous()  # (K, B): a contiguous left factor is faster for these skinny products
        out = {"n": x.new_tensor(float(len(x))), "nk": resp.sum(0), "rx": resp_t @ x}
        if self.covariance_type == "full":
            root = resp.sqrt()  # sum_n r x x^T = a^T a with a = sqrt(r) x: a symmetric product
            out["rxx"] = torch.stack([gram(x * root[:, k : k + 1]) for k in range(self.num_mixtures)])
        else:  # diag: sum_n r x_n^2 per feature; spherical: sum_n r ||x_n||^2
            out["rx2"] = resp_t @ batch["x2" if self.covariance_type == "diag" else "sq_norm"]
        return out

    def _m_step(self, s: Stats) -> None:
        nk = s["nk"] + EMPTY_MASS
        means = s["rx"] / nk[:, None]
        if self.covariance_type == "full":
            cov = s["rxx"] / nk[:, None, None] - means[:, :, None] * means[:, None, :]
            cov = 0.5 * (cov + cov.mT)
            cov.diagonal(dim1=1, dim2=2).add_(self.reg_covar)
        elif self.covariance_type == "diag":
            cov = s["rx2"] / nk[:, None] - means.pow(2) + self.reg_covar
        else:  # the mean of the diagonal variances
            cov = (s["rx2"] / nk - means.pow(2).sum(1)) / self.num_features + self.reg_covar
        self._store(nk / s["n"], means, cov)

    def pass_statistics(self, batch: Stats) -> Stats:
        joint = self.component_log_prob(batch) + self.weights.log()  # log pi_k + log N(x_n; mu_k, Sigma_k)
        top = joint.amax(1, keepdim=True)
        # log-sum-exp with one exp. exp below about -708 (a subnormal or 0) takes a slow path, some 60 times
        # slower, and subnormal responsibilities make the products of the sums slow too: the arguments are
        # clamped at -700 and ratios under 1e-300 set to 0 (responsibilities no float64 sum can see)
        ratio = torch.nn.functional.threshold_((joint - top).clamp_(min=-700).exp_(), 1e-300, 0.0)
        total = ratio.sum(1, keepdim=True)
        out = self._sums(batch, ratio / total)
        out["log_lik"] = (top + total.log()).sum()
        return out

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """One M-step; converged when the average log-likelihood changed by less than ``tol``."""
        score = stats["log_lik"] / stats["n"]
        change = float(score - self.train_log_lik)
        self._m_step(stats)
        self.train_log_lik.copy_(score)
        return abs(change) < self.tol, {"nll_nats": -float(score)}

    # --- the protocol ------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``(B, *shape) -> (B,)`` nats, in ``x``'s dtype (float64 math)."""
        return torch.logsumexp(self._joint_of(x), 1).to(result_dtype(x))

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``p(k | x)``: ``(B, *shape) -> (B, K)`` float64, rows sum to 1."""
        return torch.softmax(self._joint_of(x), 1)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable component: ``(B,)`` int64."""
        return self._joint_of(x).argmax(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Responsibilities ``p(k | x)``: ``(B, K)`` in ``x``'s dtype."""
        return self.responsibilities(x).to(result_dtype(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of each example's most probable component: like ``x``."""
        return self.means[self.assign(x)].to(result_dtype(x)).view_as(x)

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``k ~ Categorical(pi)``, ``x ~ N(mu_k, Sigma_k)``: ``(n, *shape)`` float32."""
        comp = torch.multinomial(self.weights, n, replacement=True)
        eps = torch.randn(n, self.num_features, dtype=torch.float64, device=self.means.device)
        c = self.covariances_cholesky
        if self.covariance_type == "full":  # x = mu_k + L_k eps has covariance L_k L_k^T
            for k in comp.unique().tolist():
                eps[comp == k] = eps[comp == k] @ c[k].T
        else:  # standard deviations: (n, P) diag, (n, 1) spherical
            eps = eps * c[comp].reshape(n, -1)
        return (eps + self.means[comp]).to(torch.get_default_dtype()).view(n, *self.spec.shape)

    def bic(self, x: torch.Tensor) -> float:
        """Bayesian information criterion on ``x`` ``(N, *shape)``: ``-2 sum log p(x) + num_parameters ln N``
        (lower is better)."""
        return -2 * float(torch.logsumexp(self._joint_of(x), 1).sum()) + self.num_parameters() * math.log(len(x))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_parameters": self.num_parameters(), "covariance_type": self.covariance_type}
