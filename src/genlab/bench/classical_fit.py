"""Fit time of the classical models against scikit-learn on the same data, in the same process.

Data: the MNIST subset (8,000 x 784, ``genlab.bench.data.mnist_root``) when available, and
scikit-learn's digits (1,797 x 64), both dequantized with one seeded draw and handed to both sides
as the same float64 matrix (a C-contiguous numpy array and the torch tensor sharing its memory).

What is timed: the statistics and the solve only. Ours: ``fit_tensor`` on the prepared float64 tensor
(the pass functions the LightningModule runs each epoch, on the whole matrix at once, no Trainer),
on a model built (and, for the mixtures and k-means, initialised) before the clock starts.
scikit-learn: ``fit`` on the same array, of an estimator built (and initialised) before the clock
starts. The contenders are interleaved (ours, then scikit-learn's, ``repeats`` times) and each keeps
its fastest time, so a busy shared machine slows both alike. Both run on one thread (torch intra-op
threads and, through ``threadpoolctl``, numpy's BLAS and OpenMP): with two libraries alternating in
one process on a few shared cores, the idle threads of one spin-wait while the other computes.

Matched settings and the equal-quality check, per fit (a mismatch raises ``AssertionError``):

* ``pca``: the same ``K``, against scikit-learn's ``svd_solver="covariance_eigh"`` (what its ``auto``
  picks for tall data: ``X^T X`` of the centred data, then ``eigh``) and ``svd_solver="full"`` (LAPACK
  SVD of the centred data); equal explained variance (ratio within ``1e-6``).
* ``ppca``: ours against ``PCA(svd_solver="covariance_eigh").fit``, whose ``score`` is the same model;
  equal log-likelihood (within ``1e-3`` nats per example; ours uses the ``n`` covariance, it ``n - 1``).
* ``factor_analysis``: the same ``K`` and tolerance (ours ``tol`` nats per example, scikit-learn's
  ``tol * n`` on the total), against ``svd_method="randomized"`` (its default) and ``"lapack"``; the
  log-likelihood equals the lapack fit's (``1e-3``) and is at least the randomized fit's (which stops
  earlier, at a lower one).
* ``gmm_full`` / ``gmm_diag``: the same ``K``, ``tol``, ``reg_covar``, iteration cap and starting point
  (our k-means++ initialisation, given to scikit-learn as ``weights_init``/``means_init``/
  ``precisions_init`` and set before the clock, the timed ``fit`` continuing from them by ``warm_start``), so
  both run the same EM iterations; equal iteration count and log-likelihood (``1e-3``).
* ``kmeans``: Lloyd's algorithm (``algorithm="lloyd"``) from the same k-means++ centres
  (``init=centres, n_init=1``), the same ``tol`` and cap; equal inertia of the final centres
  (relative ``1e-9``).

Reported per fit and dataset: seconds of each, ``ratio`` (scikit-learn's seconds over ours: above 1
we are faster), scikit-learn's solver, iterations and the quality numbers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genlab.bench.data import mnist_root
from genlab.data.digits import DigitsDataModule
from genlab.data.vision import MNISTDataModule
from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture, KMeans

Contender = tuple[Callable[[], Any], Callable[[Any], Any]]  # (build, untimed; fit, timed)


def race(contenders: dict[str, Contender], repeats: int) -> dict[str, tuple[float, Any]]:
    """``{name: (fastest seconds, a fitted object)}``: every contender built, then fitted and timed, in
    turn, ``repeats`` rounds."""
    out: dict[str, tuple[float, Any]] = {}
    for _ in range(repeats):
        for name, (build, fit) in contenders.items():
            obj = build()
            start = time.perf_counter()
            fit(obj)
            seconds = time.perf_counter() - start
            out[name] = (min(seconds, out.get(name, (float("inf"),))[0]), obj)
    return out


def _times(res: dict[str, tuple[float, Any]], ours: str = "ours") -> dict[str, Any]:
    t = res[ours][0]
    row: dict[str, Any] = {"seconds": round(t, 4)}
    for name, (s, _) in res.items():
        if name != ours:
            row[f"{name}_seconds"] = round(s, 4)
            row[f"{name}_ratio"] = round(s / t, 3)
    return row


def _near(a: float, b: float, tol: float, what: str) -> None:
    assert abs(a - b) <= tol, f"{what}: ours {a} vs scikit-learn {b} (tolerance {tol})"


def _bench_dataset(x: np.ndarray, spec: dict, k_pca: int, k_fa: int, k_mix: int, full_iter: int, repeats: int):
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

    xt = torch.from_numpy(x)  # the same float64 memory for both sides
    n = len(x)
    out: dict[str, Any] = {}

    res = race(
        {
            "ours": (lambda: PCA(spec, k_pca), lambda m: m.fit_tensor(xt)),
            "sklearn_covariance_eigh": (lambda: SkPCA(k_pca, svd_solver="covariance_eigh"), lambda m: m.fit(x)),
            "sklearn_full": (lambda: SkPCA(k_pca, svd_solver="full"), lambda m: m.fit(x)),
        },
        repeats,
    )
    ours_evr = float(res["ours"][1].explained_variance_ratio.sum())
    for name in ("sklearn_covariance_eigh", "sklearn_full"):
        _near(ours_evr, float(res[name][1].explained_variance_ratio_.sum()), 1e-6, f"pca explained variance ({name})")
    out["pca"] = {
        **_times(res), "latent_dim": k_pca, "explained_variance_ratio": round(ours_evr, 6),
        "sklearn_explained_variance_ratio": round(float(res["sklearn_full"][1].explained_variance_ratio_.sum()), 6),
    }  # fmt: skip

    res = race(
        {
            "ours": (lambda: PPCA(spec, k_pca), lambda m: m.fit_tensor(xt)),
            "sklearn": (lambda: SkPCA(k_pca, svd_solver="covariance_eigh"), lambda m: m.fit(x)),
        },
        repeats,
    )
    ll, ref_ll = float(res["ours"][1].log_prob(xt).mean()), float(res["sklearn"][1].score(x))
    _near(ll, ref_ll, 1e-3, "ppca log-likelihood")
    out["ppca"] = {
        **_times(res), "sklearn_solver": "PCA(svd_solver='covariance_eigh').score", "latent_dim": k_pca,
        "loglik": round(ll, 4), "sklearn_loglik": round(ref_ll, 4),
    }  # fmt: skip

    tol = 1e-5

    def sk_fa(method: str) -> Contender:
        build = lambda: SkFactorAnalysis(k_fa, tol=tol * n, svd_method=method, max_iter=1000, random_state=0)  # noqa: E731
        return build, lambda m: m.fit(x)

    res = race(
        {
            "ours": (lambda: FactorAnalysis(spec, k_fa, tol=tol), lambda m: m.fit_tensor(xt, max_iter=1000)),
            "sklearn_randomized": sk_fa("randomized"),
            "sklearn_lapack": sk_fa("lapack"),
        },
        repeats,
    )
    ll = float(res["ours"][1].log_prob(xt).mean())
    lls = {name: float(res[name][1].score(x)) for name in ("sklearn_randomized", "sklearn_lapack")}
    _near(ll, lls["sklearn_lapack"], 1e-3, "factor analysis log-likelihood (lapack)")
    assert ll >= lls["sklearn_randomized"] - 1e-3, f"factor analysis: ours {ll} below randomized {lls}"
    out["factor_analysis"] = {
        **_times(res), "latent_dim": k_fa, "tol_nats_per_example": tol, "iterations": int(res["ours"][1].n_iter),
        "loglik": round(ll, 4),
        **{f"{name}_iterations": int(res[name][1].n_iter_) for name in lls},
        **{f"{name}_loglik": round(v, 4) for name, v in lls.items()},
    }  # fmt: skip

    for ct, max_iter in (("full", full_iter), ("diag", 100)):
        out[f"gmm_{ct}"] = _bench_gmm(x, xt, spec, k_mix, ct, max_iter, repeats)
    out["kmeans"] = _bench_kmeans(x, xt, spec, k_mix, repeats)
    return out


def _bench_gmm(x: np.ndarray, xt: torch.Tensor, spec: dict, k: int, ct: str, max_iter: int, repeats: int) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    start = GaussianMixture(spec, k, ct, tol=1e-3)
    start.initialize(start.features(xt))  # our k-means++ start, outside the clock; scikit-learn starts there too
    params = (start.weights.clone(), start.means.clone(), start.covariances.clone())
    sk_start = SkGaussianMixture(
        k, covariance_type=ct, tol=1e-3, reg_covar=1e-6, max_iter=max_iter, warm_start=True,
        weights_init=start.weights.numpy(), means_init=start.means.numpy(), precisions_init=start.precisions.numpy(),
    )  # fmt: skip
    # what its fit does first with these inits, minus the M-step of a random start that they then replace
    # (private API): the timed fits continue from here (warm_start), EM only
    sk_start._initialize(x, None)
    sk_start.converged_, sk_start.lower_bound_ = False, -np.inf

    def ours_build() -> GaussianMixture:
        m = GaussianMixture(spec, k, ct, tol=1e-3)
        m.set_parameters(*params)
        return m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = race(
            {
                "ours": (ours_build, lambda m: m.fit_tensor(xt, max_iter)),
                "sklearn": (lambda: copy.deepcopy(sk_start), lambda m: m.fit(x)),
            },
            repeats,
        )
    ours, ref = res["ours"][1], res["sklearn"][1]
    ll, ref_ll = float(ours.log_prob(xt).mean()), float(ref.score(x))
    assert int(ours.n_iter) == ref.n_iter_, f"gmm_{ct}: {int(ours.n_iter)} iterations vs scikit-learn's {ref.n_iter_}"
    _near(ll, ref_ll, 1e-3, f"gmm_{ct} log-likelihood")
    return {
        **_times(res), "sklearn_solver": "EM from the same start (warm_start)", "num_mixtures": k,
        "max_iter": max_iter, "iterations": int(ours.n_iter), "sklearn_iterations": ref.n_iter_,
        "converged": bool(ours.converged), "sklearn_converged": bool(ref.converged_),
        "loglik": round(ll, 4), "sklearn_loglik": round(ref_ll, 4),
    }  # fmt: skip


def _bench_kmeans(x: np.ndarray, xt: torch.Tensor, spec: dict, k: int, repeats: int) -> dict:
    from sklearn.cluster import KMeans as SkKMeans

    tol, max_iter = 1e-4, 300
    start = KMeans(spec, k, tol=tol)
    start.initialize(start.features(xt))
    centers = start.centers.clone()

    def ours_build() -> KMeans:
        m = KMeans(spec, k, tol=tol)
        m.centers.copy_(centers)
        m.initialized.fill_(1)
        return m

    res = race(
        {
            "ours": (ours_build, lambda m: m.fit_tensor(xt, max_iter)),
            "sklearn": (
                lambda: SkKMeans(k, init=centers.numpy(), n_init=1, algorithm="lloyd", tol=tol, max_iter=max_iter),
                lambda m: m.fit(x),
            ),
        },
        repeats,
    )
    ours, ref = res["ours"][1], res["sklearn"][1]
    inertia = float(ours.score(xt, None, "train")[0]["loss"].sum())  # of the final centres, as scikit-learn's
    _near(inertia, float(ref.inertia_), 1e-9 * float(ref.inertia_), "kmeans inertia")
    return {
        **_times(res), "sklearn_solver": "lloyd from the same k-means++ centres", "num_clusters": k,
        "iterations": int(ours.n_iter), "sklearn_iterations": int(ref.n_iter_),
        "inertia": round(inertia, 4), "sklearn_inertia": round(float(ref.inertia_), 4),
    }  # fmt: skip


def _dequantized(dm) -> tuple[np.ndarray, dict]:
    dm.setup("fit")
    x = dm.represent(dm.splits["train"][0], generator=torch.Generator().manual_seed(0))
    return np.ascontiguousarray(x.flatten(1).double().numpy()), dm.spec.to_dict()


def run(quick: bool = False, threads: int = 1) -> dict:
    """Measure and return ``{"digits": {fit: {...}}, "mnist": {...}, ...}`` (see the module docstring)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            blas = sorted({f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()})
            return {"threads": {"torch": torch.get_num_threads(), "numpy_blas_openmp": blas}, **_run(quick)}
    finally:
        torch.set_num_threads(before)


def _run(quick: bool) -> dict:
    repeats = 1 if quick else 3
    results: dict[str, Any] = {
        "ours": "fit_tensor (the LightningModule's pass functions, whole matrix, no Trainer), float64",
        "ratio": "scikit-learn's seconds / ours (> 1: ours is faster)",
    }
    x, spec = _dequantized(DigitsDataModule(representation="dequantized", val_fraction=0.0, test_fraction=0.0))
    results["digits"] = {"shape": list(x.shape), **_bench_dataset(x, spec, 16, 10, 10, 100, repeats)}
    root = mnist_root()
    if root is not None and not quick:
        dm = MNISTDataModule(str(root), download=False, representation="dequantized", val_fraction=0.0)
        x, spec = _dequantized(dm)
        results["mnist"] = {"shape": list(x.shape), **_bench_dataset(x, spec, 50, 10, 10, 5, repeats)}
    return results
