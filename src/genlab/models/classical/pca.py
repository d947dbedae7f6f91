"""Principal component analysis from streamed moments (Pearson 1901; Hotelling 1933)."""

from __future__ import annotations

from typing import Any

import torch
from scipy.linalg import eigh

from genlab.checks import bounded_int
from genlab.errors import ConfigError
from genlab.models.base import Scores
from genlab.models.classical.fitting import FittedModel, Spec, Stats, gram, result_dtype


def moment_statistics(x: torch.Tensor) -> Stats:
    """Sufficient statistics of a Gaussian fit for one batch ``x`` ``(B, P)`` float64.

    Returns:
        ``{"n": (), "sum": (P,), "outer": (P, P)}``: the count, ``sum_i x_i`` and ``sum_i x_i x_i^T``.
    """
    return {"n": x.new_tensor(float(len(x))), "sum": x.sum(0), "outer": gram(x)}


def mean_covariance(stats: Stats, ddof: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(P,)`` and covariance ``(P, P)`` from :func:`moment_statistics` totals.

    ``cov = (sum x x^T - n mu mu^T) / (n - ddof)``: ``ddof=0`` is the maximum-likelihood estimate,
    ``ddof=1`` the unbiased one (what scikit-learn's ``PCA.explained_variance_`` uses).
    """
    n = stats["n"]
    mean = stats["sum"] / n
    cov = (stats["outer"] - n * torch.outer(mean, mean)) / (n - ddof)
    return mean, 0.5 * (cov + cov.T)


def eigen_descending(cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenpairs of a symmetric ``(P, P)`` matrix, eigenvalues descending.

    On the CPU for ``P >= 128`` and ``k <= P / 2``, LAPACK ``syevr`` computes only those (scipy; 1.6 times
    faster than all of them at ``P = 784, k = 50``); else ``torch.linalg.eigh``. Each eigenvector's sign
    is fixed so that its entry of largest magnitude is positive, which makes the result a deterministic
    function of ``cov``.

    Returns:
        ``(values (k,), vectors (P, k))`` with ``vectors[:, j]`` the ``j``-th unit eigenvector.
    """
    p = cov.shape[0]
    if cov.device.type == "cpu" and p >= 128 and 2 * k <= p:
        values, vectors = map(torch.from_numpy, eigh(cov.numpy(), subset_by_index=[p - k, p - 1], check_finite=False))
    else:
        values, vectors = torch.linalg.eigh(cov)
    values, vectors = values[-k:].flip(0), vectors[:, -k:].flip(1)
    pivots = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))  # never 0: the columns are unit vectors
    return values, vectors * pivots.sign()


def check_examples(latent_dim: int, n: int, strict: bool = True) -> None:
    """Raise a :class:`ConfigError` unless ``latent_dim < n`` (``<= n`` when not ``strict``) for ``n`` examples."""
    if latent_dim > n or (strict and latent_dim == n):
        bound = "<" if strict else "<="
        raise ConfigError(
            f"model.latent_dim={latent_dim} is too large for {n} training examples: it must be {bound} {n}"
        )


class LinearLatentModel(FittedModel):
    """Base of PCA, PPCA and factor analysis: ``K`` codes per example, decoded linearly by ``x = W z + mu``.

    Subclasses register ``W`` ``(P, K)`` (PCA's ``components``, the others' ``loadings``) and give
    ``component_vectors()`` (``W^T``, ``(K, P)``) and ``codes(d)``, the codes of centred rows ``d = x - mu``
    (``(B, P) -> (B, K)`` float64); the pass adds :func:`moment_statistics` unless a subclass overrides
    :meth:`pass_statistics`.

    * ``encode(x) = codes(x - mu)`` ``(B, K)``; ``decode(z) = W z + mu``; ``reconstruct(x) = W encode(x) + mu``.

    Buffers: ``mean`` ``mu`` ``(P,)`` float64.

    Args:
        data_spec: the data description; ``P = spec.num_dims`` features.
        latent_dim: ``K``, ``1 <= K <= P`` (``K < P`` when ``strict``).
        strict: whether ``K = P`` is refused.

    Raises:
        ConfigError: for ``K`` outside those bounds.
    """

    def __init__(self, data_spec: Spec, latent_dim: int, strict: bool) -> None:
        super().__init__(data_spec)
        self.latent_dim = bounded_int("model.latent_dim", latent_dim, self.num_features, "features", strict=strict)
        self.register_buffer("mean", torch.zeros(self.num_features, dtype=torch.float64))

    def pass_statistics(self, batch: Stats) -> Stats:
        return moment_statistics(batch["x"])

    # --- the protocol ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``codes(x - mu)``: ``(B, *shape) -> (B, K)`` in ``x``'s dtype."""
        return self.codes(self.features(x) - self.mean).to(result_dtype(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``W z + mu``: codes ``(B, K) -> (B, *shape)`` in ``z``'s dtype. Raises: DataError for a malformed ``z``."""
        codes = self.features(z, self.latent_dim)
        return (codes @ self.component_vectors() + self.mean).to(result_dtype(z)).view(len(z), *self.spec.shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``W codes(x - mu) + mu``: like ``x``."""
        z = self.codes(self.features(x) - self.mean)
        return (z @ self.component_vectors() + self.mean).to(result_dtype(x)).view_as(x)


class PCA(LinearLatentModel):
    """Rank-``K`` principal component analysis fitted in one streamed pass.

    Each batch adds ``n``, ``sum x`` and ``sum x x^T`` (float64); after the pass (all-reduced under
    DDP) the unbiased covariance ``S`` (``n - 1``) is eigendecomposed and the top ``K`` eigenvectors
    become the components. No likelihood (``nll_kind = "none"``): use ``ppca`` for a density.

    * ``encode(x) = W^T (x - mu)``: ``(B, K)`` principal scores; ``decode(z) = W z + mu``.
    * ``reconstruct(x) = W W^T (x - mu) + mu``: the orthogonal projection onto the principal subspace.
    * ``component_vectors()``: ``W^T`` ``(K, P)``, the principal directions as rows.
    * ``val/loss``: squared reconstruction error summed over the ``P`` features, per example.

    Buffers: ``mean`` ``(P,)``, ``components`` ``W`` ``(P, K)`` with orthonormal columns ordered by
    eigenvalue (sign: largest-magnitude entry positive), ``explained_variance`` ``(K,)`` (eigenvalues of
    ``S``), ``explained_variance_ratio`` ``(K,)`` (over the trace of ``S``). All float64.

    Args:
        data_spec: the data description; any kind (``P = spec.num_dims``).
        latent_dim: ``K``, the number of components, ``1 <= K <= P`` and ``K <= n``.

    Raises:
        ConfigError: for ``K`` outside ``[1, P]`` (at construction) or larger than the number of
            training examples (at the end of the pass).
        DataError: for NaN/inf input, a malformed or empty batch.
    """

    nll_kind = "none"
    capabilities = frozenset({"encode", "decode", "reconstruct", "components", "fit"})

    def __init__(self, data_spec: Spec, latent_dim: int = 16) -> None:
        super().__init__(data_spec, latent_dim, strict=False)
        self.save_model_hparams()
        self.register_buffer("components", torch.eye(self.num_features, latent_dim, dtype=torch.float64))
        self.register_buffer("explained_variance", torch.zeros(latent_dim, dtype=torch.float64))
        self.register_buffer("explained_variance_ratio", torch.zeros(latent_dim, dtype=torch.float64))

    def update(self, stats: Stats) -> tuple[bool, dict[str, float]]:
        """Eigendecompose the covariance of the pass; always converged (closed form)."""
        check_examples(self.latent_dim, int(stats["n"]), strict=False)
        if stats["n"] < 2:
            raise ConfigError("PCA needs at least 2 training examples")
        mean, cov = mean_covariance(stats, ddof=1)
        values, vectors = eigen_descending(cov, self.latent_dim)
        self.mean.copy_(mean)
        self.components.copy_(vectors)
        self.explained_variance.copy_(values)
        total = torch.diagonal(cov).sum()
        self.explained_variance_ratio.copy_(values / total if total > 0 else torch.zeros_like(values))
        return True, {}

    # --- the protocol ------------------------------------------------------------------------
    def codes(self, d: torch.Tensor) -> torch.Tensor:
        """Principal scores ``W^T d`` of centred rows: ``(B, P) -> (B, K)`` float64."""
        return d @ self.components

    def component_vectors(self) -> torch.Tensor:
        """The principal directions as rows, ``W^T``: ``(K, P)`` float64, orthonormal."""
        return self.components.T

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str) -> Scores:
        """``loss``: the squared reconstruction error summed over the ``P`` features, ``(B,)``."""
        d = self.features(x) - self.mean
        residual = d - self.codes(d) @ self.components.T
        return {"loss": residual.pow(2).sum(1).to(result_dtype(x))}, None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "explained_variance_ratio": float(self.explained_variance_ratio.sum())}
